"""Relay: the Node interface, `node`/`nodes`, and keyset-cursor connections.

A list field is declared with ``connection(Connection[X], ...)``: the paging arguments
(``first``/``after``/``last``/``before``) are added to it and checked once here, and its
resolver returns only what to page — ``Rows`` (a root list: a select scoped to the caller,
its keyset, how to wrap a row) or ``Children`` (a nested list, batched across its parents by
a DataLoader). A list field is then its filter and its query, nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import strawberry
from sqlalchemy import Select
from strawberry.annotation import StrawberryAnnotation
from strawberry.extensions import FieldExtension
from strawberry.types.arguments import StrawberryArgument
from strawberry.types.field import StrawberryField

from api.errors import InputError
from api.graphql.context import BatchFn, Context, Info
from api.graphql.ids import decode_id
from api.graphql.permissions import Authenticated
from api.pagination import CountFn, Keyset, Page, PageRequest, count, fetch_page

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID


async def resolve_nodes(info: Info, ids: Sequence[strawberry.ID]) -> list[Node | None]:
    loaders = info.context.nodes
    decoded = []
    for global_id in ids:
        type_name, pk = decode_id(global_id)
        if type_name not in loaders:
            raise InputError(f"Invalid ID: {global_id!r}.")
        decoded.append((type_name, pk))
    by_type: dict[str, list[int]] = {}
    for type_name, pk in decoded:
        by_type.setdefault(type_name, []).append(pk)
    found: dict[tuple[str, int], Node | None] = {}
    for type_name, pks in by_type.items():
        nodes = await loaders[type_name](info.context, pks)
        found.update(zip(((type_name, pk) for pk in pks), nodes, strict=True))
    return [found[key] for key in decoded]


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    nodes: list[T]
    page_info: PageInfo
    count_fn: strawberry.Private[CountFn]

    @strawberry.field(description="Counted only when asked for: a separate COUNT query.")
    async def total_count(self) -> int:
        return await self.count_fn()


def _page_request(
    info: Info,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> PageRequest:
    settings = info.context.settings
    return PageRequest.of(
        first=first,
        after=after,
        last=last,
        before=before,
        cap=settings.page_cap,
        default=settings.default_page_size,
    )


def _to_connection(page: Page[Any], wrap: Callable[[Any], T], count_fn: CountFn) -> Connection[T]:
    nodes = [wrap(item) for item in page.items]
    return Connection(
        edges=[Edge(cursor=c, node=n) for c, n in zip(page.cursors, nodes, strict=True)],
        nodes=nodes,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
        ),
        count_fn=count_fn,
    )


class Listing(Protocol[T_co]):
    """What a connection field's resolver returns: how to fetch one page of it."""

    def page(self, context: Context, request: PageRequest) -> Awaitable[Connection[Any]]: ...


@dataclass(frozen=True, slots=True)
class Rows(Generic[T]):
    """A root list: ``stmt`` (already scoped to the caller) in ``keyset`` order, each row
    wrapped by ``wrap``: one page query, and a COUNT only when ``totalCount`` is asked."""

    stmt: Select[Any]
    keyset: Keyset
    wrap: Callable[[Any], T]
    reverse: bool = False

    async def page(self, context: Context, request: PageRequest) -> Connection[T]:
        stmt = self.stmt
        async with context.db.read() as session:
            page = await fetch_page(session, stmt, self.keyset, request, reverse=self.reverse)

        async def total() -> int:
            # In its own session: the page's is closed by the time totalCount resolves.
            async with context.db.read() as session:
                return await count(session, stmt)

        return _to_connection(page, self.wrap, total)


@dataclass(frozen=True, slots=True)
class Children(Generic[T]):
    """A nested list: ``parent``'s page, loaded for every parent in the response at once by
    ``pages(context, request, parent keys)`` (one statement whatever their number), counted
    by ``counts(context, parent keys)`` only when ``totalCount`` is asked."""

    pages: BatchFn
    counts: BatchFn
    parent: Hashable
    wrap: Callable[[Any], T]

    async def page(self, context: Context, request: PageRequest) -> Connection[T]:
        found = await context.loader(self.pages, request).load(self.parent)
        counts = context.loader(self.counts)
        parent = self.parent
        return _to_connection(found, self.wrap, lambda: counts.load(parent))


class Paged(FieldExtension):
    """Gives a field the paging arguments and pages what its resolver returns."""

    def apply(self, field: StrawberryField) -> None:
        annotation = field.type_annotation
        resolver = field.base_resolver
        if (
            annotation is not None
            and isinstance(annotation.raw_annotation, str)
            and annotation.namespace is None
            and resolver is not None
        ):
            # A type naming the one being defined (``"Connection[Partner]"`` on ``Partner``)
            # is a string, resolved like the resolver's own annotations: in its module.
            annotation.namespace = vars(sys.modules[resolver.wrapped_func.__module__])
        field.arguments = [
            *field.arguments,
            *(
                StrawberryArgument(
                    python_name=name,
                    graphql_name=None,
                    type_annotation=StrawberryAnnotation(kind | None),
                    default=None,
                )
                for name, kind in (("first", int), ("after", str), ("last", int), ("before", str))
            ),
        ]

    async def resolve_async(
        self,
        next_: Callable[..., Awaitable[Any]],
        source: Any,
        info: Info,
        *,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        **kwargs: Any,
    ) -> Connection[Any]:
        # The resolver first: its own refusals (a caller who may not list this) come before
        # a complaint about the paging arguments, as they did when each field checked both.
        listing: Listing[Any] = await next_(source, info, **kwargs)
        return await listing.page(info.context, _page_request(info, first, after, last, before))


def connection(
    graphql_type: Any,
    *,
    description: str | None = None,
    permission_classes: Sequence[type[Any]] = (),
) -> Any:
    """A connection field: ``@connection(Connection[Store], description=...)`` on an async
    resolver that returns a ``Listing`` (``Rows`` or ``Children``); on a type listing its own
    kind, name it as a string: ``@connection("Connection[Partner]")``."""
    return strawberry.field(
        graphql_type=graphql_type,
        description=description,
        permission_classes=list(permission_classes),
        extensions=[Paged()],
    )


@strawberry.type
class NodeQuery:
    @strawberry.field(
        description="Fetch any object by its ID; null when it does not exist or is not yours.",
        permission_classes=[Authenticated],
    )
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        return (await resolve_nodes(info, [id]))[0]

    @strawberry.field(
        description="Fetch objects by ID, in order; null for each that is missing or not yours.",
        permission_classes=[Authenticated],
    )
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        if len(ids) > info.context.settings.page_cap:
            raise InputError(f"At most {info.context.settings.page_cap} ids at once.")
        return await resolve_nodes(info, ids)
