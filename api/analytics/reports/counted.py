"""What every report reads: the counted orders of the customers acquired in a range (with
their revenue and gross margin), who may see which rows, and sums in one currency."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CTE, ColumnElement, and_, case, exists, false, func, null, select, true
from sqlalchemy.orm import aliased

from api.analytics.business_calendar import Period, epoch_sql, period_sql
from api.analytics.sql import in_cents
from api.auth.principal import Principal
from api.customers.customer_filter import customers_query
from api.customers.models import Customer
from api.orders.models import COUNTED_STATUSES, Order, OrderLine

# --- who sees what -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """Narrows a customer-based report to the customers recruited by a partner or at a store
    (within what the principal may see: another partner's id finds nobody)."""

    partner_id: int | None = None
    store_id: int | None = None


def owned_by(principal: Principal, partner: Any, store: Any) -> ColumnElement[bool]:
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


def order_amounts() -> tuple[ColumnElement[int], ColumnElement[int], Any]:
    """An order's revenue and gross margin in cents, and the refunded-cost subquery they
    need outer-joined on ``order_id``: the cost of the refunded units, from their lines
    (only lines with refunds are read)."""
    refunded_cost = (
        select(
            OrderLine.order_id,
            func.sum(in_cents(OrderLine.unit_cost) * OrderLine.refunded_quantity).label("cost"),
        )
        .where(OrderLine.refunded_quantity > 0)
        .group_by(OrderLine.order_id)
        .subquery("refunded_cost")
    )
    revenue = in_cents(Order.total) - in_cents(Order.refunded_amount)
    kept_cost = in_cents(Order.cost_total) - func.coalesce(refunded_cost.c.cost, 0)
    return revenue, revenue - kept_cost, refunded_cost


def acquired_orders(
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
    revenue, margin, refunded_cost = order_amounts()
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
            epoch_sql(Order.placed_at, dialect).label("epoch"),
            func.row_number()
            .over(partition_by=Order.customer_id, order_by=(Order.placed_at, Order.id))
            .label("seq"),
            Customer.recruited_partner_id.label("partner_id"),
            Customer.recruited_store_id.label("store_id"),
            Customer.recruited_guide_id.label("guide_id"),
            Customer.level_id,
            (period_sql(Order.placed_at, period, dialect) if period else null()).label("period"),
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


def cents_sum(column: Any, currency_column: Any, currency: str) -> ColumnElement[int]:
    """The sum of cents over the rows in ``currency`` (other currencies add nothing: nothing
    is converted)."""
    return func.coalesce(func.sum(case((currency_column == currency, column), else_=0)), 0)


def count_in(column: Any, currency_column: Any, currency: str) -> ColumnElement[int]:
    return func.count(case((currency_column == currency, column)))


def group_order(row: Any) -> tuple[bool, Any]:
    """Rows in key order (channels by name), the group without a key last."""
    key = row.key
    return key is None, key.value if isinstance(key, enum.Enum) else key
