"""Customers (one person across channels), their identities, consents, tags and membership."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class IdentityKind(enum.Enum):
    PHONE = "phone"
    EMAIL = "email"
    WECHAT_UNIONID = "wechat_unionid"
    WECHAT_OPENID = "wechat_openid"  # per app: the value is "<appid>:<openid>"
    WECOM_EXTERNAL_USERID = "wecom_external_userid"
    MARKETPLACE_BUYER = "marketplace_buyer"  # per marketplace: "<marketplace>:<buyer id>"


class ConsentPurpose(enum.Enum):
    MARKETING_MESSAGES = "marketing_messages"
    PROFILING = "profiling"


class CustomerStatus(enum.Enum):
    ACTIVE = "active"
    MERGED = "merged"  # merged into another customer: ``merged_into_id`` redirects


class LevelMetric(enum.Enum):
    SPEND = "spend"  # qualifying spend in the rolling window
    POINTS = "points"  # points earned in the rolling window


class Customer(Base):
    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[CustomerStatus] = mapped_column(
        enum_column(CustomerStatus), default=CustomerStatus.ACTIVE
    )
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    name: Mapped[str | None] = mapped_column(String(100))
    gender: Mapped[str | None] = mapped_column(String(16))
    birthday: Mapped[date | None]
    # Contact details reported by a channel (a marketplace order's phone) but not verified as
    # a login identity; duplicate detection compares them with other customers' identities.
    contact_phone: Mapped[str | None] = mapped_column(String(32), index=True)
    contact_email: Mapped[str | None] = mapped_column(String(254))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The channel of the first contact (marketplace, mini_program, store, ...).
    first_channel: Mapped[str | None] = mapped_column(String(32))
    # Membership (会员). ``member_since`` is None for a customer who has not joined.
    member_since: Mapped[datetime | None]
    # Who recruited the member (归属门店/导购): kept for life, it feeds scorecards and rebates.
    recruited_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    recruited_store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    recruited_guide_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    level_id: Mapped[int | None] = mapped_column(ForeignKey("member_level.id"))
    # A manually granted level is a floor: evaluation never places the member below it.
    manual_level_id: Mapped[int | None] = mapped_column(ForeignKey("member_level.id"))
    # End of the current level's qualification period, and of the grace after it.
    level_period_ends_at: Mapped[datetime | None]
    level_grace_ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_customer_recruited_partner_id_id", "recruited_partner_id", "id"),
        Index("ix_customer_recruited_store_id_id", "recruited_store_id", "id"),
        Index("ix_customer_level_id_id", "level_id", "id"),
        Index("ix_customer_created_at_id", "created_at", "id"),
        Index("ix_customer_merged_into_id", "merged_into_id"),
    )


class CustomerIdentity(Base):
    """One way to recognise a person; unique per kind across all customers."""

    __tablename__ = "customer_identity"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    kind: Mapped[IdentityKind] = mapped_column(enum_column(IdentityKind))
    value: Mapped[str] = mapped_column(String(200))
    # The WeChat unionid an openid was seen with: links per-app openids to one person.
    unionid_hint: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("kind", "value"),)


class CustomerConsent(Base):
    """The latest consent decision per purpose (PIPL), with when and where it was given."""

    __tablename__ = "customer_consent"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    purpose: Mapped[ConsentPurpose] = mapped_column(enum_column(ConsentPurpose), primary_key=True)
    granted: Mapped[bool]
    source: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerTag(Base):
    __tablename__ = "customer_tag"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_customer_tag_tag_customer_id", "tag", "customer_id"),)


class MemberLevel(Base):
    """A member level (会员等级) and the rule that qualifies for it."""

    __tablename__ = "member_level"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    # Higher rank is a better level; rank 0 is the entry level every member starts at.
    rank: Mapped[int] = mapped_column(unique=True)
    metric: Mapped[LevelMetric] = mapped_column(enum_column(LevelMetric))
    threshold: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    window_days: Mapped[int] = mapped_column(default=365)
    grace_days: Mapped[int] = mapped_column(default=30)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MemberLevelChange(Base):
    """The level history: every change, with why."""

    __tablename__ = "member_level_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    from_level_id: Mapped[int | None] = mapped_column(ForeignKey("member_level.id"))
    to_level_id: Mapped[int | None] = mapped_column(ForeignKey("member_level.id"))
    reason: Mapped[str] = mapped_column(String(32))  # join, upgrade, downgrade, manual, merge
    actor: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_member_level_change_customer_id_id", "customer_id", "id"),)


class QualifyingSpend(Base):
    """Spend that counts towards member levels, one row per source (an order, a refund).

    Idempotent by source: a retried order adds nothing. Refunds are negative rows.
    """

    __tablename__ = "qualifying_spend"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("source_type", "source_id"),
        Index("ix_qualifying_spend_customer_id_occurred_at", "customer_id", "occurred_at"),
    )
