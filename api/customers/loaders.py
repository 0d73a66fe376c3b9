"""Batch loads of the customers domain. Each batch opens its own session: strawberry resolves
sibling fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from api.customers.lookup import consents_of, customers_by_id, identities_of, tags_of
from api.customers.models import (
    Customer,
    CustomerConsent,
    CustomerIdentity,
    MemberLevel,
    MemberLevelChange,
)
from api.graphql.context import Context
from api.pagination import Page, PageRequest, count_grouped, fetch_grouped_pages

LEVEL_HISTORY_KEYSET = (MemberLevelChange.id,)


async def customers_by_pk(ctx: Context, keys: Sequence[int]) -> list[Customer | None]:
    """Customers by id within the caller's scope; a merged id yields the survivor."""
    async with ctx.db.read() as session:
        found = await customers_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def identities_by_customer(ctx: Context, keys: Sequence[int]) -> list[list[CustomerIdentity]]:
    async with ctx.db.read() as session:
        found = await identities_of(session, keys)
    return [found[k] for k in keys]


async def consents_by_customer(ctx: Context, keys: Sequence[int]) -> list[list[CustomerConsent]]:
    async with ctx.db.read() as session:
        found = await consents_of(session, keys)
    return [found[k] for k in keys]


async def tags_by_customer(ctx: Context, keys: Sequence[int]) -> list[list[str]]:
    async with ctx.db.read() as session:
        found = await tags_of(session, keys)
    return [found[k] for k in keys]


async def levels_by_pk(ctx: Context, keys: Sequence[int]) -> list[MemberLevel | None]:
    """Level definitions are programme configuration, readable by every caller."""
    async with ctx.db.read() as session:
        rows = {
            lv.id: lv
            for lv in await session.scalars(select(MemberLevel).where(MemberLevel.id.in_(keys)))
        }
    return [rows.get(k) for k in keys]


async def level_history_pages(
    ctx: Context, request: PageRequest, keys: Sequence[int]
) -> list[Page[MemberLevelChange]]:
    """Each customer's level changes, newest first: one statement for all customers."""
    async with ctx.db.read() as session:
        pages = await fetch_grouped_pages(
            session,
            select(MemberLevelChange),
            MemberLevelChange,
            MemberLevelChange.customer_id,
            keys,
            LEVEL_HISTORY_KEYSET,
            request,
            reverse=True,
        )
    return [pages[k] for k in keys]


async def level_history_counts(ctx: Context, keys: Sequence[int]) -> list[int]:
    async with ctx.db.read() as session:
        counts = await count_grouped(
            session, select(MemberLevelChange), MemberLevelChange.customer_id, keys
        )
    return [counts[k] for k in keys]
