"""The reaction to orders (``api/wiring.py``): an invitee's first completed private-domain
order pays the inviter the FIRST_ORDER reward, and undoing it takes the reward back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog.models import MARKETPLACES
from api.customers.models import Customer
from api.db import update_returning
from api.loyalty import reversals as loyalty
from api.orders.models import COUNTED_STATUSES, Order, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from api.referrals.models import (
    Referral,
    ReferralCampaign,
    ReferralMilestone,
    ReferralReward,
    RewardKind,
)
from api.referrals.rewards import (
    ACTOR,
    INVITER_LIMIT,
    ORDER_REFUNDED,
    SOURCE_TYPE,
    RewardSettings,
    pay_reward,
)

_COMPLETING = (OrderChange.CREATED, OrderChange.COMPLETED)
_UNDOING = (OrderChange.CANCELLED, OrderChange.EXPIRED, OrderChange.REFUNDED)


@dataclass(frozen=True, slots=True)
class FirstOrderRewards:
    """The reaction to orders (api/wiring.py): an invitee's first completed private-domain
    order rewards the inviter, and undoing it takes the reward back. Imports (marketplace
    history) never make or undo a first order and cost no statement, nor does an order
    without a customer."""

    settings: RewardSettings

    async def __call__(self, session: AsyncSession, changed: OrdersChanged) -> None:
        if not changed.customer_ids:
            return
        if changed.change in _COMPLETING:
            await _first_orders(session, changed, self.settings)
        elif changed.change in _UNDOING:
            await _undone_first_orders(session, changed)


async def _first_orders(
    session: AsyncSession, changed: OrdersChanged, settings: RewardSettings
) -> None:
    """Record an invitee's first completed private-domain order and reward the inviter.

    Only orderCreate (a delivery or in-store order completes at creation) and a pickup
    complete an order. One indexed statement (the changed orders by primary key, joined to a
    not-yet-ordered referral of their customer) decides; for a first order it is followed by
    the guarded update, the campaign, the cap count and the payment (points: loyalty's
    statements; coupon: the grant's)."""
    rows = (
        await session.execute(
            select(Referral.id, Order.id, Order.completed_at)
            .join(Order, Order.customer_id == Referral.invitee_id)
            .where(
                Order.id.in_(changed.order_ids),
                Order.status == OrderStatus.COMPLETED,
                Order.channel.not_in(MARKETPLACES),
                Referral.first_order_id.is_(None),
            )
            .order_by(Order.id)
        )
    ).all()
    seen: set[int] = set()
    for referral_id, order_id, completed_at in rows:
        if referral_id in seen:
            continue
        seen.add(referral_id)
        await _record_first_order(
            session, referral_id, order_id, completed_at or changed.now, settings
        )


async def _record_first_order(
    session: AsyncSession,
    referral_id: int,
    order_id: int,
    at: datetime,
    settings: RewardSettings,
) -> None:
    claimed = await update_returning(
        session,
        update(Referral)
        .where(Referral.id == referral_id, Referral.first_order_id.is_(None))
        .values(first_order_id=order_id, first_order_at=at)
        .returning(Referral.id),
    )
    if claimed is None:
        return  # another order of the invitee was first
    referral, campaign, rewarded = (
        await session.execute(
            select(Referral, ReferralCampaign, ReferralReward.referral_id)
            .join(ReferralCampaign, ReferralCampaign.id == Referral.campaign_id)
            .outerjoin(
                ReferralReward,
                (ReferralReward.referral_id == Referral.id)
                & (ReferralReward.milestone == ReferralMilestone.FIRST_ORDER),
            )
            .where(Referral.id == referral_id)
            .execution_options(populate_existing=True)
        )
    ).one()
    # A milestone pays once: after an undone first order (or a merge that withheld it) a
    # later first order is recorded, and the reward row stays as it is.
    if campaign.first_order_reward is None or rewarded is not None:
        return
    withheld = None
    if campaign.max_rewarded_per_inviter is not None:
        # The inviter's first N referrals in the campaign are the rewarded ones (accepts
        # are serialized per inviter, so ids follow acceptance).
        earlier = await session.scalar(
            select(func.count()).where(
                Referral.inviter_id == referral.inviter_id,
                Referral.campaign_id == campaign.id,
                Referral.id < referral.id,
            )
        )
        if (earlier or 0) >= campaign.max_rewarded_per_inviter:
            withheld = INVITER_LIMIT
    await pay_reward(
        session,
        referral,
        campaign,
        ReferralMilestone.FIRST_ORDER,
        withheld=withheld,
        settings=settings,
        now=at,
    )


async def _undone_first_orders(session: AsyncSession, changed: OrdersChanged) -> None:
    """Take back what an undone first order paid: one refunded in full, cancelled or
    expired is no longer counted (``COUNTED_STATUSES``); a partial refund leaves it counted
    and its reward paid.

    One indexed statement when no first order is among the changed orders (nearly always):
    the referrals of the orders' customers (the unique invitee index; and customers merged
    into them: a referral the merge left with a merged invitee keeps its first order, which
    moved to the survivor) whose first order is one of them and no longer counted."""
    people = select(Customer.id).where(
        or_(
            Customer.id.in_(changed.customer_ids),
            Customer.merged_into_id.in_(changed.customer_ids),
        )
    )
    rows = (
        await session.execute(
            select(Referral.id, Referral.first_order_id)
            .join(Order, Order.id == Referral.first_order_id)
            .where(
                Referral.invitee_id.in_(people),
                Referral.first_order_id.in_(changed.order_ids),
                Order.status.not_in(COUNTED_STATUSES),
            )
            .order_by(Referral.id)
        )
    ).all()
    for referral_id, order_id in rows:
        assert order_id is not None  # the statement keeps first orders only
        await _undo_first_order(session, referral_id, order_id, changed.now)


async def _undo_first_order(
    session: AsyncSession, referral_id: int, order_id: int, now: datetime
) -> None:
    """Forget the first order, so that a later counted order becomes the first (recorded,
    not paid again: a milestone pays once), and take back its reward.

    Points: loyalty's reversal of the earning (a pending lot is cancelled; points spent
    already come from the inviter's other points, a shortfall as debt), and the reward row
    is marked ORDER_REFUNDED: stats count it withheld, its cost not paid. A coupon reward
    stays paid: the coupons domain has no way to void a granted coupon that is unused
    (``release`` only undoes a redemption), so it cannot be taken back."""
    cleared = await update_returning(
        session,
        update(Referral)
        .where(Referral.id == referral_id, Referral.first_order_id == order_id)
        .values(first_order_id=None, first_order_at=None)
        .returning(Referral.inviter_id),
    )
    if cleared is None:
        return  # undone meanwhile
    taken = await update_returning(
        session,
        update(ReferralReward)
        .where(
            ReferralReward.referral_id == referral_id,
            ReferralReward.milestone == ReferralMilestone.FIRST_ORDER,
            ReferralReward.kind == RewardKind.POINTS,
            ReferralReward.withheld_reason.is_(None),
        )
        .values(withheld_reason=ORDER_REFUNDED)
        .returning(ReferralReward.referral_id),
    )
    if taken is None:
        return  # nothing was paid (withheld, or no points reward), or a coupon
    await loyalty.reverse(
        session,
        source_type=SOURCE_TYPE,
        source_id=f"{referral_id}:{ReferralMilestone.FIRST_ORDER.value}",
        reason="referral reward: first order undone",
        actor=ACTOR,
        now=now,
        customer_id=cleared.inviter_id,
    )
