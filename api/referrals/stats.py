"""A campaign's numbers: invites, registrations, first orders, rewards paid and withheld, and
their cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.errors import DomainError
from api.referrals.errors import ReferralErrorCode
from api.referrals.models import InviteCode, Referral, ReferralCampaign, ReferralReward, RewardKind

_CENT = Decimal("0.01")


@dataclass(slots=True)
class CampaignStats:
    invites: int = 0
    registrations: int = 0
    first_orders: int = 0
    rewards_paid: int = 0
    points_paid: int = 0
    coupons_paid: int = 0
    rewards_withheld: int = 0
    withheld_by_reason: dict[str, int] = field(default_factory=dict)
    reward_cost: Decimal = Decimal("0.00")


async def campaign_stats(
    session: AsyncSession, principal: Principal, campaign_id: int
) -> CampaignStats | None:
    """A campaign's numbers (HQ only; None for a missing campaign). Two statements."""
    if not principal.is_hq:
        raise DomainError.one(ReferralErrorCode.FORBIDDEN, "Campaign stats are HQ's.")
    counts = (
        await session.execute(
            select(
                select(func.count())
                .where(InviteCode.campaign_id == ReferralCampaign.id)
                .scalar_subquery(),
                select(func.count())
                .where(Referral.campaign_id == ReferralCampaign.id)
                .scalar_subquery(),
                select(func.count(Referral.first_order_id))
                .where(Referral.campaign_id == ReferralCampaign.id)
                .scalar_subquery(),
            ).where(ReferralCampaign.id == campaign_id)
        )
    ).first()
    if counts is None:
        return None
    stats = CampaignStats(invites=counts[0], registrations=counts[1], first_orders=counts[2])
    rewards = await session.execute(
        select(
            ReferralReward.kind,
            ReferralReward.withheld_reason,
            func.count(),
            func.coalesce(func.sum(ReferralReward.points), 0),
            func.coalesce(func.sum(ReferralReward.cost), 0),
        )
        .join(Referral, Referral.id == ReferralReward.referral_id)
        .where(Referral.campaign_id == campaign_id)
        .group_by(ReferralReward.kind, ReferralReward.withheld_reason)
    )
    for kind, reason, number, points, cost in rewards:
        if reason is not None:
            stats.rewards_withheld += number
            stats.withheld_by_reason[reason] = stats.withheld_by_reason.get(reason, 0) + number
            continue
        stats.rewards_paid += number
        stats.reward_cost += Decimal(cost)
        if kind is RewardKind.POINTS:
            stats.points_paid += int(points)
        else:
            stats.coupons_paid += number
    stats.reward_cost = stats.reward_cost.quantize(_CENT)
    stats.withheld_by_reason = dict(sorted(stats.withheld_by_reason.items()))
    return stats
