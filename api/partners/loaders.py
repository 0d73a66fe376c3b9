"""Batch loads of this domain. Each batch opens its own session: strawberry resolves sibling
fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from api.graphql.context import Context
from api.pagination import Page, PageRequest, count_grouped, fetch_grouped_pages
from api.partners import service
from api.partners.models import Partner, Store


async def partners_by_pk(ctx: Context, keys: Sequence[int]) -> list[Partner | None]:
    async with ctx.db.read() as session:
        found = await service.partners_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def stores_by_pk(ctx: Context, keys: Sequence[int]) -> list[Store | None]:
    async with ctx.db.read() as session:
        found = await service.stores_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def territories_by_partner(ctx: Context, keys: Sequence[int]) -> list[list[str]]:
    async with ctx.db.read() as session:
        found = await service.territories_of(session, keys)
    return [found[k] for k in keys]


async def store_pages_by_partner(
    ctx: Context, request: PageRequest, keys: Sequence[int]
) -> list[Page[Store]]:
    async with ctx.db.read() as session:
        pages = await fetch_grouped_pages(
            session,
            service.stores_query(ctx.principal),
            Store,
            Store.partner_id,
            keys,
            service.STORE_KEYSET,
            request,
        )
    return [pages[k] for k in keys]


async def store_counts_by_partner(ctx: Context, keys: Sequence[int]) -> list[int]:
    async with ctx.db.read() as session:
        counts = await count_grouped(
            session, service.stores_query(ctx.principal), Store.partner_id, keys
        )
    return [counts[k] for k in keys]


async def child_pages_by_parent(
    ctx: Context, request: PageRequest, keys: Sequence[int]
) -> list[Page[Partner]]:
    async with ctx.db.read() as session:
        pages = await fetch_grouped_pages(
            session,
            service.partners_query(ctx.principal),
            Partner,
            Partner.parent_id,
            keys,
            service.PARTNER_KEYSETS[service.PartnerSortKey.ID],
            request,
        )
    return [pages[k] for k in keys]


async def child_counts_by_parent(ctx: Context, keys: Sequence[int]) -> list[int]:
    async with ctx.db.read() as session:
        counts = await count_grouped(
            session, service.partners_query(ctx.principal), Partner.parent_id, keys
        )
    return [counts[k] for k in keys]
