"""Referral campaigns (裂变活动): what a registration and a first order pay the inviter, and the
limits. HQ creates them; members see them (they invite through them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.coupons.models import CouponChannel, CouponTemplate
from api.coupons.models import TemplateStatus as CouponTemplateStatus
from api.errors import DomainError, Problem
from api.loyalty import adjustments as loyalty
from api.referrals.errors import ReferralErrorCode
from api.referrals.models import ReferralCampaign, RewardKind
from api.text import forbidden_character

MAX_NAME = 100


# One reward is a grant, so loyalty's bound for a single grant applies (pointsAdjust's).
MAX_REWARD_POINTS = loyalty.MAX_ADJUST_POINTS
MAX_PER_DAY = 10_000
MAX_PER_INVITER = 1_000_000


_CURRENCY = "CNY"  # points are valued in yuan (points_per_yuan): templates must be CNY too


@dataclass(frozen=True, slots=True)
class RewardDraft:
    """Exactly one of points or a coupon template."""

    points: int | None = None
    template_id: int | None = None


@dataclass(frozen=True, slots=True)
class CampaignDraft:
    name: str
    starts_at: datetime
    ends_at: datetime | None
    registration_reward: RewardDraft | None = None
    first_order_reward: RewardDraft | None = None
    max_rewarded_per_inviter: int | None = None
    max_registrations_per_day: int = 20


CAMPAIGN_KEYSET = (ReferralCampaign.id,)


def may_see_campaigns(principal: Principal) -> bool:
    """Campaigns are HQ's programme; members see them too (they invite through them).
    Partner, store and integration principals do not."""
    return principal.is_hq or principal.is_member


def campaigns_query(principal: Principal, *, running_at: datetime | None = None) -> Select[Any]:
    stmt = select(ReferralCampaign)
    if not may_see_campaigns(principal):
        return stmt.where(false())
    if running_at is not None:
        stmt = stmt.where(
            ReferralCampaign.starts_at <= running_at,
            or_(ReferralCampaign.ends_at.is_(None), ReferralCampaign.ends_at > running_at),
        )
    return stmt


async def campaigns_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, ReferralCampaign]:
    if not ids:
        return {}
    rows = await session.scalars(
        campaigns_query(principal).where(ReferralCampaign.id.in_(set(ids)))
    )
    return {c.id: c for c in rows}


def is_running(campaign: ReferralCampaign, now: datetime) -> bool:
    return campaign.starts_at <= now and (campaign.ends_at is None or now < campaign.ends_at)


async def _check_reward(
    session: AsyncSession,
    problems: list[Problem],
    reward: RewardDraft,
    path: str,
    starts_at: datetime,
    now: datetime,
) -> None:
    if (reward.points is None) == (reward.template_id is None):
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                "A reward is either points or a coupon template: give exactly one.",
                (path,),
            )
        )
        return
    if reward.points is not None:
        if isinstance(reward.points, bool) or not 0 < reward.points <= MAX_REWARD_POINTS:
            problems.append(
                Problem(
                    ReferralErrorCode.INVALID,
                    f"Points must be a whole number between 1 and {MAX_REWARD_POINTS}.",
                    (path, "points"),
                )
            )
        return
    where = (path, "couponTemplateId")
    template = await session.get(CouponTemplate, reward.template_id)
    if template is None:
        problems.append(
            Problem(ReferralErrorCode.UNKNOWN_TEMPLATE, "No such coupon template.", where)
        )
        return
    # Usable means a grant could succeed on the campaign's first day: the reward is handed
    # out online (in the mini-program), valued in yuan, and the template is live.
    first_day = max(now, starts_at)
    why = None
    if template.status is not CouponTemplateStatus.ACTIVE:
        why = "The coupon template is paused."
    elif template.claim_channel is CouponChannel.OFFLINE:
        why = "The coupon template is claimed offline only; rewards are granted online."
    elif template.currency != _CURRENCY:
        why = f"Reward costs are counted in {_CURRENCY}; this template is in {template.currency}."
    elif template.issued >= template.total_stock:
        why = "The coupon template is out of stock."
    elif template.claim_ends_at is not None and template.claim_ends_at <= first_day:
        why = "The coupon template's claims end before the campaign starts."
    elif template.valid_until is not None and template.valid_until <= first_day:
        why = "The coupon template expires before the campaign starts."
    if why is not None:
        problems.append(Problem(ReferralErrorCode.TEMPLATE_UNUSABLE, why, where))


def _reward_columns(reward: RewardDraft | None) -> tuple[RewardKind | None, int | None, int | None]:
    if reward is None:
        return None, None, None
    if reward.points is not None:
        return RewardKind.POINTS, reward.points, None
    return RewardKind.COUPON, None, reward.template_id


def _check_name_and_dates(problems: list[Problem], draft: CampaignDraft, now: datetime) -> str:
    """The campaign's name (stripped), after its checks and those of its end."""
    name = (draft.name or "").strip()
    if forbidden_character(draft.name or "") is not None:
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                "A name has no control characters or broken (surrogate) characters.",
                ("name",),
            )
        )
    elif not 0 < len(name) <= MAX_NAME:
        problems.append(
            Problem(ReferralErrorCode.INVALID, f"A name is 1-{MAX_NAME} characters.", ("name",))
        )
    if draft.ends_at is not None:
        if draft.ends_at <= draft.starts_at:
            problems.append(
                Problem(ReferralErrorCode.INVALID, "A campaign ends after it starts.", ("endsAt",))
            )
        elif draft.ends_at <= now:
            problems.append(
                Problem(ReferralErrorCode.INVALID, "This campaign would be over.", ("endsAt",))
            )
    return name


async def create_campaign(
    session: AsyncSession, principal: Principal, draft: CampaignDraft, *, now: datetime
) -> ReferralCampaign:
    """``referralCampaignCreate`` (HQ only). Every problem of the draft is reported at once."""
    if not principal.is_hq:
        raise DomainError.one(ReferralErrorCode.FORBIDDEN, "Only HQ staff create campaigns.")
    problems: list[Problem] = []
    name = _check_name_and_dates(problems, draft, now)
    if draft.registration_reward is None and draft.first_order_reward is None:
        problems.append(
            Problem(
                ReferralErrorCode.REQUIRED,
                "A campaign rewards the registration, the first order, or both.",
                ("registrationReward",),
            )
        )
    for reward, path in (
        (draft.registration_reward, "registrationReward"),
        (draft.first_order_reward, "firstOrderReward"),
    ):
        if reward is not None:
            await _check_reward(session, problems, reward, path, draft.starts_at, now)
    cap = draft.max_rewarded_per_inviter
    if cap is not None and not 0 < cap <= MAX_PER_INVITER:
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                f"maxRewardedPerInviter is between 1 and {MAX_PER_INVITER} (or null: no cap).",
                ("maxRewardedPerInviter",),
            )
        )
    if not 0 < draft.max_registrations_per_day <= MAX_PER_DAY:
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                f"maxRegistrationsPerDay is between 1 and {MAX_PER_DAY}.",
                ("maxRegistrationsPerDay",),
            )
        )
    if problems:
        raise DomainError(problems)
    registration = _reward_columns(draft.registration_reward)
    first_order = _reward_columns(draft.first_order_reward)
    campaign = ReferralCampaign(
        name=name,
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
        registration_reward=registration[0],
        registration_points=registration[1],
        registration_template_id=registration[2],
        first_order_reward=first_order[0],
        first_order_points=first_order[1],
        first_order_template_id=first_order[2],
        max_rewarded_per_inviter=cap,
        max_registrations_per_day=draft.max_registrations_per_day,
        created_by=principal.subject,
        created_at=now,
    )
    session.add(campaign)
    await session.flush()
    return campaign
