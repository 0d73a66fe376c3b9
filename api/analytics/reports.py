"""Reports for marketing and channel operations: LTV, repurchase, cohort retention, RFM
distribution, CAC and ROI per channel, attributed sales, and the channel spend they divide.

Where the numbers come from:

* LTV, repurchase, retention and CAC/ROI are computed from ``customer_order`` and
  ``order_line`` (the source of truth), so any range is exact and the reports never wait on
  the metrics table. Each is one statement (CAC/ROI two: the spend, then the customers):
  it picks the customers acquired in the range first (a counted order in it and none
  before), then a window function numbers only their counted orders, the first one
  (``seq = 1``) is the acquisition, and the grouping runs in the database.
* The RFM distribution and ``Customer.metrics`` read ``customer_metrics``: RFM scores exist
  only there (the scoring run sets them), and a customer's totals are what that table is for.
* Attributed sales read ``order_attribution`` joined to the counted orders.

Shared definitions (COMMON to every analytics consumer): a counted order has a status in
``COUNTED_STATUSES`` and a customer; its revenue is ``total - refunded_amount``; its gross
margin is revenue minus the cost of what was kept (``cost_total`` minus the cost of the
refunded quantities). Only live (not merged) customers count: merges move orders to the
survivor. Money sums only the orders (and spend) in the report's currency, converting
nothing; who was acquired when (the first counted order) looks at orders in any currency.

Calendar: cohort months and weeks (Monday first) and the days of a ``Date`` range follow the
business calendar, China Standard Time (UTC+08:00, no daylight saving): an order paid at
2026-01-31T20:00Z (04:00 on 1 February in Beijing) belongs to February's cohort.

Who sees what: HQ everything; a partner principal only the customers it recruited
(``customer.recruited_partner_id``), the orders attributed to it (``order_attribution``) and
its own spend; a filter naming another partner's id just finds nothing, exactly like an id
that does not exist. Members see nothing (the schema also requires analytics:read). Gross
margins are computed for every caller; the schema shows them (and ROI, which reveals them)
to HQ only, as it does the brand's cost everywhere.

Dates and times are accepted from 2000-01-01 to 2100-12-31 (business calendar): no real
report or spend lies outside, and the calendar arithmetic stays far from the ends of Python's
dates.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal_column,
    null,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.analytics.models import ChannelSpend, CustomerMetrics, OrderAttribution
from api.auth.models import StaffUser
from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog.models import SalesChannel
from api.customers.models import Customer
from api.customers.service import customers_query
from api.db import insert_or_get
from api.errors import DomainError, Problem
from api.orders.models import COUNTED_STATUSES, Order, OrderLine
from api.orders.validation import idempotency_scope
from api.partners.models import Partner

# A partner reads its own spend; HQ's own spend (no partner) is HQ's.

BUSINESS_OFFSET = timedelta(hours=8)
BUSINESS_TZ = timezone(BUSINESS_OFFSET, "CST")
_OFFSET_SECONDS = int(BUSINESS_OFFSET.total_seconds())
_DAY_SECONDS = 86_400
_EPOCH_DAY = date(1970, 1, 1)

MAX_RANGE_DAYS = 3 * 365 + 1  # three years, with a leap day
MAX_WITHIN_DAYS = 730
MAX_PERIODS = 24
MAX_SPEND = Decimal("100000000.00")  # 1亿 a record: more is a typo
MAX_NOTE = 200
MAX_KEY = 100
DEFAULT_CURRENCY = "CNY"
CENT = Decimal("0.01")
RATE = Decimal("0.0001")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ZERO = Decimal("0.00")
SPEND_KEYSET = (ChannelSpend.id,)


class AnalyticsErrorCode(enum.Enum):
    INVALID = "invalid"
    REQUIRED = "required"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INVALID_RANGE = "invalid_range"  # the end is not after the start, or outside 2000-2100
    RANGE_TOO_LONG = "range_too_long"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


class LtvGroup(enum.Enum):
    COHORT_MONTH = "cohort_month"
    FIRST_CHANNEL = "first_channel"
    PARTNER = "partner"
    STORE = "store"
    GUIDE = "guide"
    LEVEL = "level"


class RepurchaseGroup(enum.Enum):
    FIRST_CHANNEL = "first_channel"
    PARTNER = "partner"
    STORE = "store"
    LEVEL = "level"


class AttributionGroup(enum.Enum):
    STORE = "store"
    GUIDE = "guide"
    PARTNER = "partner"


class Period(enum.Enum):
    WEEK = "week"
    MONTH = "month"


# --- arithmetic ----------------------------------------------------------------------------


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def ratio(part: Decimal | int, whole: Decimal | int) -> Decimal | None:
    """``part / whole`` to four places (half up); None when ``whole`` is zero."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(RATE, rounding=ROUND_HALF_UP)


def per(amount: Decimal, count: int) -> Decimal | None:
    """An amount per customer, in cents; None when there is nobody to divide by."""
    return cents(amount / count) if count else None


# --- the business calendar -----------------------------------------------------------------


def period_index(moment: datetime, period: Period) -> int:
    """The period (week or month number) ``moment`` falls in, in the business calendar:
    the same numbering as ``_period_sql``."""
    local = moment.astimezone(BUSINESS_TZ)
    if period is Period.MONTH:
        return local.year * 12 + local.month - 1
    return ((local.date() - _EPOCH_DAY).days + 3) // 7  # 1970-01-01 was a Thursday


def period_start(index: int, period: Period) -> date:
    """The first day of a period number: the 1st of the month, or the week's Monday."""
    if period is Period.MONTH:
        return date(index // 12, index % 12 + 1, 1)
    return _EPOCH_DAY + timedelta(days=index * 7 - 3)


def period_label(index: int, period: Period) -> str:
    """ "2026-01" for a month, the ISO week "2026-W02" for a week."""
    start = period_start(index, period)
    if period is Period.MONTH:
        return f"{start.year:04d}-{start.month:02d}"
    year, week, _ = start.isocalendar()
    return f"{year:04d}-W{week:02d}"


def day_start(day: date) -> datetime:
    """Midnight of a business day, as a UTC instant."""
    return datetime.combine(day, time(), BUSINESS_TZ).astimezone(UTC)


# The days a report or a spend may name (inclusive), and the instants they span.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)
_FIRST_INSTANT = day_start(FIRST_DAY)
_END_INSTANT = day_start(LAST_DAY + timedelta(days=1))


def _epoch(column: Any, dialect: str) -> ColumnElement[int]:
    """Whole seconds since 1970 (UTC) of a stored time, on either engine."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    # SQLite keeps naive UTC text; strftime('%s') reads it as UTC.
    return cast(func.strftime("%s", column), BigInteger)


def _period_sql(column: Any, period: Period, dialect: str) -> ColumnElement[int]:
    """The SQL of ``period_index``."""
    if period is Period.WEEK:
        local_day = (_epoch(column, dialect) + _OFFSET_SECONDS) // _DAY_SECONDS
        return (local_day + 3) // 7
    if dialect == "postgresql":
        # AT TIME ZONE 'UTC' gives the naive UTC time; the offset is a constant interval.
        local = func.timezone(literal_column("'UTC'"), column) + literal_column(
            f"INTERVAL '{_OFFSET_SECONDS} seconds'"
        )
        year, month = func.extract("year", local), func.extract("month", local)
    else:
        shift = f"+{_OFFSET_SECONDS} seconds"
        year, month = func.strftime("%Y", column, shift), func.strftime("%m", column, shift)
    return cast(year, Integer) * 12 + cast(month, Integer) - 1


# --- validation ----------------------------------------------------------------------------


def _outside_calendar(fields: Sequence[tuple[str, bool]]) -> list[Problem]:
    """An INVALID_RANGE problem for each named argument that is not ``within`` the calendar
    the reports accept."""
    return [
        Problem(
            AnalyticsErrorCode.INVALID_RANGE,
            f"Dates run from {FIRST_DAY} to {LAST_DAY} (China Standard Time).",
            (field,),
        )
        for field, within in fields
        if not within
    ]


def _check_instants(
    start: datetime, end: datetime, start_field: str, end_field: str
) -> list[Problem]:
    if start.tzinfo is None or end.tzinfo is None:
        field = start_field if start.tzinfo is None else end_field
        return [Problem(AnalyticsErrorCode.INVALID, "Give times with their UTC offset.", (field,))]
    outside = _outside_calendar(
        [
            (start_field, _FIRST_INSTANT <= start <= _END_INSTANT),
            (end_field, _FIRST_INSTANT <= end <= _END_INSTANT),
        ]
    )
    if outside:
        return outside
    if end <= start:
        return [
            Problem(
                AnalyticsErrorCode.INVALID_RANGE,
                f"`{end_field}` must be after `{start_field}`.",
                (end_field,),
            )
        ]
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        return [
            Problem(
                AnalyticsErrorCode.RANGE_TOO_LONG,
                f"A report covers at most {MAX_RANGE_DAYS} days (three years); ask for less.",
                (end_field,),
            )
        ]
    return []


def _check_days(start: date, end: date, start_field: str, end_field: str) -> list[Problem]:
    outside = _outside_calendar(
        [
            (start_field, FIRST_DAY <= start <= LAST_DAY),
            (end_field, FIRST_DAY <= end <= LAST_DAY),
        ]
    )
    if outside:
        return outside
    if end < start:
        return [
            Problem(
                AnalyticsErrorCode.INVALID_RANGE,
                f"`{end_field}` must not be before `{start_field}`.",
                (end_field,),
            )
        ]
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        return [
            Problem(
                AnalyticsErrorCode.RANGE_TOO_LONG,
                f"A report covers at most {MAX_RANGE_DAYS} days (three years); ask for less.",
                (end_field,),
            )
        ]
    return []


def _check_currency(currency: str, *field: str) -> list[Problem]:
    if _CURRENCY.fullmatch(currency):
        return []
    return [
        Problem(
            AnalyticsErrorCode.INVALID,
            "A currency is an ISO 4217 code in capitals, e.g. CNY.",
            field or ("currency",),
        )
    ]


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise DomainError(problems)


# --- who sees what -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """Narrows a customer-based report to the customers recruited by a partner or at a store
    (within what the principal may see: another partner's id finds nobody)."""

    partner_id: int | None = None
    store_id: int | None = None


def _owned_by(principal: Principal, partner: Any, store: Any) -> ColumnElement[bool]:
    """The rows a principal may read by their partner and store columns: the rule of
    ``api.auth.scope.restrict``, for tables that name a partner without being partner-owned
    rows of their own (attributions, staff)."""
    if principal.is_hq:
        return true()
    if principal.is_member:
        return false()
    if principal.partner_id is None:
        if principal.store_id is None:
            return false()
        return and_(partner.is_(None), store == principal.store_id)
    if principal.store_id is not None:
        return and_(partner == principal.partner_id, store == principal.store_id)
    return partner == principal.partner_id


def _in_cents(yuan: Any) -> ColumnElement[int]:
    """A Numeric(14, 2) amount as whole cents. SQLite keeps Numeric as floating point, where
    sums drift (0.1 + 0.2); summed as integer cents they are exact on both engines."""
    return cast(func.round(yuan * 100), BigInteger)


def _yuan(cents_: Any) -> Decimal:
    """A sum of cents from the database as yuan."""
    return (Decimal(int(cents_ or 0)) / 100).quantize(CENT)


def _order_amounts() -> tuple[ColumnElement[int], ColumnElement[int], Any]:
    """An order's revenue and gross margin in cents, and the refunded-cost subquery they
    need outer-joined on ``order_id``: the cost of the refunded units, from their lines
    (only lines with refunds are read)."""
    refunded_cost = (
        select(
            OrderLine.order_id,
            func.sum(_in_cents(OrderLine.unit_cost) * OrderLine.refunded_quantity).label("cost"),
        )
        .where(OrderLine.refunded_quantity > 0)
        .group_by(OrderLine.order_id)
        .subquery("refunded_cost")
    )
    revenue = _in_cents(Order.total) - _in_cents(Order.refunded_amount)
    kept_cost = _in_cents(Order.cost_total) - func.coalesce(refunded_cost.c.cost, 0)
    return revenue, revenue - kept_cost, refunded_cost


def _acquired_orders(
    principal: Principal,
    audience: Audience,
    dialect: str,
    since: datetime,
    until: datetime,
    period: Period | None = None,
) -> CTE:
    """Every counted order of the live customers the principal may see who were acquired in
    [since, until): whose first counted order (in any currency) falls in it. Each order comes
    with its revenue and gross margin (cents, in its currency), its place among the
    customer's counted orders (``seq`` 1 is the acquisition), the customer's dimensions and,
    when asked, the number of its ``period``.

    The acquired customers are picked first, as those with a counted order in the range and
    none before it, so only their orders are numbered and sorted, not every order there is.
    Reports group on these columns from outside the CTE, as plain columns: PostgreSQL would
    not match a GROUP BY expression to the SELECT's when each carries its own parameters.
    """
    in_range, earlier = aliased(Order, name="in_range"), aliased(Order, name="earlier")
    acquired = select(in_range.customer_id).where(
        in_range.status.in_(COUNTED_STATUSES),
        in_range.placed_at >= since,
        in_range.placed_at < until,
        ~exists().where(
            earlier.customer_id == in_range.customer_id,
            earlier.status.in_(COUNTED_STATUSES),
            earlier.placed_at < since,
        ),
    )
    revenue, margin, refunded_cost = _order_amounts()
    stmt = (
        customers_query(principal)
        .with_only_columns(
            Order.id.label("order_id"),
            Order.customer_id,
            Order.placed_at,
            Order.channel,
            Order.currency,
            revenue.label("revenue"),
            margin.label("margin"),
            _epoch(Order.placed_at, dialect).label("epoch"),
            func.row_number()
            .over(partition_by=Order.customer_id, order_by=(Order.placed_at, Order.id))
            .label("seq"),
            Customer.recruited_partner_id.label("partner_id"),
            Customer.recruited_store_id.label("store_id"),
            Customer.recruited_guide_id.label("guide_id"),
            Customer.level_id,
            (_period_sql(Order.placed_at, period, dialect) if period else null()).label("period"),
        )
        .select_from(Customer)
        .join(Order, Order.customer_id == Customer.id)
        .outerjoin(refunded_cost, refunded_cost.c.order_id == Order.id)
        .where(Order.status.in_(COUNTED_STATUSES), Customer.id.in_(acquired))
    )
    if audience.partner_id is not None:
        stmt = stmt.where(Customer.recruited_partner_id == audience.partner_id)
    if audience.store_id is not None:
        stmt = stmt.where(Customer.recruited_store_id == audience.store_id)
    # A CTE: the repurchase report reads it twice (first and second orders).
    return stmt.cte("counted")


def _cents_sum(column: Any, currency_column: Any, currency: str) -> ColumnElement[int]:
    """The sum of cents over the rows in ``currency`` (other currencies add nothing: nothing
    is converted)."""
    return func.coalesce(func.sum(case((currency_column == currency, column), else_=0)), 0)


def _count_in(column: Any, currency_column: Any, currency: str) -> ColumnElement[int]:
    return func.count(case((currency_column == currency, column)))


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# --- LTV -----------------------------------------------------------------------------------


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
    _raise(
        _check_instants(acquired_from, acquired_to, "acquiredFrom", "acquiredTo")
        + _check_currency(currency)
    )
    dialect = _dialect(session)
    counted = _acquired_orders(
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
            _count_in(counted.c.order_id, counted.c.currency, currency),
            _cents_sum(counted.c.revenue, counted.c.currency, currency),
            _cents_sum(counted.c.margin, counted.c.currency, currency),
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
            _yuan(revenue),
            _yuan(margin),
        )
        for k, customers, orders, revenue, margin in result
    ]
    rows.sort(key=_group_order)
    total = ValueRow(
        None,
        sum(r.customers for r in rows),
        sum(r.orders for r in rows),
        sum((r.revenue for r in rows), _ZERO),
        sum((r.gross_margin for r in rows), _ZERO),
    )
    return LifetimeValue(group_by, currency, rows, total)


def _group_order(row: Any) -> tuple[bool, Any]:
    """Rows in key order (channels by name), the group without a key last."""
    key = row.key
    return key is None, key.value if isinstance(key, enum.Enum) else key


# --- repurchase ----------------------------------------------------------------------------


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
    problems = _check_instants(first_order_from, first_order_to, "firstOrderFrom", "firstOrderTo")
    if not 1 <= within_days <= MAX_WITHIN_DAYS:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"`withinDays` is between 1 and {MAX_WITHIN_DAYS}.",
                ("withinDays",),
            )
        )
    _raise(problems)
    dialect = _dialect(session)
    counted = _acquired_orders(principal, audience, dialect, first_order_from, first_order_to)
    first = counted.alias("first_order")
    second = counted.alias("second_order")
    window = within_days * _DAY_SECONDS
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
    rows.sort(key=_group_order)
    total = RepurchaseRow(
        None,
        sum(r.buyers for r in rows),
        sum(r.repeaters for r in rows),
        sum(r.open_windows for r in rows),
    )
    return Repurchase(
        within_days, mature_only, group_by, rows if group_by is not None else [], total
    )


# --- cohort retention ----------------------------------------------------------------------


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
    problems = _check_instants(start, end, "from", "to")
    if not 1 <= periods <= MAX_PERIODS:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"`periods` is between 1 and {MAX_PERIODS}.",
                ("periods",),
            )
        )
    _raise(problems)
    dialect = _dialect(session)
    counted = _acquired_orders(principal, audience, dialect, start, end, period)
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


# --- RFM -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RfmSegmentRow:
    segment: str | None  # None: not scored yet
    customers: int
    average_recency_days: Decimal | None  # since the last counted order, at ``now``
    average_orders: Decimal
    average_spent: Decimal
    scored_at: datetime | None  # the latest scoring of these customers


async def rfm_distribution(
    session: AsyncSession,
    principal: Principal,
    *,
    now: datetime,
    audience: Audience = Audience(),
) -> list[RfmSegmentRow]:
    """Customers per RFM segment (as the last scoring run left them in customer_metrics),
    with their average days since the last order, orders and spend. One statement."""
    dialect = _dialect(session)
    stmt = (
        customers_query(principal)
        .with_only_columns(
            CustomerMetrics.rfm_segment,
            func.count(),
            func.sum(_epoch(CustomerMetrics.last_order_at, dialect)),
            func.count(CustomerMetrics.last_order_at),
            func.sum(CustomerMetrics.orders_count),
            func.sum(_in_cents(CustomerMetrics.total_spent)),
            func.max(CustomerMetrics.rfm_scored_at),
        )
        .select_from(Customer)
        .join(CustomerMetrics, CustomerMetrics.customer_id == Customer.id)
        .where(CustomerMetrics.orders_count > 0)
        .group_by(CustomerMetrics.rfm_segment)
    )
    if audience.partner_id is not None:
        stmt = stmt.where(Customer.recruited_partner_id == audience.partner_id)
    if audience.store_id is not None:
        stmt = stmt.where(Customer.recruited_store_id == audience.store_id)
    now_epoch = int(now.timestamp())
    rows = []
    for segment, customers, epochs, dated, orders, spent, scored_at in await session.execute(stmt):
        recency = (
            (Decimal(now_epoch * dated - int(epochs)) / (dated * _DAY_SECONDS)).quantize(
                Decimal("0.1"), rounding=ROUND_HALF_UP
            )
            if dated
            else None
        )
        rows.append(
            RfmSegmentRow(
                segment,
                customers,
                recency,
                cents(Decimal(int(orders)) / customers),
                cents(_yuan(spent) / customers),
                scored_at,
            )
        )
    rows.sort(key=lambda r: (-r.customers, r.segment is None, r.segment or ""))
    return rows


async def metrics_of(
    session: AsyncSession, customer_ids: Sequence[int]
) -> dict[int, CustomerMetrics]:
    """customer_metrics rows by customer id (the caller has already scoped the customers)."""
    if not customer_ids:
        return {}
    rows = await session.scalars(
        select(CustomerMetrics).where(CustomerMetrics.customer_id.in_(set(customer_ids)))
    )
    return {row.customer_id: row for row in rows}


# --- CAC and ROI ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelRow:
    channel: SalesChannel | None  # None: the total over every channel
    partner_id: int | None  # by partner: the spend's partner / the customers' recruiter
    spend: Decimal  # pro-rated to the range, in cents
    new_customers: int
    revenue: Decimal  # the new customers' counted orders placed in the range
    gross_margin: Decimal
    exact_spend: Decimal  # unrounded, for the ratios

    @property
    def cac(self) -> Decimal | None:
        """Spend per new customer; None without new customers."""
        return cents(self.exact_spend / self.new_customers) if self.new_customers else None

    @property
    def roi(self) -> Decimal | None:
        """(gross margin - spend) / spend; None without spend."""
        return ratio(self.gross_margin - self.exact_spend, self.exact_spend)


@dataclass(frozen=True, slots=True)
class ChannelPerformance:
    start: date
    end: date
    by_partner: bool
    currency: str
    rows: list[ChannelRow]

    @property
    def total(self) -> ChannelRow:
        exact = sum((r.exact_spend for r in self.rows), Decimal(0))
        return ChannelRow(
            None,
            None,
            cents(exact),
            sum(r.new_customers for r in self.rows),
            sum((r.revenue for r in self.rows), _ZERO),
            sum((r.gross_margin for r in self.rows), _ZERO),
            exact,
        )


async def channel_performance(
    session: AsyncSession,
    principal: Principal,
    *,
    start: date,
    end: date,
    by_partner: bool = False,
    partner_id: int | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> ChannelPerformance:
    """CAC and ROI per channel (and partner) over the business days [start, end] (both
    inclusive).

    Spend: every record overlapping the range, pro-rated by days when it overlaps only
    partly (a 1 January - 31 March record of 9,000 counts 5,900 for February and March:
    59 of its 90 days). New customers: those whose first counted order (in any currency)
    falls in the range, on that channel; by partner, the partner that recruited them.
    Revenue and gross margin: what those new customers bought in the range, on any channel,
    in ``currency``. Two statements: the spend records, then the customers.
    """
    _raise(_check_days(start, end, "from", "to") + _check_currency(currency))
    dialect = _dialect(session)
    spend_stmt = restrict(
        select(
            ChannelSpend.channel,
            ChannelSpend.partner_id,
            ChannelSpend.period_start,
            ChannelSpend.period_end,
            ChannelSpend.amount,
        ).where(
            ChannelSpend.currency == currency,
            ChannelSpend.period_start <= end,
            ChannelSpend.period_end >= start,
        ),
        ChannelSpend,
        principal,
    )
    if partner_id is not None:
        spend_stmt = spend_stmt.where(ChannelSpend.partner_id == partner_id)
    spend: dict[tuple[SalesChannel, int | None], Decimal] = {}
    for channel, spender, period_start_, period_end_, amount in await session.execute(spend_stmt):
        days = (period_end_ - period_start_).days + 1
        overlap = (min(period_end_, end) - max(period_start_, start)).days + 1
        group = (SalesChannel(channel), spender if by_partner else None)
        spend[group] = spend.get(group, Decimal(0)) + Decimal(amount) * overlap / days

    since, until = day_start(start), day_start(end + timedelta(days=1))
    counted = _acquired_orders(principal, Audience(partner_id=partner_id), dialect, since, until)
    first = (
        select(counted.c.customer_id, counted.c.channel, counted.c.partner_id)
        .where(counted.c.seq == 1)
        .subquery("acquired")
    )
    grouping = (first.c.channel, first.c.partner_id) if by_partner else (first.c.channel,)
    result = await session.execute(
        select(
            first.c.channel,
            first.c.partner_id if by_partner else null(),
            func.count(func.distinct(first.c.customer_id)),
            _cents_sum(counted.c.revenue, counted.c.currency, currency),
            _cents_sum(counted.c.margin, counted.c.currency, currency),
        )
        .select_from(first)
        .join(
            counted,
            and_(
                counted.c.customer_id == first.c.customer_id,
                counted.c.placed_at >= since,
                counted.c.placed_at < until,
            ),
        )
        .group_by(*grouping)
    )
    acquired = {
        (channel, partner): (n, _yuan(revenue), _yuan(margin))
        for channel, partner, n, revenue, margin in result
    }
    rows = []
    for channel, partner in sorted(
        spend.keys() | acquired.keys(), key=lambda g: (g[0].value, g[1] is not None, g[1] or 0)
    ):
        exact = spend.get((channel, partner), Decimal(0))
        n, revenue, margin = acquired.get((channel, partner), (0, _ZERO, _ZERO))
        rows.append(ChannelRow(channel, partner, cents(exact), n, revenue, margin, exact))
    return ChannelPerformance(start, end, by_partner, currency, rows)


# --- attributed sales ----------------------------------------------------------------------


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
    _raise(_check_instants(start, end, "from", "to") + _check_currency(currency))
    revenue, margin, refunded_cost = _order_amounts()
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
            _owned_by(principal, OrderAttribution.partner_id, OrderAttribution.store_id),
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
        AttributedRow(k, orders, customers, _yuan(revenue_), _yuan(margin_))
        for k, orders, customers, revenue_, margin_ in await session.execute(stmt)
    ]
    rows.sort(key=_group_order)
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
            _owned_by(principal, StaffUser.partner_id, StaffUser.store_id),
        )
    )
    return {row.id: row for row in rows}


# --- channel spend -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendDraft:
    channel: SalesChannel
    period_start: date
    period_end: date  # inclusive
    amount: Decimal
    idempotency_key: str
    partner_id: int | None = None
    currency: str = DEFAULT_CURRENCY
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SpendResult:
    spend: ChannelSpend
    created: bool


def _spend_problems(draft: SpendDraft) -> list[Problem]:
    problems = []
    key = draft.idempotency_key
    if not key.strip():
        problems.append(
            Problem(AnalyticsErrorCode.REQUIRED, "Give an idempotency key.", ("idempotencyKey",))
        )
    elif len(key) > MAX_KEY:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"An idempotency key is at most {MAX_KEY} characters.",
                ("idempotencyKey",),
            )
        )
    amount = draft.amount
    not_cents = Problem(
        AnalyticsErrorCode.INVALID, "An amount is yuan and fen, e.g. 1200.50.", ("amount",)
    )
    if not amount.is_finite():
        problems.append(not_cents)
    elif not Decimal(0) < amount <= MAX_SPEND:
        problems.append(
            Problem(
                AnalyticsErrorCode.AMOUNT_OUT_OF_RANGE,
                f"A spend is more than 0 and at most {MAX_SPEND:,}.",
                ("amount",),
            )
        )
    # Only now, with the magnitude bounded: quantizing 1E+30 to fen overflows the context.
    elif amount != amount.quantize(CENT):
        problems.append(not_cents)
    outside = _outside_calendar(
        [
            ("periodStart", FIRST_DAY <= draft.period_start <= LAST_DAY),
            ("periodEnd", FIRST_DAY <= draft.period_end <= LAST_DAY),
        ]
    )
    if outside:
        problems += outside
    elif draft.period_end < draft.period_start:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID_RANGE,
                "`periodEnd` must not be before `periodStart`.",
                ("periodEnd",),
            )
        )
    elif draft.period_end >= _a_year_after(draft.period_start):
        problems.append(
            Problem(
                AnalyticsErrorCode.RANGE_TOO_LONG,
                "A spend covers at most a year (to the day before the same date a year "
                "later): record each year on its own.",
                ("periodEnd",),
            )
        )
    if draft.note is not None and len(draft.note) > MAX_NOTE:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"A note is at most {MAX_NOTE} characters.",
                ("note",),
            )
        )
    return problems + _check_currency(draft.currency)


def _a_year_after(day: date) -> date:
    """The same date a year later (29 February: 1 March)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return date(day.year + 1, 3, 1)


def spend_digest(draft: SpendDraft) -> str:
    """What a request asked for, normalized: a retry with the same key must ask the same."""
    body = {
        "channel": draft.channel.value,
        "partner": draft.partner_id,
        "start": draft.period_start.isoformat(),
        "end": draft.period_end.isoformat(),
        "amount": str(draft.amount.quantize(CENT)),
        "currency": draft.currency,
        "note": (draft.note or "").strip() or None,
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def require_hq(principal: Principal) -> None:
    """Spend is HQ's to record (spend:write is an HQ-only scope; this holds for any caller)."""
    if not principal.is_hq:
        raise DomainError.one(AnalyticsErrorCode.FORBIDDEN, "Only HQ records channel spend.")


async def record_channel_spend(
    session: AsyncSession, principal: Principal, draft: SpendDraft, *, now: datetime
) -> SpendResult:
    """Record money spent acquiring customers on a channel (HQ only), once per idempotency
    key within the caller's scope: a retry returns the first record (``created`` False), the
    same key for a different request is IDEMPOTENCY_KEY_REUSED. Concurrent retries meet at
    the unique (scope, key): one inserts, the others read it back."""
    require_hq(principal)
    _raise(_spend_problems(draft))
    if draft.partner_id is not None and not await session.scalar(
        select(Partner.id).where(Partner.id == draft.partner_id)
    ):
        raise DomainError.one(AnalyticsErrorCode.NOT_FOUND, "No such partner.", "partnerId")
    digest = spend_digest(draft)
    row, created = await insert_or_get(
        session,
        ChannelSpend,
        {
            "channel": draft.channel.value,
            "partner_id": draft.partner_id,
            "period_start": draft.period_start,
            "period_end": draft.period_end,
            "amount": draft.amount,
            "currency": draft.currency,
            "note": (draft.note or "").strip() or None,
            "recorded_scope": idempotency_scope(principal),
            "idempotency_key": draft.idempotency_key,
            "request_digest": digest,
            "recorded_by": principal.subject,
            "created_at": now,
        },
        ("recorded_scope", "idempotency_key"),
    )
    if not created and row.request_digest != digest:
        raise DomainError.one(
            AnalyticsErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This idempotency key was used for a different spend.",
            "idempotencyKey",
        )
    return SpendResult(row, created)


@dataclass(frozen=True, slots=True)
class SpendFilter:
    channels: Sequence[SalesChannel] = ()
    partner_id: int | None = None
    overlapping_from: date | None = None  # periods ending on or after
    overlapping_to: date | None = None  # periods starting on or before


def channel_spends_query(principal: Principal, where: SpendFilter | None = None) -> Select[Any]:
    """Spend records the principal may read: HQ all, a partner its own."""
    stmt = restrict(select(ChannelSpend), ChannelSpend, principal)
    if where is None:
        return stmt
    if where.channels:
        stmt = stmt.where(ChannelSpend.channel.in_([c.value for c in where.channels]))
    if where.partner_id is not None:
        stmt = stmt.where(ChannelSpend.partner_id == where.partner_id)
    if where.overlapping_from is not None:
        stmt = stmt.where(ChannelSpend.period_end >= where.overlapping_from)
    if where.overlapping_to is not None:
        stmt = stmt.where(ChannelSpend.period_start <= where.overlapping_to)
    return stmt


async def spends_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, ChannelSpend]:
    if not ids:
        return {}
    rows = await session.scalars(
        channel_spends_query(principal).where(ChannelSpend.id.in_(set(ids)))
    )
    return {row.id: row for row in rows}
