"""Relay: the Node interface, `node`/`nodes`, and keyset-cursor connections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import strawberry
from sqlalchemy import Select

from api.errors import InputError
from api.graphql.context import Context, Info
from api.graphql.ids import decode_id
from api.graphql.permissions import Authenticated
from api.pagination import CountFn, Page, PageRequest, count, fetch_page

T = TypeVar("T")


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID


# How to load each node type by primary keys, for `node`/`nodes`. The loader must apply the
# principal's scope: an object the caller may not see then answers exactly like a missing one.
NodeLoader = Callable[[Context, Sequence[int]], Awaitable[Sequence[Node | None]]]


@dataclass(frozen=True, slots=True)
class NodeType:
    name: str
    load: NodeLoader


NODE_TYPES: dict[str, NodeType] = {}


def register_node(name: str, load: NodeLoader) -> None:
    NODE_TYPES[name] = NodeType(name, load)


async def resolve_nodes(info: Info, ids: Sequence[strawberry.ID]) -> list[Node | None]:
    decoded = []
    for global_id in ids:
        type_name, pk = decode_id(global_id)
        if type_name not in NODE_TYPES:
            raise InputError(f"Invalid ID: {global_id!r}.")
        decoded.append((type_name, pk))
    by_type: dict[str, list[int]] = {}
    for type_name, pk in decoded:
        by_type.setdefault(type_name, []).append(pk)
    found: dict[tuple[str, int], Node | None] = {}
    for type_name, pks in by_type.items():
        nodes = await NODE_TYPES[type_name].load(info.context, pks)
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


def page_request(
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


def to_connection(page: Page[Any], wrap: Callable[[Any], T], count_fn: CountFn) -> Connection[T]:
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


async def root_connection(
    ctx: Context,
    stmt: Select[Any],
    keyset: Sequence[Any],
    request: PageRequest,
    wrap: Callable[[Any], T],
    *,
    reverse: bool = False,
) -> Connection[T]:
    """A root connection over ``stmt`` (already scoped to the principal): one page query
    now, and a COUNT in its own session only if ``totalCount`` is asked for."""
    async with ctx.db.read() as session:
        page = await fetch_page(session, stmt, keyset, request, reverse=reverse)

    async def total() -> int:
        async with ctx.db.read() as session:
            return await count(session, stmt)

    return to_connection(page, wrap, total)


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
