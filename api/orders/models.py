"""Orders, their lines, the coupons they used, refunds and the status history."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from api.catalog.models import SalesChannel
from api.db import Base, enum_column, utcnow


class Fulfillment(enum.Enum):
    DELIVERY = "delivery"  # shipped (from a location when one is named)
    PICKUP = "pickup"  # 线上下单、门店自提: stock reserved at the store until picked up
    IN_STORE = "in_store"  # sold and handed over at the counter (POS)


class OrderStatus(enum.Enum):
    PLACED = "placed"  # paid; a pickup order waits for the store to prepare it
    READY_FOR_PICKUP = "ready_for_pickup"
    COMPLETED = "completed"  # picked up, sold at the counter, or a delivery order
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not picked up in time
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


OPEN_PICKUP = (OrderStatus.PLACED, OrderStatus.READY_FOR_PICKUP)
# The source type of an order's stock movements, points and spend (their source id is the
# order's id): what placing writes and the lifecycle completes or undoes.
ORDER_SOURCE = "order"
# Orders that count as a purchase in metrics, segments, attribution and referrals: paid and
# not undone (a pickup order counts from payment; cancelled, expired and wholly refunded
# orders do not). Their revenue is ``total - refunded_amount``.
COUNTED_STATUSES = (
    OrderStatus.PLACED,
    OrderStatus.READY_FOR_PICKUP,
    OrderStatus.COMPLETED,
    OrderStatus.PARTIALLY_REFUNDED,
)
_OPEN_PICKUP_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in OPEN_PICKUP))


class Order(Base):
    """One order. Money columns are Decimal yuan in ``currency``; totals are fixed when the
    order is created and never recomputed (refunds are their own rows).

    ``partner_id`` is the seller (None: HQ's own sale); ``reported_by_partner`` marks sales a
    partner reported itself (its POS, its marketplace shop), which is where price bands are
    recorded as violations instead of refused.
    """

    __tablename__ = "customer_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[SalesChannel] = mapped_column(enum_column(SalesChannel))
    fulfillment: Mapped[Fulfillment] = mapped_column(enum_column(Fulfillment))
    status: Mapped[OrderStatus] = mapped_column(enum_column(OrderStatus))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    reported_by_partner: Mapped[bool] = mapped_column(default=False)
    # The staff member or system that took the order (a guide at a POS, an integration).
    taken_by: Mapped[str | None] = mapped_column(String(100))
    delivery_region_code: Mapped[str | None] = mapped_column(String(6))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    subtotal: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    coupon_discount: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    points_used: Mapped[int] = mapped_column(BigInteger, default=0)
    points_discount: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    total: Mapped[Decimal] = mapped_column(Numeric(14, 2))  # what the customer paid
    cost_total: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    refunded_amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    # Idempotency: a retry with the same key (within the caller's scope) returns this order.
    # ``request_digest`` tells a retry from a different request reusing the key.
    idempotency_scope: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # A marketplace order (imported): the marketplace's own order id.
    external_id: Mapped[str | None] = mapped_column(String(64))
    # Pickup: a 6-digit code, unique among the store's open pickups, and when it lapses.
    pickup_code: Mapped[str | None] = mapped_column(String(6))
    pickup_expires_at: Mapped[datetime | None]
    placed_at: Mapped[datetime] = mapped_column(default=utcnow)  # when the customer paid
    ready_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]  # cancelled or expired
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key"),
        UniqueConstraint("channel", "external_id"),
        Index("ix_order_customer_id_id", "customer_id", "id"),
        Index("ix_order_partner_id_id", "partner_id", "id"),
        Index("ix_order_store_id_status_id", "store_id", "status", "id"),
        Index("ix_order_status_pickup_expires_at", "status", "pickup_expires_at"),
        Index(
            "uq_order_open_pickup_code",
            "store_id",
            "pickup_code",
            unique=True,
            sqlite_where=text(_OPEN_PICKUP_SQL),
            postgresql_where=text(_OPEN_PICKUP_SQL),
        ),
        CheckConstraint("total >= 0", name="total_not_negative"),
        CheckConstraint("refunded_amount <= total", name="refund_within_total"),
    )


class OrderLine(Base):
    """A line, with its share of the order's discounts: ``total`` is what was paid for it,
    so a refund of the line gives back exactly that."""

    __tablename__ = "order_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("customer_order.id", ondelete="CASCADE"))
    line_no: Mapped[int]
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    sku_code: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"))
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    unit_cost: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    subtotal: Mapped[Decimal] = mapped_column(Numeric(14, 2))  # unit_price * quantity
    discount: Mapped[Decimal] = mapped_column(Numeric(14, 2))  # coupons + points, allocated
    total: Mapped[Decimal] = mapped_column(Numeric(14, 2))  # subtotal - discount
    refunded_quantity: Mapped[int] = mapped_column(default=0)

    __table_args__ = (
        UniqueConstraint("order_id", "line_no"),
        Index("ix_order_line_sku_id", "sku_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "refunded_quantity >= 0 AND refunded_quantity <= quantity", name="refund_within_line"
        ),
    )


class OrderCoupon(Base):
    """A coupon an order used, and the discount it gave."""

    __tablename__ = "order_coupon"

    order_id: Mapped[int] = mapped_column(
        ForeignKey("customer_order.id", ondelete="CASCADE"), primary_key=True
    )
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupon.id"), primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("coupon_template.id"))
    code: Mapped[str] = mapped_column(String(32))
    discount: Mapped[Decimal] = mapped_column(Numeric(14, 2))

    __table_args__ = (Index("ix_order_coupon_coupon_id", "coupon_id"),)


class OrderRefund(Base):
    """A refund of a whole order or some of its lines. Idempotent by (order, key)."""

    __tablename__ = "order_refund"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("customer_order.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    request_digest: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    points_reversed: Mapped[int] = mapped_column(BigInteger, default=0)  # earned, taken back
    points_returned: Mapped[int] = mapped_column(BigInteger, default=0)  # used, given back
    reason: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("order_id", "idempotency_key"),)


class OrderRefundLine(Base):
    __tablename__ = "order_refund_line"

    refund_id: Mapped[int] = mapped_column(
        ForeignKey("order_refund.id", ondelete="CASCADE"), primary_key=True
    )
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_line.id"), primary_key=True)
    quantity: Mapped[int]
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    restocked: Mapped[bool] = mapped_column(default=True)


class OrderEvent(Base):
    """The order's history: every status change, who made it and when."""

    __tablename__ = "order_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("customer_order.id", ondelete="CASCADE"))
    status: Mapped[OrderStatus] = mapped_column(enum_column(OrderStatus))
    note: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_order_event_order_id_id", "order_id", "id"),)
