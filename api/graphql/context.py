from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from api.audit.service import AuditEntry
from api.auth.principal import Principal
from api.cache import Cache
from api.db import Database
from api.settings import Settings
from api.wiring import Wiring

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
BatchFn = Callable[..., Awaitable[Sequence[Any]]]
# How `node`/`nodes` load one node type by primary keys (``SchemaParts.nodes``).
NodeLoader = Callable[["Context", Sequence[int]], Awaitable[Sequence[Any]]]


class Context:
    """Everything one request's resolvers share.

    DataLoaders are created on first use and live for this request only: their caches hold
    data scoped to this principal, so they must never outlive it.
    """

    def __init__(
        self,
        *,
        db: Database,
        cache: Cache,
        wiring: Wiring,
        nodes: Mapping[str, NodeLoader],
        principal: Principal,
        request_id: str,
        request: Any = None,
        response: Any = None,
    ) -> None:
        self.db = db
        self.cache = cache
        self.wiring = wiring
        self.nodes = nodes
        self.principal = principal
        self.request_id = request_id
        self.request = request
        self.response = response
        self._loaders: dict[tuple[Any, ...], DataLoader[Any, Any]] = {}
        # Written once at the end of the request (see api/graphql/audit.py).
        self.audit_entries: list[AuditEntry] = []
        # Mutations (by response key) whose audit entry was written with their change.
        self.audited: set[str] = set()

    @property
    def settings(self) -> Settings:
        return self.wiring.settings

    async def load_node(self, type_name: str, pk: int) -> Any:
        """One object of another domain's node type by primary key, scoped like ``node``
        (None when missing or not the caller's): how a domain's type links to another's
        without importing its schema module."""
        (found,) = await self.nodes[type_name](self, [pk])
        return found

    @property
    def ip(self) -> str | None:
        client = getattr(self.request, "client", None)
        return client.host if client else None

    def audit(self, entry: AuditEntry) -> None:
        self.audit_entries.append(entry)

    def reset_loaders(self) -> None:
        """Forget every loader's cache (a subscription's next message reads afresh)."""
        self._loaders.clear()

    def loader(self, batch: BatchFn, *params: Hashable) -> DataLoader[Any, Any]:
        """The request's DataLoader for ``batch(context, *params, keys)``.

        ``params`` tell loaders apart that batch differently (a nested connection's page
        arguments), so each distinct argument set is one query for all parents.
        """
        key = (batch, *params)
        loader = self._loaders.get(key)
        if loader is None:

            async def load(keys: list[Any]) -> Sequence[Any]:
                return await batch(self, *params, keys)

            loader = self._loaders[key] = DataLoader(load_fn=load)
        return loader


Info = StrawberryInfo[Context, None]
