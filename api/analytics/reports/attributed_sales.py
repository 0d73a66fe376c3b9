"""Attributed sales (终身归属): counted orders per store, guide or partner they count for; and
the shopping guides the reports name."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import yuan
from api.analytics.arguments import DEFAULT_CURRENCY, check_currency, check_instants, raise_problems
from api.analytics.models import OrderAttribution
from api.analytics.reports.counted import group_order, order_amounts, owned_by
from api.auth.models import StaffUser
from api.auth.principal import Principal
from api.orders.models import COUNTED_STATUSES, Order


class AttributionGroup(enum.Enum):
    STORE = "store"
    GUIDE = "guide"
    PARTNER = "partner"


@dataclass(frozen=True, slots=True)
class AttributedRow:
    key: int | None  # the store, guide or partner; None: attributed to none
    orders: int
    customers: int
    revenue: Decimal
    gross_margin: Decimal


@dataclass(frozen=True, slots=True)
class AttributionFilter:
    partner_id: int | None = None
    store_id: int | None = None
    guide_id: int | None = None


async def attributed_sales(
    session: AsyncSession,
    principal: Principal,
    *,
    group_by: AttributionGroup,
    start: datetime,
    end: datetime,
    where: AttributionFilter = AttributionFilter(),
    currency: str = DEFAULT_CURRENCY,
) -> list[AttributedRow]:
    """Sales of the orders attributed (终身归属) to each store, guide or partner, placed in
    [start, end): counted orders only, their revenue and gross margin in ``currency``.
    A partner principal sees only the orders attributed to it. One statement."""
    raise_problems(check_instants(start, end, "from", "to") + check_currency(currency))
    revenue, margin, refunded_cost = order_amounts()
    columns = {
        AttributionGroup.STORE: OrderAttribution.store_id,
        AttributionGroup.GUIDE: OrderAttribution.guide_id,
        AttributionGroup.PARTNER: OrderAttribution.partner_id,
    }
    key = columns[group_by]
    stmt = (
        select(
            key,
            func.count(),
            func.count(func.distinct(OrderAttribution.customer_id)),
            func.sum(revenue),
            func.sum(margin),
        )
        .join(Order, Order.id == OrderAttribution.order_id)
        .outerjoin(refunded_cost, refunded_cost.c.order_id == Order.id)
        .where(
            Order.status.in_(COUNTED_STATUSES),
            Order.currency == currency,
            OrderAttribution.placed_at >= start,
            OrderAttribution.placed_at < end,
            owned_by(principal, OrderAttribution.partner_id, OrderAttribution.store_id),
        )
        .group_by(key)
    )
    for column, value in (
        (OrderAttribution.partner_id, where.partner_id),
        (OrderAttribution.store_id, where.store_id),
        (OrderAttribution.guide_id, where.guide_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    rows = [
        AttributedRow(k, orders, customers, yuan(revenue_), yuan(margin_))
        for k, orders, customers, revenue_, margin_ in await session.execute(stmt)
    ]
    rows.sort(key=group_order)
    return rows


async def guides_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StaffUser]:
    """Shopping guides (staff users) by id: HQ any, a partner its own staff."""
    if not ids:
        return {}
    rows = await session.scalars(
        select(StaffUser).where(
            StaffUser.id.in_(set(ids)),
            owned_by(principal, StaffUser.partner_id, StaffUser.store_id),
        )
    )
    return {row.id: row for row in rows}
