"""The referrals domain's step of a customer merge (listed in ``api/wiring.py``)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import Customer
from api.db import dialect_insert
from api.referrals.models import (
    InviteCode,
    Referral,
    ReferralCampaign,
    ReferralMilestone,
    ReferralReward,
)
from api.referrals.rewards import SELF_REFERRAL, reward_rule

# A swap rewrites rows whole, columns and all, through Core. A declarative model's __table__
# is a Table; its type says FromClause (which has no insert).
_REFERRALS = cast(Table, Referral.__table__)
_REWARDS = cast(Table, ReferralReward.__table__)


class ReferralMergeStep:
    """Moves the sources' invitations (as inviter) to the target, their invite codes where
    the target has none in that campaign (other codes keep working: accepting follows the
    inviter's merge redirect), and the person's earliest referral as invitee (by
    registration: the first accepted invite wins) to the target; the others stay with the
    merged ids. Rewards stay with their referrals.

    A merge of an inviter with their invitee leaves a person who invited themself: such
    referrals pay nothing more (their unpaid milestones are recorded withheld as
    SELF_REFERRAL; what was paid before the merge stays paid)."""

    name = "referrals"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        session = plan.session
        invited = await session.scalar(
            select(func.count()).where(Referral.inviter_id.in_(plan.source_ids))
        )
        moves = []
        if invited:
            plural = "s" if invited != 1 else ""
            moves.append(MergeMove("referrals", invited, f"{invited} invited customer{plural}"))
        referred = (
            await session.scalars(
                select(Referral.invitee_id).where(
                    Referral.invitee_id.in_([plan.target_id, *plan.source_ids])
                )
            )
        ).all()
        conflicts = []
        if len(referred) > 1:
            conflicts.append(
                MergeConflict(
                    "referrals",
                    f"{len(referred)} of them accepted invites: the earliest counts for the "
                    "merged customer.",
                )
            )
        return moves, conflicts

    async def apply(self, plan: MergePlan) -> None:
        session = plan.session
        sources = plan.source_ids
        person = [plan.target_id, *sources]
        await session.execute(
            update(Referral)
            .where(Referral.inviter_id.in_(sources))
            .values(inviter_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
        invites = (
            await session.scalars(
                select(InviteCode)
                .where(InviteCode.inviter_id.in_(person))
                .order_by(InviteCode.created_at, InviteCode.code)
            )
        ).all()
        has_code = {i.campaign_id for i in invites if i.inviter_id == plan.target_id}
        for invite in invites:
            if invite.campaign_id not in has_code:
                has_code.add(invite.campaign_id)
                await session.execute(
                    update(InviteCode)
                    .where(InviteCode.code == invite.code)
                    .values(inviter_id=plan.target_id),
                    execution_options={"synchronize_session": False},
                )
        await _keep_earliest_referral(session, plan.target_id, person)
        await _withhold_self_referrals(session, plan.target_id, person, plan.now)


async def _keep_earliest_referral(session: AsyncSession, target_id: int, person: list[int]) -> None:
    """Give the target the person's earliest referral as invitee. When the target holds a
    later one, the two swap invitees: the target's goes to the merged id the earliest came
    from. The unique invitee index forbids a swap by updates (there is no free id to park
    one on), so the target's referral and its rewards are deleted and written back, ids
    and all (its rewards' points and coupons name the referral id)."""
    referred = (
        await session.execute(
            select(Referral.id, Referral.invitee_id)
            .where(Referral.invitee_id.in_(person))
            .order_by(Referral.registered_at, Referral.id)
        )
    ).all()
    if not referred or referred[0].invitee_id == target_id:
        return
    earliest = referred[0]
    held = next((r for r in referred if r.invitee_id == target_id), None)
    if held is not None:
        referral = (await session.execute(select(_REFERRALS).where(Referral.id == held.id))).one()
        rewards = (
            await session.execute(select(_REWARDS).where(ReferralReward.referral_id == held.id))
        ).all()
        await session.execute(
            delete(ReferralReward).where(ReferralReward.referral_id == held.id),
            execution_options={"synchronize_session": False},
        )
        await session.execute(
            delete(Referral).where(Referral.id == held.id),
            execution_options={"synchronize_session": False},
        )
    await session.execute(
        update(Referral).where(Referral.id == earliest.id).values(invitee_id=target_id),
        execution_options={"synchronize_session": False},
    )
    if held is not None:
        await session.execute(
            _REFERRALS.insert().values({**referral._mapping, "invitee_id": earliest.invitee_id})
        )
        if rewards:
            await session.execute(_REWARDS.insert().values([dict(r._mapping) for r in rewards]))


async def _withhold_self_referrals(
    session: AsyncSession, target_id: int, person: list[int], now: datetime
) -> None:
    """Record the unpaid milestones of the person's referrals of themself as withheld
    (SELF_REFERRAL), so that nothing pays them later and the stats show why. Themself: the
    inviter is the target (the sources' invitations have moved to it) and the invitee any
    id of the person (the merged ids of dropped referrals, and of earlier merges, too)."""
    ids = select(Customer.id).where(
        or_(Customer.id.in_(person), Customer.merged_into_id.in_(person))
    )
    found = (
        await session.execute(
            select(Referral.id, ReferralCampaign)
            .join(ReferralCampaign, ReferralCampaign.id == Referral.campaign_id)
            .where(Referral.inviter_id == target_id, Referral.invitee_id.in_(ids))
        )
    ).all()
    values = [
        {
            "referral_id": referral_id,
            "milestone": milestone,
            "kind": reward_rule(campaign, milestone)[0],
            "points": 0,
            "coupon_id": None,
            "cost": Decimal("0.00"),
            "withheld_reason": SELF_REFERRAL,
            "created_at": now,
        }
        for referral_id, campaign in found
        for milestone in ReferralMilestone
        if reward_rule(campaign, milestone)[0] is not None
    ]
    if values:
        # A milestone paid (or withheld) before keeps its row: only the unpaid are added.
        await session.execute(
            dialect_insert(session)(ReferralReward)
            .values(values)
            .on_conflict_do_nothing(index_elements=["referral_id", "milestone"])
        )
