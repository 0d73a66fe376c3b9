"""Paying a referral milestone's reward to the inviter (points or a coupon), or recording it
withheld, once; and what rewards cost the brand."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal, Role
from api.coupons import claims as coupons
from api.coupons.models import CouponChannel, CouponKind, CouponOrigin, CouponTemplate
from api.db import dialect_insert
from api.errors import DomainError
from api.loyalty import earning as loyalty
from api.loyalty.rules import PointsPolicy
from api.referrals.models import (
    Referral,
    ReferralCampaign,
    ReferralMilestone,
    ReferralReward,
    RewardKind,
)

SOURCE_TYPE = "referral"  # points entries: source_id "<referral id>:<milestone>"
ACTOR = "system:referrals"
# ReferralReward.withheld_reason: past the inviter's cap; the inviter and the invitee are
# one person (a customer merge made them one); the first order was undone (refunded in
# full, cancelled, expired) and its reward taken back.
INVITER_LIMIT = "inviter_limit"
SELF_REFERRAL = "self_referral"
ORDER_REFUNDED = "order_refunded"


_CENT = Decimal("0.01")


# Coupons a campaign grants are handed out by the system acting as HQ would (an HQ grant).
_GRANTER = Principal(ACTOR, Role.HQ_ADMIN)


class RewardSettings(Protocol):
    """What paying a reward reads of the settings (``api.settings.Settings`` is one)."""

    @property
    def points_per_yuan(self) -> int: ...

    @property
    def points_policy(self) -> PointsPolicy: ...


def points_cost(points: int, points_per_yuan: int) -> Decimal:
    """What points cost the brand: their cash value when spent (积分抵现)."""
    return (Decimal(points) / Decimal(points_per_yuan)).quantize(_CENT, ROUND_HALF_UP)


def coupon_cost(template: CouponTemplate) -> Decimal:
    """A coupon's cost: its fixed amount off (直减, and 满减's amount) when it has one; a
    percent-off or exchange coupon's value depends on the order, so it counts 0."""
    if template.kind in (CouponKind.FIXED_OFF, CouponKind.AMOUNT_OFF_THRESHOLD):
        return template.discount_amount or Decimal("0.00")
    return Decimal("0.00")


def reward_rule(
    campaign: ReferralCampaign, milestone: ReferralMilestone
) -> tuple[RewardKind | None, int | None, int | None]:
    if milestone is ReferralMilestone.REGISTRATION:
        return (
            campaign.registration_reward,
            campaign.registration_points,
            campaign.registration_template_id,
        )
    return (
        campaign.first_order_reward,
        campaign.first_order_points,
        campaign.first_order_template_id,
    )


async def pay_reward(
    session: AsyncSession,
    referral: Referral,
    campaign: ReferralCampaign,
    milestone: ReferralMilestone,
    *,
    withheld: str | None,
    settings: RewardSettings,
    now: datetime,
) -> None:
    """Pay (or withhold) a milestone's reward to the inviter and record it, once.

    Points go through the ledger with source ("referral", "<referral id>:<milestone>"), a
    coupon through an HQ grant with a claim key of the same: a retry adds nothing. A coupon
    that cannot be granted (out of stock, over the person's limit, paused ...) is withheld
    with the coupons domain's reason; its savepoint undoes the grant's partial writes, and
    the caller's transaction (the invitee's registration, the order) goes on.

    Nothing is paid to an inviter who is the invitee (a merge made them one person): the
    reward is withheld as SELF_REFERRAL.
    """
    kind, points, template_id = reward_rule(campaign, milestone)
    if kind is None:
        return
    if referral.inviter_id == referral.invitee_id:
        withheld = SELF_REFERRAL
    values: dict[str, Any] = {
        "referral_id": referral.id,
        "milestone": milestone,
        "kind": kind,
        "points": 0,
        "coupon_id": None,
        "cost": Decimal("0.00"),
        "withheld_reason": withheld,
        "created_at": now,
    }
    source_id = f"{referral.id}:{milestone.value}"
    if withheld is None and kind is RewardKind.POINTS:
        assert points is not None
        await loyalty.earn(
            session,
            referral.inviter_id,
            points,
            source_type=SOURCE_TYPE,
            source_id=source_id,
            reason=f"referral reward: {milestone.value}",
            actor=ACTOR,
            now=now,
            pending=True,
            policy=settings.points_policy,
        )
        values.update(points=points, cost=points_cost(points, settings.points_per_yuan))
    elif withheld is None:
        assert template_id is not None
        try:
            async with session.begin_nested():
                granted = await coupons.claim(
                    session,
                    _GRANTER,
                    template_id,
                    referral.inviter_id,
                    channel=CouponChannel.ONLINE,
                    claim_key=f"{SOURCE_TYPE}:{source_id}",
                    now=now,
                    origin=CouponOrigin.GRANT,
                )
        except DomainError as error:
            values["withheld_reason"] = error.problems[0].code.value
        else:
            template = await session.get_one(CouponTemplate, template_id)
            values.update(coupon_id=granted.coupon.id, cost=coupon_cost(template))
    # The primary key (referral, milestone) is the backstop: a second payment records nothing.
    await session.execute(
        dialect_insert(session)(ReferralReward)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["referral_id", "milestone"])
    )
