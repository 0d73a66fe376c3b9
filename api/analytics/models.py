"""Per-customer metrics, order attribution and channel spend."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, utcnow


class CustomerMetrics(Base):
    """One row per live customer with at least one counted order; what segments filter on.

    Kept current in the transaction of every order change (create, pickup, cancel, expiry,
    refund, import) and merge by recomputing the customer's row from their orders; the
    rebuild command recomputes every row with the same SQL, so the two cannot disagree.
    RFM scores are relative to everyone and are set by the scoring run, not per order.
    """

    __tablename__ = "customer_metrics"
    __table_args__ = (
        Index("ix_customer_metrics_last_order", "last_order_at"),
        Index("ix_customer_metrics_orders", "orders_count"),
        Index("ix_customer_metrics_spent", "total_spent"),
    )

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    orders_count: Mapped[int] = mapped_column(default=0)
    total_spent: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    gross_margin: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    avg_order_value: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    first_order_at: Mapped[datetime | None]
    second_order_at: Mapped[datetime | None]  # for repurchase windows
    last_order_at: Mapped[datetime | None]
    first_order_channel: Mapped[str | None] = mapped_column(String(32))
    rfm_recency: Mapped[int | None] = mapped_column(SmallInteger)  # 1..5, 5 = most recent
    rfm_frequency: Mapped[int | None] = mapped_column(SmallInteger)
    rfm_monetary: Mapped[int | None] = mapped_column(SmallInteger)
    rfm_segment: Mapped[str | None] = mapped_column(String(32), index=True)
    rfm_scored_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OrderAttribution(Base):
    """The store, guide and partner an order counts for (lifetime attribution, 终身归属).

    Decided when the order is taken, under the rule configured then, and kept: a rebate
    computed on it must not move when the rule changes later. A merge moves the rows to the
    surviving customer but keeps who they were attributed to.
    """

    __tablename__ = "order_attribution"
    __table_args__ = (
        Index("ix_order_attribution_store", "store_id", "placed_at"),
        Index("ix_order_attribution_guide", "guide_id", "placed_at"),
        Index("ix_order_attribution_partner", "partner_id", "placed_at"),
    )

    order_id: Mapped[int] = mapped_column(
        ForeignKey("customer_order.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    guide_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    rule: Mapped[str] = mapped_column(String(32))  # first_touch / last_touch
    window_days: Mapped[int | None]  # None: lifetime
    placed_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChannelSpend(Base):
    """Money spent acquiring customers on a channel in a period (for CAC and ROI)."""

    __tablename__ = "channel_spend"
    __table_args__ = (
        UniqueConstraint("recorded_scope", "idempotency_key", name="uq_channel_spend_key"),
        Index("ix_channel_spend_period", "channel", "period_start"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    period_start: Mapped[date]
    period_end: Mapped[date]  # inclusive
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    note: Mapped[str | None] = mapped_column(String(200))
    recorded_scope: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    request_digest: Mapped[str] = mapped_column(String(64))
    recorded_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
