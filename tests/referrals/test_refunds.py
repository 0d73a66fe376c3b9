"""An undone first order: refunded in full (or cancelled, expired) it no longer counts, so
the inviter's first-order points are taken back (pending or spendable; a shortfall is debt),
the reward is recorded as withheld (``order_refunded``: the stats count it unpaid) and the
invitee may make another first order, which is recorded but not paid again. A partial refund
keeps the reward; a coupon reward cannot be taken back (the coupons domain voids no unused
coupon) and stays paid."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from api.coupons import claims as coupon_claims
from api.coupons.models import Coupon, CouponChannel, CouponOrigin, CouponStatus, CouponTemplate
from api.db import Database
from api.loyalty import balances as loyalty_balances
from api.loyalty import spending as loyalty_spending
from api.orders.models import Order, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from api.referrals.rewards import ORDER_REFUNDED
from tests.orders.conftest import DAY, HQ, NOW, balance, line, lines_of, member, place
from tests.orders.test_lifecycle import new_life
from tests.referrals.conftest import (
    accept,
    invite,
    make_campaign,
    newcomer,
    referrals,
    rewards,
)
from tests.referrals.test_hook import delivered, hook, hook_statements
from tests.referrals.test_rules import new_template, stats

RELEASED = NOW + 8 * DAY  # past the 7-day return window: earned points are spendable


@pytest_asyncio.fixture
async def life(db, settings):
    return new_life(db, settings)


async def invited_and_ordered(
    db: Database, inviter: int, *, template_id: int | None = None, **order: Any
) -> tuple[int, int, int]:
    """dan accepts the inviter's invite and completes his first order, a delivery (campaign,
    dan, the order)."""
    campaign_id = await make_campaign(db, template_id=template_id)
    dan = await newcomer(db, name="丁大")
    await accept(db, dan, await invite(db, inviter, campaign_id))
    placed = await place(db, member(dan), delivery_region_code="310115", **order)
    assert placed.order.status is OrderStatus.COMPLETED
    return campaign_id, dan, placed.order.id


async def points_of(
    db: Database, customer_id: int, now: datetime = NOW
) -> loyalty_balances.Balance:
    async with db.read() as session:
        return (await loyalty_balances.balances_of(session, [customer_id], now))[customer_id]


async def test_a_first_order_refunded_in_full_takes_the_pending_points_back(db, shop, life):
    campaign_id, dan, order_id = await invited_and_ordered(db, shop.ann)
    assert (await balance(db, shop.ann)).pending == 200 + 500

    await life.refund(HQ, order_id, "return-all")

    # ann keeps the registration's 200 pending points; the first order's 500 are gone.
    assert (await balance(db, shop.ann)).pending == 200
    (ref,) = await referrals(db)
    assert (ref.first_order_id, ref.first_order_at) == (None, None)
    assert await rewards(db) == [
        (ref.id, "first_order", "points", 500, "5.00", ORDER_REFUNDED),
        (ref.id, "registration", "points", 200, "2.00", None),
    ]
    numbers = await stats(db, campaign_id)
    assert (numbers.first_orders, numbers.rewards_paid, numbers.points_paid) == (0, 1, 200)
    assert (numbers.rewards_withheld, numbers.withheld_by_reason) == (1, {"order_refunded": 1})
    assert numbers.reward_cost == Decimal("2.00")  # the taken-back 500 points cost nothing

    # dan buys again: that order is his first now, and the reward, paid once, is not again.
    second = await delivered(db, dan)
    (ref,) = await referrals(db)
    assert ref.first_order_id == second
    assert (await balance(db, shop.ann)).pending == 200
    assert (await rewards(db))[0][-1] == ORDER_REFUNDED
    assert (await stats(db, campaign_id)).first_orders == 1


async def test_spendable_points_are_taken_back_and_a_shortfall_becomes_debt(db, shop, life):
    eve = await newcomer(db, name="伊娃")  # an inviter with no points of her own
    _, _, order_id = await invited_and_ordered(db, eve)
    assert (await points_of(db, eve, RELEASED)).balance == 700
    async with db.transaction() as session:
        await loyalty_spending.redeem(
            session,
            eve,
            600,
            source_type="test",
            source_id="spent",
            reason="spent on tea",
            actor=None,
            now=RELEASED,
        )

    await life.refund(HQ, order_id, "return-all", now=RELEASED)

    # 500 taken back: the 100 she has left, and 400 owed from her next points.
    after = await points_of(db, eve, RELEASED)
    assert (after.balance, after.pending, after.debt) == (0, 0, 400)


async def test_a_partial_refund_leaves_the_first_order_counted_and_paid(db, shop, life):
    _, _, order_id = await invited_and_ordered(db, shop.ann, lines=[line("TEA-1", 2)])
    (tea,) = await lines_of(db, order_id)

    refunded = await life.refund(HQ, order_id, "one-back", [(tea.id, 1)])

    assert refunded.order.status is OrderStatus.PARTIALLY_REFUNDED
    (ref,) = await referrals(db)
    assert ref.first_order_id == order_id
    assert [r[-1] for r in await rewards(db)] == [None, None]
    assert (await balance(db, shop.ann)).pending == 700
    # The rest of it, later: now it no longer counts.
    await life.refund(HQ, order_id, "the-rest")
    assert (await balance(db, shop.ann)).pending == 200


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (OrderChange.CANCELLED, OrderStatus.CANCELLED),
        (OrderChange.EXPIRED, OrderStatus.EXPIRED),
    ],
)
async def test_a_cancelled_or_expired_first_order_is_undone_alike(db, shop, change, status):
    # Only a completed order is a first order, and lifecycle cancels or expires only open
    # pickup orders: the hook is called as if it had, to show it handles those too.
    _, dan, order_id = await invited_and_ordered(db, shop.ann)
    async with db.transaction() as session:
        await session.execute(update(Order).where(Order.id == order_id).values(status=status))
        await hook(session, OrdersChanged(change, (order_id,), (dan,), NOW))
    (ref,) = await referrals(db)
    assert ref.first_order_id is None
    assert (await rewards(db))[0][-1] == ORDER_REFUNDED
    assert (await balance(db, shop.ann)).pending == 200


async def test_a_coupon_reward_cannot_be_taken_back_and_stays_paid(db, shop, life):
    campaign_id, _, order_id = await invited_and_ordered(db, shop.ann, template_id=shop.template)

    await life.refund(HQ, order_id, "return-all")

    (ref,) = await referrals(db)
    assert ref.first_order_id is None  # no longer a first order
    assert (await rewards(db))[0] == (ref.id, "first_order", "coupon", 0, "10.00", None)
    async with db.read() as session:
        granted = await session.scalar(
            select(Coupon).where(Coupon.customer_id == shop.ann, Coupon.claim_key.is_not(None))
        )
    assert granted is not None and granted.status is CouponStatus.CLAIMED
    numbers = await stats(db, campaign_id)
    assert (numbers.first_orders, numbers.coupons_paid, numbers.reward_cost) == (
        0,
        1,
        Decimal("12.00"),
    )


async def test_a_later_first_order_does_not_pay_what_the_first_withheld(db, shop, life):
    scarce = await new_template(db, total_stock=1)
    campaign_id = await make_campaign(db, template_id=scarce)
    async with db.transaction() as session:  # bob takes the only one
        await coupon_claims.claim(
            session, HQ, scarce, shop.bob, channel=CouponChannel.ONLINE, origin=CouponOrigin.GRANT
        )
    dan = await newcomer(db, name="丁大")
    await accept(db, dan, await invite(db, shop.ann, campaign_id))
    first = await delivered(db, dan)
    assert (await rewards(db))[0][-1] == "out_of_stock"
    await life.refund(HQ, first, "return-all")
    async with db.transaction() as session:  # restocked since
        await session.execute(
            update(CouponTemplate).where(CouponTemplate.id == scarce).values(total_stock=10)
        )

    second = await delivered(db, dan)

    (ref,) = await referrals(db)
    assert ref.first_order_id == second
    assert (await rewards(db))[0][-1] == "out_of_stock"
    async with db.read() as session:
        issued = await session.scalars(select(Coupon.id).where(Coupon.template_id == scarce))
        assert len(issued.all()) == 1  # bob's, still the only one: ann got none


async def test_undoing_a_first_order_costs_a_fixed_number_of_statements(db, shop, count_queries):
    _, dan, order_id = await invited_and_ordered(db, shop.ann)
    async with db.transaction() as session:
        await session.execute(
            update(Order).where(Order.id == order_id).values(status=OrderStatus.REFUNDED)
        )
    count = await hook_statements(db, count_queries, OrderChange.REFUNDED, (order_id,), dan)
    # The lookup, the guarded updates of the referral and of its reward row; then loyalty's
    # reversal of the pending lot (it finds the earning, locks the lot's owner, settles
    # their debt, reads the lot and what expired or was reversed from it, closes it and
    # writes the entry and the account): 13.
    assert count == 3 + 13
    again = await hook_statements(db, count_queries, OrderChange.REFUNDED, (order_id,), dan)
    assert again == 1  # a retry: nothing to undo
