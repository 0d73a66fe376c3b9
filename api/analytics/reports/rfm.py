"""The RFM distribution: customers per segment, as the last scoring run left them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import cents, yuan
from api.analytics.business_calendar import DAY_SECONDS, epoch_sql
from api.analytics.models import CustomerMetrics
from api.analytics.reports.counted import Audience
from api.analytics.sql import dialect_of, in_cents
from api.auth.principal import Principal
from api.customers.customer_filter import customers_query
from api.customers.models import Customer


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
    dialect = dialect_of(session)
    stmt = (
        customers_query(principal)
        .with_only_columns(
            CustomerMetrics.rfm_segment,
            func.count(),
            func.sum(epoch_sql(CustomerMetrics.last_order_at, dialect)),
            func.count(CustomerMetrics.last_order_at),
            func.sum(CustomerMetrics.orders_count),
            func.sum(in_cents(CustomerMetrics.total_spent)),
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
            (Decimal(now_epoch * dated - int(epochs)) / (dated * DAY_SECONDS)).quantize(
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
                cents(yuan(spent) / customers),
                scored_at,
            )
        )
    rows.sort(key=lambda r: (-r.customers, r.segment is None, r.segment or ""))
    return rows
