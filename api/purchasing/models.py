"""Price lists (价格表), partner credit (授信) and purchase orders (采购单).

Money here is integer cents (``*_cents``) in the row's currency: a price, a line total and a
credit amount are exact integers, so sums and the credit guard need no rounding. The one
rounding (a quantity break's percentage) is half-up to the cent, in ``pricing.py``.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow
from api.partners.models import PartnerTier, PartnerType


class PriceList(Base):
    """Prices for the partners it applies to, valid from ``valid_from`` until ``valid_until``.

    Who it applies to, most specific first: one partner (a contract price list), a tier and a
    partner type, a tier, a partner type. Its items never change: HQ publishes a new list to
    change a price, so a price a purchase order copied can always be traced to its list.
    """

    __tablename__ = "price_list"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    tier: Mapped[PartnerTier | None] = mapped_column(enum_column(PartnerTier))
    partner_type: Mapped[PartnerType | None] = mapped_column(enum_column(PartnerType))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint(
            "partner_id IS NOT NULL OR tier IS NOT NULL OR partner_type IS NOT NULL",
            name="applies_to_someone",
        ),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="valid_window"),
        Index("ix_price_list_partner_id", "partner_id"),
    )


class PriceListItem(Base):
    """One SKU's price on a list, with its minimum order quantity and pack size (箱规)."""

    __tablename__ = "price_list_item"

    price_list_id: Mapped[int] = mapped_column(
        ForeignKey("price_list.id", ondelete="CASCADE"), primary_key=True
    )
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"), primary_key=True)
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)
    min_quantity: Mapped[int] = mapped_column(default=1)
    pack_size: Mapped[int] = mapped_column(default=1)

    __table_args__ = (
        Index("ix_price_list_item_sku_id", "sku_id"),
        CheckConstraint("unit_price_cents >= 0", name="price_not_negative"),
        CheckConstraint("min_quantity >= 1", name="min_quantity_positive"),
        CheckConstraint("pack_size >= 1", name="pack_size_positive"),
    )


class PriceBreak(Base):
    """A quantity break on a list's SKU: from ``min_quantity`` units, ``discount_bp`` basis
    points (1/100 of a percent) off the unit price."""

    __tablename__ = "price_break"

    price_list_id: Mapped[int] = mapped_column(primary_key=True)
    sku_id: Mapped[int] = mapped_column(primary_key=True)
    min_quantity: Mapped[int] = mapped_column(primary_key=True)
    discount_bp: Mapped[int]

    __table_args__ = (
        # A break belongs to an item of the list, and goes with it.
        ForeignKeyConstraint(
            ["price_list_id", "sku_id"],
            ["price_list_item.price_list_id", "price_list_item.sku_id"],
            ondelete="CASCADE",
        ),
        CheckConstraint("min_quantity >= 2", name="break_min_quantity"),
        CheckConstraint("discount_bp > 0 AND discount_bp < 10000", name="discount_in_range"),
    )


class PartnerCredit(Base):
    """A partner's credit line (授信): what it may owe the brand at once.

    ``used_cents`` is the total of its submitted, approved and shipped purchase orders not yet
    paid or undone. Every change is a conditional UPDATE whose guard is the CHECK below
    (``used <= limit``), so concurrent submissions can never overdraw it.
    """

    __tablename__ = "partner_credit"

    partner_id: Mapped[int] = mapped_column(ForeignKey("partner.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    limit_cents: Mapped[int] = mapped_column(BigInteger)
    used_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    payment_terms_days: Mapped[int] = mapped_column(default=30)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint("limit_cents >= 0", name="limit_not_negative"),
        CheckConstraint("used_cents >= 0", name="used_not_negative"),
        CheckConstraint("used_cents <= limit_cents", name="used_within_limit"),
    )


class PurchaseOrderStatus(enum.Enum):
    DRAFT = "draft"  # the partner is still editing it; holds no credit
    SUBMITTED = "submitted"  # holds credit; waits for HQ
    APPROVED = "approved"  # HQ accepted it; lines not fully allocated are back-ordered
    ALLOCATED = "allocated"  # every line's units are reserved at one HQ warehouse
    REJECTED = "rejected"  # HQ refused it; credit given back
    SHIPPED = "shipped"  # left an HQ warehouse (stock moved out there)
    RECEIVED = "received"  # arrived at the partner's location (stock moved in there)
    CLOSED = "closed"  # received and paid; credit given back
    CANCELLED = "cancelled"  # withdrawn before shipment; credit given back


class PurchaseOrder(Base):
    """A partner's order for stock from the brand (采购单), delivered to one of its locations."""

    __tablename__ = "purchase_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partner.id"))
    store_id: Mapped[int] = mapped_column(ForeignKey("store.id"))  # where it is delivered
    status: Mapped[PurchaseOrderStatus] = mapped_column(enum_column(PurchaseOrderStatus))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    total_cents: Mapped[int] = mapped_column(BigInteger)
    # Scoped to the partner: a retried create with the same key returns the first order.
    idempotency_key: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(100))
    rejection_reason: Mapped[str | None] = mapped_column(String(500))
    shipped_at: Mapped[datetime | None]
    ship_from_store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("partner_id", "idempotency_key"),
        Index("ix_purchase_order_partner_id_id", "partner_id", "id"),
        Index("ix_purchase_order_status_id", "status", "id"),
        CheckConstraint("total_cents >= 0", name="total_not_negative"),
    )


class PurchaseOrderLine(Base):
    """One SKU of a purchase order, priced when the order was created: the list, the break
    and the unit price are copied here, so a later price change never moves it."""

    __tablename__ = "purchase_order_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    purchase_order_id: Mapped[int] = mapped_column(
        ForeignKey("purchase_order.id", ondelete="CASCADE")
    )
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    quantity: Mapped[int] = mapped_column(BigInteger)
    price_list_id: Mapped[int] = mapped_column(ForeignKey("price_list.id"))
    list_price_cents: Mapped[int] = mapped_column(BigInteger)
    discount_bp: Mapped[int] = mapped_column(default=0)
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)
    line_total_cents: Mapped[int] = mapped_column(BigInteger)
    # Units reserved for it at the order's warehouse (``ship_from_store_id``) by allocation;
    # the rest is back-ordered until an allocation run finds stock.
    allocated: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        UniqueConstraint("purchase_order_id", "sku_id"),
        Index("ix_purchase_order_line_sku_id", "sku_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("allocated >= 0 AND allocated <= quantity", name="allocated_in_range"),
        CheckConstraint("line_total_cents = unit_price_cents * quantity", name="line_total"),
    )
