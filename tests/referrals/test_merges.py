"""Merges and referrals: a merge of an inviter with their invitee (either way round) leaves a
person who invited themself, whose referral pays nothing more (its unpaid milestones are
withheld as ``self_referral``); a merge of two invitees keeps the person's earliest referral
(the first accepted invite wins), whichever id survives; and a referral the merge leaves
with a merged invitee still loses its first order's reward when that order is refunded."""

from __future__ import annotations

from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select

from api.customers.merge import merge_customers
from api.loyalty.models import PointsEntry
from api.referrals.rewards import ORDER_REFUNDED, SELF_REFERRAL, SOURCE_TYPE
from api.referrals.tree import referral_tree
from tests.orders.conftest import HQ, NOW, balance
from tests.orders.test_lifecycle import new_life
from tests.referrals.conftest import accept, invite, make_campaign, newcomer, referrals, rewards
from tests.referrals.test_hook import delivered, merge
from tests.referrals.test_rules import stats
from tests.wiring import CUSTOMERS


@pytest_asyncio.fixture
async def life(db, settings):
    return new_life(db, settings)


async def referral_earnings(db) -> list[tuple[int, str, int]]:
    """(customer, source id, points) of every points earning a referral paid."""
    async with db.read() as session:
        rows = await session.execute(
            select(PointsEntry.customer_id, PointsEntry.source_id, PointsEntry.pending_delta)
            .where(PointsEntry.source_type == SOURCE_TYPE, PointsEntry.pending_delta > 0)
            .order_by(PointsEntry.id)
        )
        return [tuple(r) for r in rows]


@pytest.mark.parametrize("survivor", ["inviter", "invitee"])
async def test_a_merged_inviter_and_invitee_earn_nothing_for_inviting_themself(db, shop, survivor):
    campaign_id = await make_campaign(db)
    eve, dan = await newcomer(db, name="伊娃"), await newcomer(db, name="丁大")
    await accept(db, dan, await invite(db, eve, campaign_id))  # eve earns 200 at once
    # Then it turns out they are one person: the same phone, two logins.
    target, source = (eve, dan) if survivor == "inviter" else (dan, eve)
    await merge(db, target, source)

    (ref,) = await referrals(db)
    assert ref.inviter_id == ref.invitee_id == target
    # Paid before the merge stays paid; the first order will never pay.
    assert await rewards(db) == [
        (ref.id, "first_order", "points", 0, "0.00", SELF_REFERRAL),
        (ref.id, "registration", "points", 200, "2.00", None),
    ]

    order_id = await delivered(db, target)
    (ref,) = await referrals(db)
    assert ref.first_order_id == order_id  # they did buy: recorded, not rewarded
    assert await referral_earnings(db) == [(eve, f"{ref.id}:registration", 200)]
    assert (await rewards(db))[0][-1] == SELF_REFERRAL
    numbers = await stats(db, campaign_id)
    assert (numbers.rewards_paid, numbers.withheld_by_reason) == (1, {"self_referral": 1})
    # Nor is the person their own invitee in their tree.
    async with db.read() as session:
        tree = await referral_tree(session, HQ, target, 5)
    assert tree is not None and tree.nodes == []


async def test_a_self_referral_found_by_a_later_merge_of_an_old_id(db, shop):
    # dan was invited by cat and later merged into kim (cat's referral kept his id: kim had
    # her own, earlier one). Then cat and kim turn out to be one person.
    campaign_id = await make_campaign(db)
    kim, dan = await newcomer(db, name="金"), await newcomer(db, name="丁大")
    await accept(db, kim, await invite(db, shop.ann, campaign_id))
    await accept(db, dan, await invite(db, shop.cat, campaign_id), now=NOW + timedelta(hours=1))
    await merge(db, kim, dan)
    await merge(db, kim, shop.cat)
    ann_ref, cat_ref = await referrals(db)
    assert (cat_ref.inviter_id, cat_ref.invitee_id) == (kim, dan)
    assert [r[-1] for r in await rewards(db) if r[0] == cat_ref.id] == [
        SELF_REFERRAL,
        None,
    ]
    assert [r[-1] for r in await rewards(db) if r[0] == ann_ref.id] == [None]


async def test_the_earliest_referral_counts_whichever_id_survives(db, shop):
    campaign_id = await make_campaign(db)
    kim, dan = await newcomer(db, name="金"), await newcomer(db, name="丁大")
    await accept(db, kim, await invite(db, shop.cat, campaign_id))  # first
    await accept(db, dan, await invite(db, shop.ann, campaign_id), now=NOW + timedelta(hours=1))
    before = await rewards(db)

    # dan survives, though his own referral is the later one: kim's (cat's) is his now, and
    # ann's stays with kim's merged id.
    async with db.transaction() as session:
        preview = await merge_customers(
            session, HQ, dan, [kim], dry_run=True, wiring=CUSTOMERS, now=NOW
        )
    assert [c.message for c in preview.conflicts if c.field == "referrals"] == [
        "2 of them accepted invites: the earliest counts for the merged customer."
    ]
    await merge(db, dan, kim)
    cat_ref, ann_ref = await referrals(db)
    assert (cat_ref.inviter_id, cat_ref.invitee_id) == (shop.cat, dan)
    assert (ann_ref.inviter_id, ann_ref.invitee_id) == (shop.ann, kim)
    assert await rewards(db) == before  # rewards stay with their referrals

    # dan's first order is cat's invitee's: cat earns the first-order reward.
    await delivered(db, dan)
    cat_ref, ann_ref = await referrals(db)
    assert cat_ref.first_order_id is not None and ann_ref.first_order_id is None
    assert (await referral_earnings(db))[-1] == (shop.cat, f"{cat_ref.id}:first_order", 500)


async def test_the_earliest_referral_stays_put_when_its_id_survives(db, shop):
    campaign_id = await make_campaign(db)
    kim, dan = await newcomer(db, name="金"), await newcomer(db, name="丁大")
    await accept(db, kim, await invite(db, shop.cat, campaign_id))
    await accept(db, dan, await invite(db, shop.ann, campaign_id), now=NOW + timedelta(hours=1))
    await merge(db, kim, dan)
    cat_ref, ann_ref = await referrals(db)
    assert (cat_ref.invitee_id, ann_ref.invitee_id) == (kim, dan)


async def test_a_refunded_first_order_of_a_merged_invitee_is_still_taken_back(db, shop, life):
    campaign_id = await make_campaign(db)
    kim, dan = await newcomer(db, name="金"), await newcomer(db, name="丁大")
    await accept(db, kim, await invite(db, shop.cat, campaign_id))
    await accept(db, dan, await invite(db, shop.ann, campaign_id), now=NOW + timedelta(hours=1))
    order_id = await delivered(db, dan)
    assert (await balance(db, shop.ann)).pending == 700
    # kim's referral is the earlier: ann's stays with dan's merged id; his order is kim's.
    await merge(db, kim, dan)

    await life.refund(HQ, order_id, "return-all")

    _, ann_ref = await referrals(db)
    assert (ann_ref.invitee_id, ann_ref.first_order_id) == (dan, None)
    assert (await balance(db, shop.ann)).pending == 200
    assert [r[-1] for r in await rewards(db) if r[0] == ann_ref.id] == [
        ORDER_REFUNDED,
        None,
    ]
