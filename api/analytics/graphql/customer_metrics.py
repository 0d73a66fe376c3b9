"""``Customer.metrics``: a customer's counted orders and RFM scores, for callers with
analytics:read (the customers domain wires ``customer_metrics`` into its type)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.analytics import arguments, loaders
from api.analytics import models as analytics_models
from api.analytics.graphql.inputs import (
    ANALYTICS_READ,
    HQ_ONLY,
    sees_cost,
)
from api.graphql.context import Info
from api.graphql.money import Money


@strawberry.type(description="RFM scores (quintiles, 5 = best) from the last scoring run.")
class CustomerRfm:
    recency: int | None
    frequency: int | None
    monetary: int | None
    segment: str | None
    scored_at: datetime | None


@strawberry.type(description="A customer's counted orders, kept current with every order.")
class CustomerMetrics:
    orders_count: int
    total_spent: Money
    gross_margin: Money | None = strawberry.field(description="Of the counted orders." + HQ_ONLY)
    avg_order_value: Money
    first_order_at: datetime | None
    last_order_at: datetime | None
    first_order_channel: str | None
    rfm: CustomerRfm | None = strawberry.field(description="Null until scored.")

    @classmethod
    def from_row(
        cls, row: analytics_models.CustomerMetrics, *, cost_visible: bool
    ) -> CustomerMetrics:
        currency = arguments.DEFAULT_CURRENCY
        return cls(
            orders_count=row.orders_count,
            total_spent=Money(amount=row.total_spent, currency=currency),
            gross_margin=Money(amount=row.gross_margin, currency=currency)
            if cost_visible
            else None,
            avg_order_value=Money(amount=row.avg_order_value, currency=currency),
            first_order_at=row.first_order_at,
            last_order_at=row.last_order_at,
            first_order_channel=row.first_order_channel,
            rfm=CustomerRfm(
                recency=row.rfm_recency,
                frequency=row.rfm_frequency,
                monetary=row.rfm_monetary,
                segment=row.rfm_segment,
                scored_at=row.rfm_scored_at,
            )
            if row.rfm_scored_at is not None
            else None,
        )


async def customer_metrics(info: Info, customer_pk: int) -> CustomerMetrics | None:
    """``Customer.metrics``: batched over a page of customers (one statement). Metrics are
    analytics: null without analytics:read, and for members, who must not read how the brand
    rates them ("hibernating", "cannot_lose") even about themselves."""
    principal = info.context.principal
    if principal.is_member or not principal.has_scope(ANALYTICS_READ):
        return None
    row = await info.context.loader(loaders.metrics_by_customer).load(customer_pk)
    return CustomerMetrics.from_row(row, cost_visible=sees_cost(info)) if row else None
