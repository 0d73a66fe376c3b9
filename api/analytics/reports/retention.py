"""Cohort retention: customers acquired per week or month, and how many of them bought in each
period after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import ratio
from api.analytics.arguments import AnalyticsErrorCode, check_instants, raise_problems
from api.analytics.business_calendar import Period, period_index, period_label, period_start
from api.analytics.reports.counted import Audience, acquired_orders
from api.analytics.sql import dialect_of
from api.auth.principal import Principal
from api.errors import Problem

MAX_PERIODS = 24


@dataclass(frozen=True, slots=True)
class RetentionCell:
    offset: int  # periods after the cohort's own (0 = the acquisition period)
    customers: int | None  # with a counted order in that period; None: it has not begun
    rate: Decimal | None


@dataclass(frozen=True, slots=True)
class Cohort:
    index: int  # period number (see ``period_index``)
    start: date
    label: str
    size: int
    cells: list[RetentionCell]


@dataclass(frozen=True, slots=True)
class Retention:
    period: Period
    periods: int
    cohorts: list[Cohort]


async def cohort_retention(
    session: AsyncSession,
    principal: Principal,
    *,
    period: Period,
    start: datetime,
    end: datetime,
    now: datetime,
    periods: int = 6,
    audience: Audience = Audience(),
) -> Retention:
    """The retention table: customers acquired (first counted order) in [start, end), by the
    week or month of acquisition, and for k = 0..periods-1 how many of them have a counted
    order in the cohort's period + k. Every period the range touches is a cohort, even an
    empty one; a cell whose period has not begun at ``now`` is None. One statement."""
    problems = check_instants(start, end, "from", "to")
    if not 1 <= periods <= MAX_PERIODS:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"`periods` is between 1 and {MAX_PERIODS}.",
                ("periods",),
            )
        )
    raise_problems(problems)
    dialect = dialect_of(session)
    counted = acquired_orders(principal, audience, dialect, start, end, period)
    first = (
        select(counted.c.customer_id, counted.c.period.label("cohort"))
        .where(counted.c.seq == 1)
        .subquery("acquired")
    )
    offset = (counted.c.period - first.c.cohort).label("offset")
    result = await session.execute(
        select(first.c.cohort, offset, func.count(func.distinct(counted.c.customer_id)))
        .select_from(first)
        .join(counted, counted.c.customer_id == first.c.customer_id)
        .where(offset < periods)
        .group_by(first.c.cohort, offset)
    )
    active: dict[tuple[int, int], int] = {(c, k): n for c, k, n in result}
    current = period_index(now, period)
    # ``end`` is exclusive: its own period is in the range only if ``end`` is past its start.
    last = period_index(end - timedelta(microseconds=1), period)
    cohorts = []
    for index in range(period_index(start, period), last + 1):
        size = active.get((index, 0), 0)
        cells = []
        for k in range(periods):
            customers = active.get((index, k), 0) if index + k <= current else None
            cells.append(
                RetentionCell(
                    k, customers, ratio(customers, size) if customers is not None else None
                )
            )
        cohorts.append(
            Cohort(index, period_start(index, period), period_label(index, period), size, cells)
        )
    return Retention(period, periods, cohorts)
