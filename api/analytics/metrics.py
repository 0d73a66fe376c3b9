"""Per-customer metrics (``customer_metrics``) kept in step with every order change.

Metrics are derived data: a customer's row is recomputed from their counted orders
(``COUNTED_STATUSES``, the customer live) by ONE select, ``_metrics_select``, whenever an
order of theirs changes or a merge moves orders onto them (both in
``api/analytics/reactions.py``). ``rebuild_customer_metrics`` runs that same select over a
range of customers, and ``metrics_differences`` compares it with the table (``qudao metrics
rebuild --check``), so the incremental table and a rebuild cannot disagree by construction.

Money is summed in whole cents: SQLite keeps Numeric as floating point, where a sum of
prices drifts (0.1 + 0.2); converted to integer cents per order first, the sums, the average
(rounded half up in integer arithmetic) and the margin are exact, and the same on both
engines.

Concurrency: each recomputation reads the orders only once every other writer of the row has
committed, so a slower one never overwrites a newer row with what it computed earlier:
orderCreate, the pickup lifecycle and merges hold the customer's lock (their lock order),
and an import batch and a rebuild claim the metrics rows first (``claim_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
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
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.models import CustomerMetrics
from api.analytics.sql import counted_of_live_customers, in_cents, insert_for, rows_written
from api.customers.models import Customer, CustomerStatus
from api.db import UTCDateTime, utcnow
from api.orders.models import Order, OrderLine, OrderStatus

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

METRICS_CURRENCY = "CNY"

CustomerFilter = Callable[[Any], ColumnElement[bool]]


def _yuan(cents: Any) -> ColumnElement[Any]:
    """Whole cents back to Numeric(14, 2), as the column itself would hold them (SQLite: the
    same float a bound Decimal becomes, an integer when whole)."""
    return cast(cents / 100, Numeric(14, 2))


def for_ids(customer_ids: Sequence[int]) -> CustomerFilter:
    return lambda column: column.in_(customer_ids)


def for_range(ids: range | None) -> CustomerFilter:
    if ids is None:
        return lambda column: true()
    return lambda column: and_(column >= ids.start, column < ids.stop)


def _metrics_select(customers: CustomerFilter) -> Select[Any]:
    """customer_id and every metric column, one row per live customer (of those the filter
    takes) with at least one counted order. Used by the refresh, the rebuild and the check."""
    # Cost given back by refunds: Σ unit_cost × refunded_quantity. Among counted orders only
    # a partially refunded one has refunded lines, so the lines are read for those alone.
    returned_cost = (
        select(
            func.coalesce(func.sum(in_cents(OrderLine.unit_cost) * OrderLine.refunded_quantity), 0)
        )
        .where(OrderLine.order_id == Order.id)
        .scalar_subquery()
    )
    # Money columns are CNY, the brand's currency: an order in another currency counts as an
    # order (count, dates, channel) but adds no money, rather than adding HKD to CNY.
    in_cny = Order.currency == METRICS_CURRENCY
    revenue = case((in_cny, in_cents(Order.total) - in_cents(Order.refunded_amount)), else_=0)
    margin = revenue - case(
        (
            in_cny,
            in_cents(Order.cost_total)
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
        .where(*counted_of_live_customers(), customers(Order.customer_id))
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


async def claim_rows(session: AsyncSession, customers: CustomerFilter, now: datetime) -> None:
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
    stmt = insert_for(session)(CustomerMetrics).from_select(
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
        .where(Order.customer_id == CustomerMetrics.customer_id, *counted_of_live_customers())
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
    stmt = insert_for(session)(CustomerMetrics).from_select(
        [*METRIC_COLUMNS_WITH_ID, "updated_at"], computed
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[CustomerMetrics.customer_id],
        set_={name: stmt.excluded[name] for name in (*METRIC_COLUMNS, "updated_at")},
    )
    written = await session.execute(stmt, execution_options={"synchronize_session": False})
    return rows_written(written)


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
    customers = for_ids(ids)
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
    (``claim_rows``), so an order committing meanwhile is either seen or recomputed after."""
    customers = for_range(ids)
    now = now or utcnow()
    await claim_rows(session, customers, now)
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
    customers = for_range(ids)
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
