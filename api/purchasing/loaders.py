"""Batch loads of purchasing. Each batch opens its own session: strawberry resolves sibling
fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from api.graphql.context import Context
from api.purchasing import pricing, service
from api.purchasing.models import (
    PriceBreak,
    PriceList,
    PriceListItem,
    PurchaseOrder,
    PurchaseOrderLine,
)


async def orders_by_pk(ctx: Context, keys: Sequence[int]) -> list[PurchaseOrder | None]:
    async with ctx.db.read() as session:
        found = await service.orders_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def lines_by_order(ctx: Context, keys: Sequence[int]) -> list[list[PurchaseOrderLine]]:
    async with ctx.db.read() as session:
        found = await service.lines_of(session, keys)
    return [found[k] for k in keys]


async def price_lists_by_pk(ctx: Context, keys: Sequence[int]) -> list[PriceList | None]:
    async with ctx.db.read() as session:
        found = await pricing.price_lists_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def items_by_list(
    ctx: Context, keys: Sequence[int]
) -> list[list[tuple[PriceListItem, list[PriceBreak]]]]:
    async with ctx.db.read() as session:
        found = await pricing.items_of(session, keys)
    return [found[k] for k in keys]
