"""The order hook: what it costs when nothing applies (most orders), what it does and costs
when an invitee's first order completes, that it pays once; and merges, which carry
referrals and invite codes to the surviving customer. (An undone first order: see
test_refunds.py; merges that make one person of inviter and invitee: test_merges.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select, update

from api.customers.merge import merge_customers
from api.db import Database
from api.loyalty.models import PointsEntry
from api.orders.models import Fulfillment, Order, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from api.referrals.campaigns import RewardDraft
from api.referrals.first_orders import FirstOrderRewards
from api.referrals.models import InviteCode, Referral
from api.referrals.rewards import SOURCE_TYPE
from tests.orders.conftest import HQ, NOW, member, place, refusal
from tests.referrals.conftest import (
    accept,
    invite,
    invite_codes,
    make_campaign,
    newcomer,
    referrals,
    rewards,
)
from tests.wiring import CUSTOMERS, WIRING

# The referrals reaction as the composition root builds it (api/wiring.py).
hook = next(r for r in WIRING.orders.reactions if isinstance(r, FirstOrderRewards))


async def hook_statements(
    db: Database,
    count_queries: Any,
    change: OrderChange,
    order_ids: tuple[int, ...],
    *customers: int,
) -> int:
    """Run the referrals hook alone in a transaction; the statements it sent."""
    async with db.transaction() as session:
        with count_queries() as counter:
            await hook(session, OrdersChanged(change, order_ids, customers, NOW))
    return counter.count


async def delivered(db: Database, customer_id: int) -> int:
    """A delivery order of the customer, complete at creation (the real orderCreate)."""
    return (await place(db, member(customer_id), delivery_region_code="310115")).order.id


@pytest.mark.parametrize(
    "change", [OrderChange.CANCELLED, OrderChange.EXPIRED, OrderChange.REFUNDED]
)
async def test_an_undone_order_that_was_nobodys_first_costs_one_statement(
    db, shop, count_queries, change
):
    order_id = await delivered(db, shop.cat)
    assert await hook_statements(db, count_queries, change, (order_id,), shop.cat) == 1


async def test_an_import_batch_costs_nothing_whatever_its_size(db, shop, count_queries):
    batch = tuple(range(1, 301))
    assert await hook_statements(db, count_queries, OrderChange.IMPORTED, batch, shop.cat) == 0


async def test_an_order_without_a_customer_costs_nothing(db, shop, count_queries):
    order_id = (await place(db, HQ, store_id=shop.hq)).order.id
    assert await hook_statements(db, count_queries, OrderChange.CREATED, (order_id,)) == 0


async def test_an_order_of_someone_never_referred_costs_one_statement(db, shop, count_queries):
    order_id = await delivered(db, shop.cat)
    assert await hook_statements(db, count_queries, OrderChange.CREATED, (order_id,), shop.cat) == 1


async def test_an_invitees_later_orders_cost_one_statement(db, shop, count_queries):
    dan = await newcomer(db)
    await accept(db, dan, await invite(db, shop.ann, await make_campaign(db)))
    first = await delivered(db, dan)
    second = await delivered(db, dan)
    for order_id in (first, second):  # a retry of the first, and another order
        assert await hook_statements(db, count_queries, OrderChange.CREATED, (order_id,), dan) == 1
    (ref,) = await referrals(db)
    assert ref.first_order_id == first
    assert [r[1] for r in await rewards(db)] == ["first_order", "registration"]


async def test_a_pickup_order_placed_is_not_yet_a_first_order(db, shop, count_queries):
    dan = await newcomer(db)
    await accept(db, dan, await invite(db, shop.ann, await make_campaign(db)))
    placed = await place(db, member(dan), fulfillment=Fulfillment.PICKUP, store_id=shop.a1)
    assert placed.order.status is OrderStatus.PLACED
    assert (await referrals(db))[0].first_order_id is None
    assert (
        await hook_statements(db, count_queries, OrderChange.CREATED, (placed.order.id,), dan) == 1
    )


async def referred_with_an_order(db: Database, shop: Any, campaign_id: int) -> tuple[int, int]:
    """An order completed by dan, then dan's referral recorded straight in the table: the
    hook for that order has a first order to record (order id, referral id)."""
    dan = await newcomer(db)
    order_id = await delivered(db, dan)
    code = await invite(db, shop.ann, campaign_id)
    async with db.transaction() as session:
        referral_id = await session.scalar(
            insert(Referral)
            .values(
                campaign_id=campaign_id,
                code=code,
                inviter_id=shop.ann,
                invitee_id=dan,
                registered_at=NOW,
            )
            .returning(Referral.id)
        )
    return order_id, referral_id


# The lookup, the guarded update of the referral, the referral with its campaign; then the
# payment and the reward row. Points: loyalty's earn locks the inviter and their account,
# looks for an entry of the same source, writes the lot, the entry and the account, and
# evaluates the level (the customer, the levels): 8. A coupon: the grant share-locks the
# inviter, looks up the claim key under every id of the person (and takes the key's advisory
# lock on PostgreSQL), reads the template, counts the person's claims (2), takes the stock,
# writes the coupon: 8 (9); then the template's amount off, read for the cost.
FIRST_ORDER_STATEMENTS = {"points": 3 + 8 + 1, "coupon": 3 + 8 + 1 + 1}


def grant_locks(db: Database) -> int:
    return 0 if db.is_sqlite else 1


@pytest.mark.parametrize("reward", ["points", "coupon"])
async def test_a_first_order_costs_a_fixed_number_of_statements(db, shop, count_queries, reward):
    rule = RewardDraft(points=500) if reward == "points" else RewardDraft(template_id=shop.template)
    campaign_id = await make_campaign(db, first_order_reward=rule)
    order_id, referral_id = await referred_with_an_order(db, shop, campaign_id)
    count = await hook_statements(db, count_queries, OrderChange.CREATED, (order_id,), 0)
    assert [r[:3] for r in await rewards(db)] == [(referral_id, "first_order", reward)]
    expected = FIRST_ORDER_STATEMENTS[reward] + (grant_locks(db) if reward == "coupon" else 0)
    assert count == expected


async def test_the_inviters_cap_costs_one_count_more(db, shop, count_queries):
    campaign_id = await make_campaign(db, max_rewarded_per_inviter=5)
    order_id, _ = await referred_with_an_order(db, shop, campaign_id)
    count = await hook_statements(db, count_queries, OrderChange.CREATED, (order_id,), 0)
    assert count == FIRST_ORDER_STATEMENTS["points"] + 1


async def test_a_first_order_is_rewarded_once_however_often_the_hook_runs(db, shop):
    campaign_id = await make_campaign(db)
    order_id, referral_id = await referred_with_an_order(db, shop, campaign_id)
    for _ in range(3):
        async with db.transaction() as session:
            await hook(session, OrdersChanged(OrderChange.CREATED, (order_id,), (0,), NOW))
    # Even with the first order forgotten, the milestone has paid: nothing more.
    async with db.transaction() as session:
        await session.execute(
            update(Referral).where(Referral.id == referral_id).values(first_order_id=None)
        )
        await hook(session, OrdersChanged(OrderChange.CREATED, (order_id,), (0,), NOW))
    assert await rewards(db) == [(referral_id, "first_order", "points", 500, "5.00", None)]
    async with db.read() as session:
        earned = (
            await session.scalars(
                select(PointsEntry.pending_delta).where(PointsEntry.source_type == SOURCE_TYPE)
            )
        ).all()
    assert earned == [500]


async def test_an_order_that_is_not_completed_or_on_a_marketplace_is_no_first_order(db, shop):
    campaign_id = await make_campaign(db)
    order_id, _ = await referred_with_an_order(db, shop, campaign_id)
    for values in ({"status": OrderStatus.CANCELLED}, {"channel": "tmall"}):
        async with db.transaction() as session:
            await session.execute(update(Order).where(Order.id == order_id).values(**values))
            await hook(session, OrdersChanged(OrderChange.CREATED, (order_id,), (0,), NOW))
            await session.rollback()
    assert (await referrals(db))[0].first_order_id is None


# --- merges ----------------------------------------------------------------------------------


async def merge(db: Database, target: int, source: int) -> None:
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, target, [source], dry_run=False, wiring=CUSTOMERS, now=NOW
        )


async def test_a_merged_invitee_takes_the_referral_to_the_survivor(db, shop):
    campaign_id = await make_campaign(db)
    dan, kim = await newcomer(db), await newcomer(db)
    await accept(db, dan, await invite(db, shop.ann, campaign_id))
    await merge(db, kim, dan)
    (ref,) = await referrals(db)
    assert ref.invitee_id == kim
    # Still referred, whichever id they come back with; and the survivor's first order counts.
    eve_code = await invite(db, shop.cat, campaign_id)
    assert await refusal(accept(db, kim, eve_code)) == [("ALREADY_REFERRED", None)]
    await delivered(db, kim)
    assert (await referrals(db))[0].first_order_id is not None


async def test_a_merged_inviter_keeps_inviting_as_the_survivor(db, shop):
    campaign_id = await make_campaign(db)
    ivan, judy = await newcomer(db), await newcomer(db)
    old_code = await invite(db, ivan, campaign_id)
    await accept(db, await newcomer(db), old_code)
    await merge(db, judy, ivan)
    assert await invite(db, judy, campaign_id) == old_code  # the code moved with him
    await accept(db, await newcomer(db), old_code)
    assert [r.inviter_id for r in await referrals(db)] == [judy, judy]
    (code,) = await invite_codes(db)
    assert code.inviter_id == judy


async def test_when_both_had_codes_the_survivor_keeps_theirs_and_the_old_one_still_works(db, shop):
    campaign_id = await make_campaign(db)
    ivan, judy = await newcomer(db), await newcomer(db)
    ivan_code, judy_code = await invite(db, ivan, campaign_id), await invite(db, judy, campaign_id)
    await merge(db, judy, ivan)
    assert await invite(db, judy, campaign_id) == judy_code
    await accept(db, await newcomer(db), ivan_code)  # printed on a poster long ago
    assert [r.inviter_id for r in await referrals(db)] == [judy]
    async with db.read() as session:
        owners = dict((await session.execute(select(InviteCode.code, InviteCode.inviter_id))).all())
    assert owners == {ivan_code: ivan, judy_code: judy}
