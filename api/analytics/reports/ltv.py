"""LTV: customers acquired in a range and everything they bought so far, per group."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import ZERO, per, yuan
from api.analytics.arguments import DEFAULT_CURRENCY, check_currency, check_instants, raise_problems
from api.analytics.business_calendar import Period, period_start
from api.analytics.reports.counted import (
    Audience,
    acquired_orders,
    cents_sum,
    count_in,
    group_order,
)
from api.analytics.sql import dialect_of
from api.auth.principal import Principal


class LtvGroup(enum.Enum):
    COHORT_MONTH = "cohort_month"
    FIRST_CHANNEL = "first_channel"
    PARTNER = "partner"
    STORE = "store"
    GUIDE = "guide"
    LEVEL = "level"


@dataclass(frozen=True, slots=True)
class ValueRow:
    """Customers acquired in the range and everything they bought so far (in the currency).

    ``key`` is the group: a cohort month's first day (date), the first order's channel
    (SalesChannel), or a partner/store/guide/level id; None = customers without one.
    """

    key: Any
    customers: int
    orders: int
    revenue: Decimal
    gross_margin: Decimal

    @property
    def revenue_per_customer(self) -> Decimal | None:
        return per(self.revenue, self.customers)

    @property
    def gross_margin_per_customer(self) -> Decimal | None:
        return per(self.gross_margin, self.customers)


@dataclass(frozen=True, slots=True)
class LifetimeValue:
    group_by: LtvGroup
    currency: str
    rows: list[ValueRow]
    total: ValueRow


async def lifetime_value(
    session: AsyncSession,
    principal: Principal,
    *,
    group_by: LtvGroup,
    acquired_from: datetime,
    acquired_to: datetime,
    audience: Audience = Audience(),
    currency: str = DEFAULT_CURRENCY,
) -> LifetimeValue:
    """LTV (cumulative revenue and gross margin per customer) of the customers whose first
    counted order falls in [acquired_from, acquired_to), by cohort month, first channel,
    recruiting partner/store/guide or current level. Everything they bought up to now
    counts, on any channel. One statement."""
    raise_problems(
        check_instants(acquired_from, acquired_to, "acquiredFrom", "acquiredTo")
        + check_currency(currency)
    )
    dialect = dialect_of(session)
    counted = acquired_orders(
        principal, audience, dialect, acquired_from, acquired_to, Period.MONTH
    )
    first = (
        select(counted.c.customer_id, counted.c.period, counted.c.channel)
        .where(counted.c.seq == 1)
        .subquery("acquired")
    )
    keys: dict[LtvGroup, Any] = {
        LtvGroup.COHORT_MONTH: first.c.period,
        LtvGroup.FIRST_CHANNEL: first.c.channel,
        LtvGroup.PARTNER: counted.c.partner_id,
        LtvGroup.STORE: counted.c.store_id,
        LtvGroup.GUIDE: counted.c.guide_id,
        LtvGroup.LEVEL: counted.c.level_id,
    }
    key = keys[group_by].label("key")
    result = await session.execute(
        select(
            key,
            func.count(func.distinct(counted.c.customer_id)),
            count_in(counted.c.order_id, counted.c.currency, currency),
            cents_sum(counted.c.revenue, counted.c.currency, currency),
            cents_sum(counted.c.margin, counted.c.currency, currency),
        )
        .select_from(first)
        .join(counted, counted.c.customer_id == first.c.customer_id)
        .group_by(key)
    )
    rows = [
        ValueRow(
            period_start(k, Period.MONTH) if group_by is LtvGroup.COHORT_MONTH else k,
            customers,
            orders,
            yuan(revenue),
            yuan(margin),
        )
        for k, customers, orders, revenue, margin in result
    ]
    rows.sort(key=group_order)
    total = ValueRow(
        None,
        sum(r.customers for r in rows),
        sum(r.orders for r in rows),
        sum((r.revenue for r in rows), ZERO),
        sum((r.gross_margin for r in rows), ZERO),
    )
    return LifetimeValue(group_by, currency, rows, total)
