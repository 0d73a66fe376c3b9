"""Batch loads of the orders domain. Each batch opens its own session: strawberry resolves
sibling fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from api.graphql.context import Context
from api.orders import queries
from api.orders.models import Order, OrderCoupon, OrderEvent, OrderLine
from api.pagination import Page, PageRequest, count_grouped, fetch_grouped_pages
from api.partners.models import Store


async def orders_by_pk(ctx: Context, keys: Sequence[int]) -> list[Order | None]:
    """Orders by id within the caller's scope: another partner's answers like a missing one."""
    async with ctx.db.read() as session:
        found = await queries.orders_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def stores_by_pk(ctx: Context, keys: Sequence[int]) -> list[Store | None]:
    """The stores of orders the caller sees, unscoped: a member must see where to pick up
    (members see no stores otherwise), and a partner principal only sees orders at its own
    stores anyway."""
    async with ctx.db.read() as session:
        found = {s.id: s for s in await session.scalars(select(Store).where(Store.id.in_(keys)))}
    return [found.get(k) for k in keys]


async def lines_by_order(ctx: Context, keys: Sequence[int]) -> list[list[OrderLine]]:
    async with ctx.db.read() as session:
        found = await queries.lines_of(session, keys)
    return [found[k] for k in keys]


async def coupons_by_order(ctx: Context, keys: Sequence[int]) -> list[list[OrderCoupon]]:
    async with ctx.db.read() as session:
        found = await queries.coupons_of(session, keys)
    return [found[k] for k in keys]


async def events_by_order(ctx: Context, keys: Sequence[int]) -> list[list[OrderEvent]]:
    async with ctx.db.read() as session:
        found = await queries.events_of(session, keys)
    return [found[k] for k in keys]


async def order_pages_by_customer(
    ctx: Context, request: PageRequest, keys: Sequence[int]
) -> list[Page[Order]]:
    """Newest first: one ROW_NUMBER statement pages every customer of the request (served by
    the (customer_id, id) index)."""
    async with ctx.db.read() as session:
        pages = await fetch_grouped_pages(
            session,
            queries.orders_query(ctx.principal),
            Order,
            Order.customer_id,
            keys,
            queries.ORDER_KEYSET,
            request,
            reverse=True,
        )
    return [pages[k] for k in keys]


async def order_counts_by_customer(ctx: Context, keys: Sequence[int]) -> list[int]:
    async with ctx.db.read() as session:
        counts = await count_grouped(
            session, queries.orders_query(ctx.principal), Order.customer_id, keys
        )
    return [counts[k] for k in keys]
