"""Reading orders back: the orders a principal may see, and their lines, coupons and history
in one statement for many orders (what the loaders batch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog.models import SalesChannel
from api.orders.models import (
    Fulfillment,
    Order,
    OrderCoupon,
    OrderEvent,
    OrderLine,
    OrderStatus,
)

ORDER_KEYSET = (Order.id,)


@dataclass(slots=True)
class OrderFilter:
    statuses: Sequence[OrderStatus] = ()
    channels: Sequence[SalesChannel] = ()
    fulfillments: Sequence[Fulfillment] = ()
    store_ids: Sequence[int] = ()
    customer_ids: Sequence[int] = ()
    placed_from: datetime | None = None  # inclusive
    placed_to: datetime | None = None  # exclusive


def orders_query(principal: Principal, where: OrderFilter | None = None) -> Select[Any]:
    """Orders the principal may see: HQ all; a partner its stores' and its own; a store
    principal its store's; a member their own."""
    stmt = restrict(select(Order), Order, principal)
    if where is None:
        return stmt
    if where.statuses:
        stmt = stmt.where(Order.status.in_(where.statuses))
    if where.channels:
        stmt = stmt.where(Order.channel.in_(where.channels))
    if where.fulfillments:
        stmt = stmt.where(Order.fulfillment.in_(where.fulfillments))
    if where.store_ids:
        stmt = stmt.where(Order.store_id.in_(where.store_ids))
    if where.customer_ids:
        stmt = stmt.where(Order.customer_id.in_(where.customer_ids))
    if where.placed_from is not None:
        stmt = stmt.where(Order.placed_at >= where.placed_from)
    if where.placed_to is not None:
        stmt = stmt.where(Order.placed_at < where.placed_to)
    return stmt


async def orders_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Order]:
    if not ids:
        return {}
    rows = await session.scalars(orders_query(principal).where(Order.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def _children(
    session: AsyncSession, model: Any, order_ids: Sequence[int], *order_by: Any
) -> dict[int, list[Any]]:
    """Rows of ``model`` per order. The orders were read through the principal's scope, so
    their lines, coupons and history need none of their own."""
    found: dict[int, list[Any]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    rows = await session.scalars(
        select(model).where(model.order_id.in_(set(order_ids))).order_by(model.order_id, *order_by)
    )
    for row in rows:
        found[row.order_id].append(row)
    return found


async def lines_of(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, list[OrderLine]]:
    return await _children(session, OrderLine, order_ids, OrderLine.line_no)


async def coupons_of(
    session: AsyncSession, order_ids: Sequence[int]
) -> dict[int, list[OrderCoupon]]:
    return await _children(session, OrderCoupon, order_ids, OrderCoupon.coupon_id)


async def events_of(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, list[OrderEvent]]:
    return await _children(session, OrderEvent, order_ids, OrderEvent.id)
