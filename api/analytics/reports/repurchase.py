"""复购率: of the customers whose first counted order falls in a range, the share who came back
within a window."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import ratio
from api.analytics.arguments import AnalyticsErrorCode, check_instants, raise_problems
from api.analytics.business_calendar import DAY_SECONDS
from api.analytics.reports.counted import Audience, acquired_orders, group_order
from api.analytics.sql import dialect_of
from api.auth.principal import Principal
from api.errors import Problem

MAX_WITHIN_DAYS = 730


class RepurchaseGroup(enum.Enum):
    FIRST_CHANNEL = "first_channel"
    PARTNER = "partner"
    STORE = "store"
    LEVEL = "level"


@dataclass(frozen=True, slots=True)
class RepurchaseRow:
    key: Any
    buyers: int  # first counted order in the range
    repeaters: int  # ... and a second within the window
    open_windows: int  # buyers whose window had not closed at ``now``

    @property
    def rate(self) -> Decimal | None:
        return ratio(self.repeaters, self.buyers)


@dataclass(frozen=True, slots=True)
class Repurchase:
    within_days: int
    mature_only: bool
    group_by: RepurchaseGroup | None
    rows: list[RepurchaseRow]
    total: RepurchaseRow


async def repurchase_rate(
    session: AsyncSession,
    principal: Principal,
    *,
    first_order_from: datetime,
    first_order_to: datetime,
    now: datetime,
    within_days: int = 90,
    group_by: RepurchaseGroup | None = None,
    mature_only: bool = False,
    audience: Audience = Audience(),
) -> Repurchase:
    """复购率: of the buyers whose first counted order falls in the range, the share with a
    second counted order at most ``within_days`` days (to the second) after the first.

    A buyer whose window is still open at ``now`` counts as a buyer, and as a repeater only
    if the second order came already (``open_windows`` says how many such buyers a row
    has); ``mature_only`` leaves them out, so recent ranges do not understate the rate.
    One statement.
    """
    problems = check_instants(first_order_from, first_order_to, "firstOrderFrom", "firstOrderTo")
    if not 1 <= within_days <= MAX_WITHIN_DAYS:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"`withinDays` is between 1 and {MAX_WITHIN_DAYS}.",
                ("withinDays",),
            )
        )
    raise_problems(problems)
    dialect = dialect_of(session)
    counted = acquired_orders(principal, audience, dialect, first_order_from, first_order_to)
    first = counted.alias("first_order")
    second = counted.alias("second_order")
    window = within_days * DAY_SECONDS
    closed_by = now - timedelta(days=within_days)  # a first order before this: window closed
    keys: dict[RepurchaseGroup, Any] = {
        RepurchaseGroup.FIRST_CHANNEL: first.c.channel,
        RepurchaseGroup.PARTNER: first.c.partner_id,
        RepurchaseGroup.STORE: first.c.store_id,
        RepurchaseGroup.LEVEL: first.c.level_id,
    }
    key = keys[group_by] if group_by is not None else null()
    stmt = (
        select(
            key,
            func.count(),
            func.coalesce(
                func.sum(case((second.c.epoch - first.c.epoch <= window, 1), else_=0)), 0
            ),
            func.coalesce(func.sum(case((first.c.placed_at > closed_by, 1), else_=0)), 0),
        )
        .select_from(first)
        .outerjoin(second, and_(second.c.customer_id == first.c.customer_id, second.c.seq == 2))
        .where(first.c.seq == 1)
    )
    if group_by is not None:
        stmt = stmt.group_by(key)
    if mature_only:
        stmt = stmt.where(first.c.placed_at <= closed_by)
    rows = [
        RepurchaseRow(k, buyers, int(repeaters), int(open_windows))
        for k, buyers, repeaters, open_windows in await session.execute(stmt)
    ]
    rows.sort(key=group_order)
    total = RepurchaseRow(
        None,
        sum(r.buyers for r in rows),
        sum(r.repeaters for r in rows),
        sum(r.open_windows for r in rows),
    )
    return Repurchase(
        within_days, mature_only, group_by, rows if group_by is not None else [], total
    )
