"""Referral campaigns, invite codes, referrals and the rewards they paid."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class RewardKind(enum.Enum):
    POINTS = "points"
    COUPON = "coupon"


class ReferralMilestone(enum.Enum):
    REGISTRATION = "registration"  # the invitee registered through the invite
    FIRST_ORDER = "first_order"  # the invitee's first counted order


class ReferralCampaign(Base):
    """The rules: what each milestone pays the inviter, and the limits."""

    __tablename__ = "referral_campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    registration_reward: Mapped[RewardKind | None] = mapped_column(enum_column(RewardKind))
    registration_points: Mapped[int | None]
    registration_template_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_template.id"))
    first_order_reward: Mapped[RewardKind | None] = mapped_column(enum_column(RewardKind))
    first_order_points: Mapped[int | None]
    first_order_template_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_template.id"))
    # Abuse limits: rewarded referrals per inviter (ever, in this campaign), registrations per
    # inviter per day (UTC), and one registration per invitee device and per invitee phone.
    max_rewarded_per_inviter: Mapped[int | None]
    max_registrations_per_day: Mapped[int] = mapped_column(default=20)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InviteCode(Base):
    """A member's invite code in a campaign (one per member and campaign)."""

    __tablename__ = "referral_invite"
    __table_args__ = (UniqueConstraint("campaign_id", "inviter_id", name="uq_invite_inviter"),)

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("referral_campaign.id"))
    inviter_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Referral(Base):
    """Who invited whom. A customer is invited at most once, ever: the first accepted invite
    wins, and a device or a phone registers once per campaign."""

    __tablename__ = "referral"
    __table_args__ = (
        UniqueConstraint("invitee_id", name="uq_referral_invitee"),
        UniqueConstraint("campaign_id", "device_digest", name="uq_referral_device"),
        UniqueConstraint("campaign_id", "phone_digest", name="uq_referral_phone"),
        Index("ix_referral_inviter", "inviter_id", "registered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("referral_campaign.id"))
    code: Mapped[str] = mapped_column(String(16))
    inviter_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    invitee_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    # HMAC digests: limits need equality, not the raw device id or phone number.
    device_digest: Mapped[str | None] = mapped_column(String(64))
    phone_digest: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[datetime]
    first_order_id: Mapped[int | None] = mapped_column(ForeignKey("customer_order.id"))
    first_order_at: Mapped[datetime | None]


class ReferralReward(Base):
    """What a milestone paid the inviter, once per (referral, milestone); or why it did not."""

    __tablename__ = "referral_reward"

    referral_id: Mapped[int] = mapped_column(ForeignKey("referral.id"), primary_key=True)
    milestone: Mapped[ReferralMilestone] = mapped_column(
        enum_column(ReferralMilestone), primary_key=True
    )
    kind: Mapped[RewardKind | None] = mapped_column(enum_column(RewardKind))
    points: Mapped[int] = mapped_column(default=0)
    coupon_id: Mapped[int | None] = mapped_column(ForeignKey("coupon.id"))
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    withheld_reason: Mapped[str | None] = mapped_column(String(64))  # e.g. inviter_limit
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
