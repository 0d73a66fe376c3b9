"""The conversion funnel (公域 → 私域 → 复购): how many customers take each step, in order.

Definition (what ``funnel_statement`` computes, and what a hand-written query must match):

* The **entry touch** of a customer is their first touch (earliest ``occurred_at``, then
  lowest id) of ``steps[0]`` among the touches that match the dimension filters
  (``source_channel``, ``partner_id``, ``store_id``, ``campaign_id``) and the principal's
  scope. The **cohort** is the customers whose entry touch falls in ``[start, end)``: a customer
  with such a touch before ``start`` entered earlier and is not in it.
* A customer **reaches** step i (i >= 1) at the earliest touch of ``steps[i]`` at or after the
  time they reached step i-1 (an ordered funnel: a touch before its predecessor does not
  count). Later steps are any touches of the customer within the principal's scope, whatever
  their channel, partner, store or campaign: the filters choose who enters.
* ``group_by`` splits the cohort by a dimension of the entry touch, or by the week (from
  Monday) or month of its time in the business calendar (UTC+8, ``BUSINESS_OFFSET`` of
  api/analytics/business_calendar.py, as the LTV and retention reports): a first touch at
  07:00 on 1 March in Shanghai (23:00 UTC on 28 February) is a March cohort in both. Groups
  are the MAX_GROUPS largest (then by key).
* Per group and step: customers who reached it; the conversion from the previous step and from
  the first (4 decimal places, rounded half up; null when the base is 0); the median hours
  between reaching the previous step and this one (2 places; null for the first step or when
  nobody reached it).

A partner principal's funnel reads only its own partner's touches (store staff their store's),
entry and later steps alike (``reads.touch_scope``): another partner's id as a filter finds
nothing, exactly like an id that does not exist.

One statement computes every group's counts (and, on PostgreSQL, the medians with
percentile_cont): the cohort from the entry touches in range (``ix_touchpoint_step_time``), an
anti-join probe per customer for an earlier entry touch, then per step one index probe per
customer (``ix_touchpoint_customer_step``: customer, step, occurred_at >= previous, first row).
SQLite has no percentile_cont: a second statement reads the step times of the customers who
reached the second step and the medians are taken here.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    CTE,
    Date,
    Float,
    Select,
    cast,
    exists,
    func,
    literal_column,
    null,
    select,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.analytics.business_calendar import BUSINESS_OFFSET
from api.auth.principal import Principal
from api.errors import DomainError, Problem
from api.growth.errors import GrowthErrorCode
from api.growth.models import FUNNEL_STEPS, Touchpoint, TouchpointStep
from api.growth.reads import touch_scope

MIN_STEPS = 2
MAX_STEPS = len(FUNNEL_STEPS)
MAX_RANGE = timedelta(days=2 * 366)
MAX_GROUPS = 200
_RATE = Decimal("0.0001")
_HOURS = Decimal("0.01")
_OFFSET_SECONDS = int(BUSINESS_OFFSET.total_seconds())


class FunnelGroupBy(enum.Enum):
    SOURCE_CHANNEL = "source_channel"
    PARTNER = "partner"
    STORE = "store"
    CAMPAIGN = "campaign"
    COHORT_WEEK = "cohort_week"
    COHORT_MONTH = "cohort_month"


# The entry touch's column each dimension groups by.
_DIMENSIONS = {
    FunnelGroupBy.SOURCE_CHANNEL: "source_channel",
    FunnelGroupBy.PARTNER: "partner_id",
    FunnelGroupBy.STORE: "store_id",
    FunnelGroupBy.CAMPAIGN: "campaign_id",
}
_COHORTS = (FunnelGroupBy.COHORT_WEEK, FunnelGroupBy.COHORT_MONTH)


@dataclass(frozen=True, slots=True)
class FunnelQuery:
    start: datetime  # inclusive
    end: datetime  # exclusive
    steps: Sequence[TouchpointStep] = FUNNEL_STEPS
    source_channel: str | None = None
    partner_id: int | None = None
    store_id: int | None = None
    campaign_id: str | None = None
    group_by: FunnelGroupBy | None = None


@dataclass(frozen=True, slots=True)
class FunnelStep:
    step: TouchpointStep
    customers: int
    conversion_from_previous: Decimal | None
    conversion_from_first: Decimal | None
    median_hours_from_previous: Decimal | None


@dataclass(frozen=True, slots=True)
class FunnelGroup:
    # The group's value: a channel, partner id, store id, campaign id or the cohort's first
    # day (business calendar, UTC+8); None without group_by (the one group) or for entry
    # touches without that value.
    key: str | int | date | None
    steps: list[FunnelStep]


@dataclass(frozen=True, slots=True)
class FunnelResult:
    groups: list[FunnelGroup] = field(default_factory=list)
    truncated: bool = False  # more than MAX_GROUPS groups: the smallest were left out


def check_query(query: FunnelQuery) -> None:
    """DomainError with every problem of the query's shape (field paths as the arguments)."""
    problems: list[Problem] = []
    steps = list(query.steps)
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        problems.append(
            Problem(
                GrowthErrorCode.INVALID,
                f"A funnel has {MIN_STEPS} to {MAX_STEPS} steps.",
                ("steps",),
            )
        )
    for index, step in enumerate(steps):
        if step in steps[:index]:
            problems.append(
                Problem(
                    GrowthErrorCode.INVALID,
                    f"{step.name} is already step {steps.index(step)}.",
                    ("steps", str(index)),
                )
            )
    if query.start.tzinfo is None or query.end.tzinfo is None:
        problems.append(Problem(GrowthErrorCode.INVALID, "Times need a UTC offset.", ("from",)))
    elif query.start >= query.end:
        problems.append(Problem(GrowthErrorCode.INVALID, "`from` must be before `to`.", ("to",)))
    elif query.end - query.start > MAX_RANGE:
        problems.append(
            Problem(GrowthErrorCode.INVALID, "A funnel spans at most 2 years.", ("to",))
        )
    if problems:
        raise DomainError(problems)


def _entry(query: FunnelQuery, principal: Principal | None) -> CTE:
    """The cohort: customer_id, t0 (the entry time) and grp (the entry touch's dimension, if
    grouped by one)."""
    first_step = query.steps[0]

    def filters(touch: Any) -> list[Any]:
        conditions = [touch.step == first_step]
        for value, column in (
            (query.source_channel, touch.source_channel),
            (query.partner_id, touch.partner_id),
            (query.store_id, touch.store_id),
            (query.campaign_id, touch.campaign_id),
        ):
            if value is not None:
                conditions.append(column == value)
        if principal is not None:
            conditions += touch_scope(principal, touch)
        return conditions

    touch = aliased(Touchpoint, name="entry_touch")
    in_range = [*filters(touch), touch.occurred_at >= query.start, touch.occurred_at < query.end]
    dimension = _DIMENSIONS.get(query.group_by) if query.group_by else None
    if dimension is None:
        firsts = (
            select(touch.customer_id, func.min(touch.occurred_at).label("t0"))
            .where(*in_range)
            .group_by(touch.customer_id)
            .subquery("funnel_first")
        )
        grp: Any = null()
    else:
        # The dimension of the first touch itself (ties: the lowest id), not of any touch.
        rank = func.row_number().over(
            partition_by=touch.customer_id, order_by=(touch.occurred_at, touch.id)
        )
        ranked = (
            select(
                touch.customer_id,
                touch.occurred_at.label("t0"),
                getattr(touch, dimension).label("grp"),
                rank.label("entry_rank"),
            )
            .where(*in_range)
            .subquery("funnel_ranked")
        )
        firsts = (
            select(ranked.c.customer_id, ranked.c.t0, ranked.c.grp)
            .where(ranked.c.entry_rank == 1)
            .subquery("funnel_first")
        )
        grp = firsts.c.grp
    before = aliased(Touchpoint, name="earlier_touch")
    earlier = exists().where(
        before.customer_id == firsts.c.customer_id,
        *filters(before),
        before.occurred_at < query.start,
    )
    return (
        select(firsts.c.customer_id, firsts.c.t0, grp.label("grp"))
        .where(~earlier)
        .cte("funnel_entry")
        .prefix_with("MATERIALIZED")
    )


def _reached(query: FunnelQuery, principal: Principal | None) -> CTE:
    """The cohort with t0 .. t{n-1}: when each customer reached each step (null: not)."""
    stage = _entry(query, principal)
    for index in range(1, len(query.steps)):
        touch = aliased(Touchpoint, name=f"step{index}_touch")
        conditions = [
            touch.customer_id == stage.c.customer_id,
            touch.step == query.steps[index],
            touch.occurred_at >= stage.c[f"t{index - 1}"],
        ]
        if principal is not None:
            conditions += touch_scope(principal, touch)
        reached = (
            select(touch.occurred_at)
            .where(*conditions)
            .order_by(touch.occurred_at)
            .limit(1)
            .scalar_subquery()
        )
        # Materialized: each time is computed once (an inlined chain would recompute every
        # earlier step's probe inside each later one).
        stage = (
            select(*stage.c, reached.label(f"t{index}"))
            .cte(f"funnel_step{index}")
            .prefix_with("MATERIALIZED")
        )
    return stage


def _group_key(query: FunnelQuery, reached: CTE, dialect: str) -> Any:
    if query.group_by is FunnelGroupBy.COHORT_WEEK or query.group_by is FunnelGroupBy.COHORT_MONTH:
        # Cohorts are business-calendar weeks and months (UTC+8), as in the reports.
        t0 = reached.c.t0
        if dialect == "postgresql":
            unit = "week" if query.group_by is FunnelGroupBy.COHORT_WEEK else "month"
            # AT TIME ZONE 'UTC' gives the naive UTC time; the offset is a constant interval.
            local = func.timezone("UTC", t0) + literal_column(
                f"INTERVAL '{_OFFSET_SECONDS} seconds'"
            )
            return cast(func.date_trunc(unit, local), Date)
        # SQLite keeps UTC times as text: shifted, then Monday of the week or the 1st.
        shift = f"+{_OFFSET_SECONDS} seconds"
        if query.group_by is FunnelGroupBy.COHORT_WEEK:
            return type_coerce(func.date(t0, shift, "weekday 0", "-6 days"), Date)
        return type_coerce(func.date(t0, shift, "start of month"), Date)
    if query.group_by is not None:
        return reached.c.grp
    return null()


def _seconds(later: Any, earlier: Any) -> Any:
    return cast(func.extract("epoch", later - earlier), Float)


def funnel_statement(
    query: FunnelQuery, *, principal: Principal | None = None, dialect: str = "postgresql"
) -> Select[Any]:
    """THE statement: one row per group (at most MAX_GROUPS + 1, largest first) with ``grp``,
    ``reached_0`` .. ``reached_{n-1}`` (customers) and, on PostgreSQL, ``median_1`` ..
    ``median_{n-1}`` (seconds from the previous step). ``principal`` None reads every touch
    (HQ); ``dialect`` is "postgresql" or "sqlite". The query must pass ``check_query``."""
    reached = _reached(query, principal)
    grp = _group_key(query, reached, dialect).label("grp")
    n = len(query.steps)
    columns: list[Any] = [grp]
    columns += [func.count(reached.c[f"t{i}"]).label(f"reached_{i}") for i in range(n)]
    if dialect == "postgresql":
        columns += [
            func.percentile_cont(0.5)
            .within_group(_seconds(reached.c[f"t{i}"], reached.c[f"t{i - 1}"]))
            .label(f"median_{i}")
            for i in range(1, n)
        ]
    stmt = select(*columns)
    if query.group_by is None:
        return stmt  # one row, zeros for an empty cohort
    key = grp.element
    # Ties broken by key, nulls last, the same on both engines.
    return (
        stmt.group_by(key)
        .order_by(func.count(reached.c.t0).desc(), key.is_(None), key)
        .limit(MAX_GROUPS + 1)
    )


def medians_statement(
    query: FunnelQuery, *, principal: Principal | None = None, dialect: str = "sqlite"
) -> Select[Any]:
    """Where percentile_cont is missing (SQLite): ``grp`` and the step times ``t0`` ..
    ``t{n-1}`` of every cohort customer who reached the second step."""
    reached = _reached(query, principal)
    grp = _group_key(query, reached, dialect).label("grp")
    times = [reached.c[f"t{i}"] for i in range(len(query.steps))]
    return select(grp, *times).where(reached.c.t1.is_not(None))


def _rate(part: int, base: int) -> Decimal | None:
    if base == 0:
        return None
    return (Decimal(part) / Decimal(base)).quantize(_RATE, rounding=ROUND_HALF_UP)


def _hours(seconds: float | None) -> Decimal | None:
    if seconds is None:
        return None
    return (Decimal(repr(float(seconds))) / 3600).quantize(_HOURS, rounding=ROUND_HALF_UP)


async def conversion_funnel(
    session: AsyncSession, principal: Principal, query: FunnelQuery
) -> FunnelResult:
    """``conversionFunnel``: the funnel as the principal may see it (see the module
    docstring). DomainError for a query of the wrong shape."""
    check_query(query)
    dialect = session.get_bind().dialect.name
    scope = None if principal.is_hq else principal
    rows = (await session.execute(funnel_statement(query, principal=scope, dialect=dialect))).all()
    truncated = len(rows) > MAX_GROUPS
    rows = rows[:MAX_GROUPS]
    n = len(query.steps)
    medians: dict[Any, list[float | None]] = {}
    if dialect == "postgresql":
        medians = {row.grp: [getattr(row, f"median_{i}") for i in range(1, n)] for row in rows}
    elif any(row.reached_1 for row in rows):
        gaps: dict[Any, list[list[float]]] = {}
        times = await session.execute(medians_statement(query, principal=scope, dialect=dialect))
        for row in times:
            per_step = gaps.setdefault(row.grp, [[] for _ in range(1, n)])
            for i in range(1, n):
                later, earlier = row[i + 1], row[i]
                if later is not None:
                    per_step[i - 1].append((later - earlier).total_seconds())
        medians = {
            key: [statistics.median(g) if g else None for g in per_step]
            for key, per_step in gaps.items()
        }
    groups = []
    for row in rows:
        counts = [getattr(row, f"reached_{i}") for i in range(n)]
        group_medians = medians.get(row.grp, [None] * (n - 1))
        steps = [
            FunnelStep(
                step=step,
                customers=counts[i],
                conversion_from_previous=_rate(counts[i], counts[i - 1]) if i else None,
                conversion_from_first=_rate(counts[i], counts[0]),
                median_hours_from_previous=_hours(group_medians[i - 1]) if i else None,
            )
            for i, step in enumerate(query.steps)
        ]
        groups.append(FunnelGroup(key=row.grp, steps=steps))
    if query.group_by in _COHORTS:
        groups.sort(key=lambda g: (g.key is None, g.key or date.min))
    return FunnelResult(groups=groups, truncated=truncated)


__all__ = [
    "MAX_GROUPS",
    "MAX_RANGE",
    "FunnelGroup",
    "FunnelGroupBy",
    "FunnelQuery",
    "FunnelResult",
    "FunnelStep",
    "check_query",
    "conversion_funnel",
    "funnel_statement",
    "medians_statement",
]
