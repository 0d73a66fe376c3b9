"""Per-customer metrics kept in step with every order change, lifetime attribution of orders
to the store and guide that recruited the member, and RFM scores.

Metrics (``customer_metrics``) are derived data: a customer's row is recomputed from their
counted orders (``COUNTED_STATUSES``, the customer live) by ONE select, ``_metrics_select``,
whenever an order of theirs changes (the order hook below) or a merge moves orders onto
them (the merge step below). ``rebuild_customer_metrics`` runs that same select over a range
of customers, and ``metrics_differences`` compares it with the table (``qudao metrics
rebuild --check``), so the incremental table and a rebuild cannot disagree by construction.

Money is summed in whole cents: SQLite keeps Numeric as floating point, where a sum of
prices drifts (0.1 + 0.2); converted to integer cents per order first, the sums, the average
(rounded half up in integer arithmetic) and the margin are exact, and the same on both
engines.

Concurrency: each recomputation reads the orders only once every other writer of the row has
committed, so a slower one never overwrites a newer row with what it computed earlier:
orderCreate, the pickup lifecycle and merges hold the customer's lock (their lock order),
and an import batch and a rebuild claim the metrics rows first (``_claim``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Numeric,
    Select,
    String,
    and_,
    case,
    cast,
    delete,
    except_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.models import CustomerMetrics, OrderAttribution
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import Customer, CustomerStatus
from api.db import UTCDateTime, utcnow
from api.growth.models import Touchpoint
from api.growth.reads import attributable_touch
from api.orders.models import COUNTED_STATUSES, Order, OrderLine, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from api.partners.models import Store

# The columns an order recomputes; the RFM columns belong to the scoring run.
METRIC_COLUMNS = (
    "orders_count",
    "total_spent",
    "gross_margin",
    "avg_order_value",
    "first_order_at",
    "second_order_at",
    "last_order_at",
    "first_order_channel",
)
METRIC_COLUMNS_WITH_ID = ("customer_id", *METRIC_COLUMNS)
FIRST_TOUCH = "first_touch"
LAST_TOUCH = "last_touch"
ATTRIBUTION_RULES = (FIRST_TOUCH, LAST_TOUCH)

CustomerFilter = Callable[[Any], ColumnElement[bool]]


# --- the one select --------------------------------------------------------------------------


def _cents(yuan: Any) -> ColumnElement[int]:
    """A Numeric(14, 2) amount as whole cents. On SQLite the amount is a float close to it;
    times 100 and rounded, it is the exact integer again."""
    return cast(func.round(yuan * 100), BigInteger)


def _yuan(cents: Any) -> ColumnElement[Any]:
    """Whole cents back to Numeric(14, 2), as the column itself would hold them (SQLite: the
    same float a bound Decimal becomes, an integer when whole)."""
    return cast(cents / 100, Numeric(14, 2))


def _for_ids(customer_ids: Sequence[int]) -> CustomerFilter:
    return lambda column: column.in_(customer_ids)


METRICS_CURRENCY = "CNY"


def _for_range(ids: range | None) -> CustomerFilter:
    if ids is None:
        return lambda column: true()
    return lambda column: and_(column >= ids.start, column < ids.stop)


def _counted() -> list[ColumnElement[bool]]:
    """Counted orders of live customers (join ``Customer`` on the order's customer)."""
    return [Order.status.in_(COUNTED_STATUSES), Customer.status == CustomerStatus.ACTIVE]


def _metrics_select(customers: CustomerFilter) -> Select[Any]:
    """customer_id and every metric column, one row per live customer (of those the filter
    takes) with at least one counted order. Used by the refresh, the rebuild and the check."""
    # Cost given back by refunds: Σ unit_cost × refunded_quantity. Among counted orders only
    # a partially refunded one has refunded lines, so the lines are read for those alone.
    returned_cost = (
        select(
            func.coalesce(func.sum(_cents(OrderLine.unit_cost) * OrderLine.refunded_quantity), 0)
        )
        .where(OrderLine.order_id == Order.id)
        .scalar_subquery()
    )
    # Money columns are CNY, the brand's currency: an order in another currency counts as an
    # order (count, dates, channel) but adds no money, rather than adding HKD to CNY.
    in_cny = Order.currency == METRICS_CURRENCY
    revenue = case((in_cny, _cents(Order.total) - _cents(Order.refunded_amount)), else_=0)
    margin = revenue - case(
        (
            in_cny,
            _cents(Order.cost_total)
            - case((Order.status == OrderStatus.PARTIALLY_REFUNDED, returned_cost), else_=0),
        ),
        else_=0,
    )
    counted = (
        select(
            Order.customer_id,
            Order.placed_at,
            cast(Order.channel, String(32)).label("channel"),
            revenue.label("revenue"),
            margin.label("margin"),
            # The customer's n-th order; simultaneous orders in id order, so the first and
            # second order (and the first channel) never depend on how rows come back.
            func.row_number()
            .over(partition_by=Order.customer_id, order_by=(Order.placed_at, Order.id))
            .label("n"),
        )
        .join(Customer, Customer.id == Order.customer_id)
        .where(*_counted(), customers(Order.customer_id))
        .subquery("counted")
    )
    totals = (
        select(
            counted.c.customer_id,
            func.count().label("orders_count"),
            cast(func.sum(counted.c.revenue), BigInteger).label("spent"),
            cast(func.sum(counted.c.margin), BigInteger).label("margin"),
            func.min(counted.c.placed_at).label("first_order_at"),
            func.min(case((counted.c.n == 2, counted.c.placed_at))).label("second_order_at"),
            func.max(counted.c.placed_at).label("last_order_at"),
            func.min(case((counted.c.n == 1, counted.c.channel))).label("first_order_channel"),
        )
        .group_by(counted.c.customer_id)
        .subquery("totals")
    )
    # Revenue is never negative (refunds stay within the total), so integer division is
    # floor division on both engines and (2s + n) // 2n rounds s / n half up to the cent.
    average = (totals.c.spent * 2 + totals.c.orders_count) // (totals.c.orders_count * 2)
    return select(
        totals.c.customer_id,
        totals.c.orders_count,
        _yuan(totals.c.spent).label("total_spent"),
        _yuan(totals.c.margin).label("gross_margin"),
        _yuan(average).label("avg_order_value"),
        totals.c.first_order_at,
        totals.c.second_order_at,
        totals.c.last_order_at,
        totals.c.first_order_channel,
    ).where(
        # Always true; SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT, or it
        # reads the ON as a join's.
        totals.c.orders_count > 0
    )


def _written(result: Any) -> int:
    """The rows a statement wrote, to report them: nothing is decided on it (api/db.py: that
    is what a returned row is for). Without RETURNING, both drivers count exactly."""
    return int(result.rowcount)


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _claim(session: AsyncSession, customers: CustomerFilter, now: datetime) -> None:
    """Lock the rows of the live customers the filter takes, in ascending id order, creating
    empty ones where missing (the recomputation then fills or removes them).

    A recomputation must read the orders after any other writer of the row has committed,
    or the slower of two would write what it computed before the other's orders existed.
    orderCreate and the lifecycle need no claim: they hold the customer's lock, and nobody
    else adds orders of that customer meanwhile. An import batch and a rebuild claim the
    metrics rows rather than lock the customer: an import's orders hold a share lock on
    their customer (the foreign key), and upgrading it can deadlock with an orderCreate
    queued for the customer between two imports of one buyer."""
    empty = (
        select(
            Customer.id,
            literal(0),
            literal(0),
            literal(0),
            literal(0),
            literal(now, UTCDateTime()),
        )
        .where(customers(Customer.id), Customer.status == CustomerStatus.ACTIVE)
        .order_by(Customer.id)
    )
    stmt = _insert(session)(CustomerMetrics).from_select(
        [
            "customer_id",
            "orders_count",
            "total_spent",
            "gross_margin",
            "avg_order_value",
            "updated_at",
        ],
        empty,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[CustomerMetrics.customer_id],
        set_={"updated_at": stmt.excluded.updated_at},
    )
    await session.execute(stmt, execution_options={"synchronize_session": False})


async def _prune(session: AsyncSession, customers: CustomerFilter) -> None:
    """Remove the rows of customers (of those the filter takes) with no counted order any
    more, or merged away."""
    still_counted = (
        select(Order.id)
        .join(Customer, Customer.id == Order.customer_id)
        .where(Order.customer_id == CustomerMetrics.customer_id, *_counted())
    )
    await session.execute(
        delete(CustomerMetrics).where(
            customers(CustomerMetrics.customer_id), ~exists(still_counted)
        ),
        execution_options={"synchronize_session": False},
    )


async def _upsert(session: AsyncSession, customers: CustomerFilter, now: datetime) -> int:
    """Write the select's rows over the table's; RFM scores of existing rows stay. Returns
    the rows written."""
    computed = _metrics_select(customers).add_columns(
        literal(now, UTCDateTime()).label("updated_at")
    )
    stmt = _insert(session)(CustomerMetrics).from_select(
        [*METRIC_COLUMNS_WITH_ID, "updated_at"], computed
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[CustomerMetrics.customer_id],
        set_={name: stmt.excluded[name] for name in (*METRIC_COLUMNS, "updated_at")},
    )
    written = await session.execute(stmt, execution_options={"synchronize_session": False})
    return _written(written)


async def refresh_customer_metrics(
    session: AsyncSession,
    customer_ids: Iterable[int],
    *,
    prune: bool = True,
    now: datetime | None = None,
) -> None:
    """Recompute these customers' rows from their counted orders: two statements however
    many customers (one with ``prune=False``, for a caller that only added counted orders:
    then nobody can have lost their last one).

    The caller holds the customers' locks (see the module docstring)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    customers = _for_ids(ids)
    if prune:
        await _prune(session, customers)
    await _upsert(session, customers, now or utcnow())


async def rebuild_customer_metrics(
    session: AsyncSession, ids: range | None = None, *, now: datetime | None = None
) -> int:
    """Recompute every row (of customers whose id is in ``ids``) with the refresh's select,
    removing rows that should not be there; returns the rows written. RFM scores of
    customers who keep a row stay.

    ``qudao metrics rebuild`` calls it per range of ids, one transaction each, so no
    transaction holds a million row locks; the rows of the range are claimed first
    (``_claim``), so an order committing meanwhile is either seen or recomputed after."""
    customers = _for_range(ids)
    now = now or utcnow()
    await _claim(session, customers, now)
    await _prune(session, customers)
    return await _upsert(session, customers, now)


@dataclass(frozen=True, slots=True)
class MetricsDifference:
    """A customer whose row differs from what a rebuild would write. ``stored`` is None when
    the customer has no row but should; ``rebuilt`` is None when the row should not be."""

    customer_id: int
    stored: dict[str, Any] | None
    rebuilt: dict[str, Any] | None

    def columns(self) -> list[str]:
        """The metric columns that differ (all of them when a side is missing)."""
        if self.stored is None or self.rebuilt is None:
            return list(METRIC_COLUMNS)
        return [c for c in METRIC_COLUMNS if self.stored[c] != self.rebuilt[c]]


async def metrics_differences(
    session: AsyncSession, ids: range | None = None
) -> list[MetricsDifference]:
    """Compare the table (customers whose id is in ``ids``) with a rebuild, in one statement
    and so one snapshot: rows only one side has, or that differ in a metric column."""
    customers = _for_range(ids)
    rebuilt = _metrics_select(customers)
    stored = select(*(CustomerMetrics.__table__.c[c] for c in METRIC_COLUMNS_WITH_ID)).where(
        customers(CustomerMetrics.customer_id)
    )
    only_rebuilt = except_(rebuilt, stored).subquery("only_rebuilt")
    only_stored = except_(stored, rebuilt).subquery("only_stored")
    stmt = union_all(
        select(literal("rebuilt").label("side"), *only_rebuilt.c),
        select(literal("stored").label("side"), *only_stored.c),
    )
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for row in (await session.execute(stmt)).mappings():
        values = {c: row[c] for c in METRIC_COLUMNS}
        found.setdefault(row["customer_id"], {})[row["side"]] = values
    return [
        MetricsDifference(customer_id, sides.get("stored"), sides.get("rebuilt"))
        for customer_id, sides in sorted(found.items())
    ]


# --- attribution -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributionPolicy:
    """Which recruiter an order counts for (api/settings.py ``attribution_rule`` and
    ``attribution_window_days``; 0 days = for life)."""

    rule: str = FIRST_TOUCH
    window_days: int = 0

    def __post_init__(self) -> None:
        if self.rule not in ATTRIBUTION_RULES:
            raise ValueError(f"attribution rule must be one of {', '.join(ATTRIBUTION_RULES)}")
        if self.window_days < 0:
            raise ValueError("attribution window must be 0 (for life) or a number of days")

    @classmethod
    def from_settings(cls, settings: Any) -> AttributionPolicy:
        return cls(settings.attribution_rule, settings.attribution_window_days)


def _attribution_select(order_ids: Sequence[int], rule: str, window_days: int) -> Select[Any]:
    """One row per attributable order among ``order_ids``, with the columns of
    ``order_attribution``: counted orders of live members who have a recruiter, placed at or
    after they were recruited (an earlier purchase is nobody's recruitment)."""
    recruiter = or_(
        Customer.recruited_partner_id.is_not(None),
        Customer.recruited_store_id.is_not(None),
        Customer.recruited_guide_id.is_not(None),
    )
    columns: list[Any]
    stmt: Select[Any]
    if rule == FIRST_TOUCH:
        columns = [
            Customer.recruited_partner_id.label("partner_id"),
            Customer.recruited_store_id.label("store_id"),
            Customer.recruited_guide_id.label("guide_id"),
        ]
        stmt = select(Order.id).join(Customer, Customer.id == Order.customer_id)
    else:
        # The latest touch with a store at or before the order (ties: the later recorded),
        # not counting what the order itself recorded (its first-order touchpoint): that is
        # the purchase, not what led to it.
        latest = (
            select(Touchpoint.id)
            .where(
                Touchpoint.customer_id == Order.customer_id,
                Touchpoint.store_id.is_not(None),
                Touchpoint.occurred_at <= Order.placed_at,
                or_(Touchpoint.order_id.is_(None), Touchpoint.order_id != Order.id),
                # Only touches that may move attribution: another partner's touch on a member
                # it did not recruit must not take over that member's orders (rebates).
                attributable_touch(Touchpoint, Customer.recruited_partner_id),
            )
            .order_by(Touchpoint.occurred_at.desc(), Touchpoint.id.desc())
            .limit(1)
            .correlate(Order, Customer)
            .scalar_subquery()
        )
        touched = Touchpoint.id.is_not(None)
        columns = [
            # The touch's store decides its partner (a store belongs to one partner, or HQ).
            case((touched, Store.partner_id), else_=Customer.recruited_partner_id).label(
                "partner_id"
            ),
            case((touched, Touchpoint.store_id), else_=Customer.recruited_store_id).label(
                "store_id"
            ),
            case((touched, Touchpoint.guide_id), else_=Customer.recruited_guide_id).label(
                "guide_id"
            ),
        ]
        stmt = (
            select(Order.id)
            .join(Customer, Customer.id == Order.customer_id)  # before the touch: it reads it
            .outerjoin(Touchpoint, Touchpoint.id == latest)
            .outerjoin(Store, Store.id == Touchpoint.store_id)
        )
    return stmt.add_columns(
        Order.customer_id,
        *columns,
        literal(rule).label("rule"),
        literal(window_days or None, Integer).label("window_days"),
        Order.placed_at,
    ).where(
        Order.id.in_(order_ids),
        *_counted(),
        Customer.member_since.is_not(None),
        recruiter,
        Order.placed_at >= Customer.member_since,
    )


async def attribute_orders(
    session: AsyncSession,
    order_ids: Sequence[int],
    rule: str,
    window_days: int,
    *,
    now: datetime | None = None,
) -> int:
    """Attribute these orders (an order, or an import batch) under ``rule`` (first_touch,
    last_touch) and ``window_days`` (0: for life; N: orders placed less than N days after
    the member's recruitment), recording both on each row; returns the rows written.

    Decided once and kept: an order already attributed keeps its row (a retry, or a rule
    changed since). One statement for life, two with a window (its cut-off is computed
    here rather than with each engine's own date arithmetic), however many orders."""
    AttributionPolicy(rule, window_days)  # validates
    ids = sorted(set(order_ids))
    if not ids:
        return 0
    if window_days:
        window = timedelta(days=window_days)
        candidates = await session.execute(
            select(Order.id, Order.placed_at, Customer.member_since)
            .join(Customer, Customer.id == Order.customer_id)
            .where(Order.id.in_(ids), Customer.member_since.is_not(None))
        )
        ids = [
            order_id
            for order_id, placed_at, member_since in candidates
            if placed_at < member_since + window
        ]
        if not ids:
            return 0
    chosen = _attribution_select(ids, rule, window_days).add_columns(
        literal(now or utcnow(), UTCDateTime()).label("created_at")
    )
    stmt = (
        _insert(session)(OrderAttribution)
        .from_select(
            [
                "order_id",
                "customer_id",
                "partner_id",
                "store_id",
                "guide_id",
                "rule",
                "window_days",
                "placed_at",
                "created_at",
            ],
            chosen,
        )
        .on_conflict_do_nothing(index_elements=[OrderAttribution.order_id])
    )
    written = await session.execute(stmt, execution_options={"synchronize_session": False})
    return _written(written)


# --- the order hook and the merge step -------------------------------------------------------

# Changes that only add or complete counted orders: nobody loses their last one, so the rows
# are upserted without looking for rows to remove. Any other change (cancel, expiry, refund,
# and whatever is added later) may empty a row.
_ONLY_ADDS = frozenset({OrderChange.CREATED, OrderChange.COMPLETED, OrderChange.IMPORTED})


@dataclass(frozen=True, slots=True)
class MetricsAndAttribution:
    """The reaction to orders (api/wiring.py): keep the changed customers' metrics current
    and attribute new orders under ``policy``: a fixed number of statements per call, for
    one order or an import batch (at most five: an import batch under a window)."""

    policy: AttributionPolicy

    async def __call__(self, session: AsyncSession, changed: OrdersChanged) -> None:
        if not changed.customer_ids:
            return
        customers = changed.customer_ids
        # Import batches (and the orders an import withdraws) hold no customer lock: claim.
        imported = changed.change in (OrderChange.IMPORTED, OrderChange.WITHDRAWN)
        if imported:
            # The buyers' rows, created empty where missing (``_claim``): what is left empty
            # (a buyer merged meanwhile) the refresh removes.
            await _claim(session, _for_ids(customers), changed.now)
        await refresh_customer_metrics(
            session,
            customers,
            prune=imported or changed.change not in _ONLY_ADDS,
            now=changed.now,
        )
        if changed.change in (OrderChange.CREATED, OrderChange.IMPORTED):
            await attribute_orders(
                session,
                changed.order_ids,
                self.policy.rule,
                self.policy.window_days,
                now=changed.now,
            )


class MetricsMergeStep:
    """After the orders moved to the survivor (the "orders" step: steps run in name order,
    and this name sorts after it): their attributions follow, keeping whom they count for,
    the survivor's metrics are recomputed and the merged customers' rows removed."""

    name = "orders.metrics"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        moving = await plan.session.scalar(
            select(func.count())
            .select_from(OrderAttribution)
            .where(OrderAttribution.customer_id.in_(plan.source_ids))
        )
        if not moving:
            return [], []
        plural = "s" if moving != 1 else ""
        return [
            MergeMove(
                "attributions",
                moving,
                f"{moving} attributed order{plural} (still counting for their store and guide)",
            )
        ], []

    async def apply(self, plan: MergePlan) -> None:
        # The metrics rows first, in ascending id order like a rebuild's claim: deleting the
        # source's row before upserting the (usually lower-id) target's deadlocked with one.
        await _claim(plan.session, _for_ids(sorted([plan.target_id, *plan.source_ids])), plan.now)
        await plan.session.execute(
            update(OrderAttribution)
            .where(OrderAttribution.customer_id.in_(plan.source_ids))
            .values(customer_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
        await refresh_customer_metrics(
            plan.session, [plan.target_id, *plan.source_ids], now=plan.now
        )


# --- RFM ---------------------------------------------------------------------------------------

QUINTILES = 5

# The R/F segment map (the usual RFM grid), recency score down, frequency score across:
#
#   R\F  1               2                   3                   4            5
#   5    new             potential_loyalist  potential_loyalist  champions    champions
#   4    promising       potential_loyalist  potential_loyalist  loyal        loyal
#   3    about_to_sleep  about_to_sleep      need_attention      loyal        loyal
#   2    hibernating     hibernating         at_risk             at_risk      cannot_lose
#   1    lost            hibernating         at_risk             at_risk      cannot_lose
#
# Monetary is scored too but, as usual, does not pick the segment (it tracks frequency).
RFM_SEGMENTS: tuple[tuple[frozenset[int], frozenset[int], str], ...] = (
    (frozenset({5}), frozenset({4, 5}), "champions"),
    (frozenset({3, 4}), frozenset({4, 5}), "loyal"),
    (frozenset({4, 5}), frozenset({2, 3}), "potential_loyalist"),
    (frozenset({5}), frozenset({1}), "new"),
    (frozenset({4}), frozenset({1}), "promising"),
    (frozenset({3}), frozenset({3}), "need_attention"),
    (frozenset({3}), frozenset({1, 2}), "about_to_sleep"),
    (frozenset({1, 2}), frozenset({3, 4}), "at_risk"),
    (frozenset({1, 2}), frozenset({5}), "cannot_lose"),
    (frozenset({1}), frozenset({1}), "lost"),
    (frozenset({1, 2}), frozenset({1, 2}), "hibernating"),  # after "lost": first match wins
)


def rfm_segment(recency: int, frequency: int) -> str:
    """The segment of an R and F score (1..5), per the map above."""
    for r, f, name in RFM_SEGMENTS:
        if recency in r and frequency in f:
            return name
    raise ValueError(f"RFM scores are 1..{QUINTILES}: got R={recency}, F={frequency}")


def _quintile(order_by: Any) -> Any:
    """1..5 by position: 1 + ⌊5 × (rank - 1) / n⌋, rank counting from the lowest value.
    Ties share the rank of the first of them, so equal values always get the same score
    (the score where their group starts), whatever order rows come in; with distinct
    values each fifth gets one score."""
    return 1 + ((func.rank().over(order_by=order_by) - 1) * QUINTILES) // func.count().over()


async def score_rfm(session: AsyncSession, now: datetime) -> int:
    """Score every row of ``customer_metrics`` (live customers with counted orders) in one
    statement: R by the last order (the more recent, the higher), F by orders_count, M by
    total_spent, each 1..5 by quintile (``_quintile``: ties share a score), and the R/F
    segment. Returns the customers scored."""
    scores = select(
        CustomerMetrics.customer_id,
        _quintile(CustomerMetrics.last_order_at).label("r"),
        _quintile(CustomerMetrics.orders_count).label("f"),
        _quintile(CustomerMetrics.total_spent).label("m"),
    ).subquery("scores")
    segment = case(
        *(
            (and_(scores.c.r.in_(sorted(r)), scores.c.f.in_(sorted(f))), name)
            for r, f, name in RFM_SEGMENTS
        ),
    )
    stmt = (
        update(CustomerMetrics)
        .where(CustomerMetrics.customer_id == scores.c.customer_id)
        .values(
            rfm_recency=scores.c.r,
            rfm_frequency=scores.c.f,
            rfm_monetary=scores.c.m,
            rfm_segment=segment,
            rfm_scored_at=now,
        )
    )
    scored = await session.execute(stmt, execution_options={"synchronize_session": False})
    return _written(scored)
