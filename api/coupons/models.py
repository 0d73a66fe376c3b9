"""Coupons (优惠券): templates, the coupons claimed from them, and per-person claim counts."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class CouponKind(enum.Enum):
    AMOUNT_OFF_THRESHOLD = "amount_off_threshold"  # 满减: amount off over a threshold
    PERCENT_OFF = "percent_off"  # 折扣: percent off, with a cap
    FIXED_OFF = "fixed_off"  # 直减: fixed amount off
    EXCHANGE = "exchange"  # 兑换: exchanged for a SKU


class CouponChannel(enum.Enum):
    """Where a coupon may be claimed or used (线上领券线下核销: claim online, use offline)."""

    ONLINE = "online"
    OFFLINE = "offline"
    BOTH = "both"


class TemplateStatus(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"


class Stacking(enum.Enum):
    EXCLUSIVE = "exclusive"  # alone on an order
    STACKABLE = "stackable"  # with other stackable coupons (one per template)


class CancelPolicy(enum.Enum):
    """What an order cancel does to a coupon it used."""

    RESTORE = "restore"
    VOID = "void"


class CouponStatus(enum.Enum):
    CLAIMED = "claimed"
    REDEEMED = "redeemed"
    VOIDED = "voided"


class CouponOrigin(enum.Enum):
    CLAIM = "claim"  # the member claimed it
    GRANT = "grant"  # staff or a campaign gave it


class CouponTemplate(Base):
    __tablename__ = "coupon_template"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[CouponKind] = mapped_column(enum_column(CouponKind))
    status: Mapped[TemplateStatus] = mapped_column(
        enum_column(TemplateStatus), default=TemplateStatus.ACTIVE
    )
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    threshold_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    discount_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    percent_off: Mapped[int | None]
    max_discount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    exchange_sku: Mapped[str | None] = mapped_column(String(64))
    claim_channel: Mapped[CouponChannel] = mapped_column(enum_column(CouponChannel))
    use_channel: Mapped[CouponChannel] = mapped_column(enum_column(CouponChannel))
    claim_starts_at: Mapped[datetime | None]
    claim_ends_at: Mapped[datetime | None]
    # Validity: fixed dates, or ``valid_days`` after the claim.
    valid_from: Mapped[datetime | None]
    valid_until: Mapped[datetime | None]
    valid_days: Mapped[int | None]
    total_stock: Mapped[int] = mapped_column(BigInteger)
    issued: Mapped[int] = mapped_column(BigInteger, default=0)
    per_person_limit: Mapped[int] = mapped_column(default=1)
    stacking: Mapped[Stacking] = mapped_column(enum_column(Stacking), default=Stacking.EXCLUSIVE)
    cancel_policy: Mapped[CancelPolicy] = mapped_column(
        enum_column(CancelPolicy), default=CancelPolicy.RESTORE
    )
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Behind the conditional ``issued < total_stock`` update: a lost guard fails here
    # instead of issuing beyond the stock.
    __table_args__ = (
        CheckConstraint("issued >= 0", name="issued_not_negative"),
        CheckConstraint("issued <= total_stock", name="issued_within_stock"),
    )


class CouponTemplateStore(Base):
    """Limits where a template may be used: to these stores (none listed: any store)."""

    __tablename__ = "coupon_template_store"

    template_id: Mapped[int] = mapped_column(
        ForeignKey("coupon_template.id", ondelete="CASCADE"), primary_key=True
    )
    store_id: Mapped[int] = mapped_column(ForeignKey("store.id"), primary_key=True)


class CouponTemplatePartner(Base):
    """Limits where a template may be used: to these partners' stores."""

    __tablename__ = "coupon_template_partner"

    template_id: Mapped[int] = mapped_column(
        ForeignKey("coupon_template.id", ondelete="CASCADE"), primary_key=True
    )
    partner_id: Mapped[int] = mapped_column(ForeignKey("partner.id"), primary_key=True)


class Coupon(Base):
    __tablename__ = "coupon"

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("coupon_template.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[CouponStatus] = mapped_column(enum_column(CouponStatus))
    origin: Mapped[CouponOrigin] = mapped_column(enum_column(CouponOrigin))
    claim_channel: Mapped[str] = mapped_column(String(32))
    claim_store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    redeemed_at: Mapped[datetime | None]
    redeemed_store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    redeemed_by: Mapped[str | None] = mapped_column(String(100))
    # What it was used on (an order id), so a cancel can restore or void it.
    redeemed_for: Mapped[str | None] = mapped_column(String(100))
    voided_at: Mapped[datetime | None]
    # A client-supplied key that makes a retried claim return the first coupon.
    claim_key: Mapped[str | None] = mapped_column(String(100), unique=True)

    __table_args__ = (
        Index("ix_coupon_customer_id_id", "customer_id", "id"),
        Index("ix_coupon_template_id_status", "template_id", "status"),
        # An order's cancel or refund finds the coupons it used by this.
        Index("ix_coupon_redeemed_for", "redeemed_for"),
    )


class CouponClaimCount(Base):
    """How many coupons of a template one person holds: the per-person limit's guard.

    One row per (person, template), raised by a conditional update; a merge adds the source
    person's counts to the target, so the limit counts the person, not the identity.
    """

    __tablename__ = "coupon_claim_count"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("coupon_template.id"), primary_key=True)
    claimed: Mapped[int] = mapped_column(default=0)

    # A merge may add counts beyond the limit (the person keeps what both held), so only
    # the floor is the database's to hold.
    __table_args__ = (CheckConstraint("claimed >= 0", name="claimed_not_negative"),)
