"""Coupons used by orders (``redeem_for_order``), release of what an order used, and the
territory check of a redemption at the counter (窜货)."""

from __future__ import annotations

from sqlalchemy import select

from api.conflicts.models import ChannelViolation, ViolationKind
from api.coupons import redemption as coupon_redemption
from api.coupons import release as coupon_release
from api.coupons.models import CouponChannel, CouponStatus
from api.partners.models import PartnerTerritory, Store
from tests.coupons.conftest import (
    DAY,
    HQ,
    T0,
    claim,
    coupon,
    member,
    new_template,
    problem_fields,
    redeem,
    store_staff,
)


async def use(db, codes, customer_id, *, principal=None, store_id=None, partner_id=None, **kw):
    async with db.transaction() as session:
        return await coupon_redemption.redeem_for_order(
            session,
            principal or member(customer_id),
            codes,
            customer_id=customer_id,
            use=kw.pop("use", CouponChannel.ONLINE),
            store_id=store_id,
            partner_id=partner_id,
            order_ref=kw.pop("order_ref", "41"),
            now=kw.pop("now", T0),
        )


async def test_an_orders_coupons_are_redeemed_once_each_for_the_order(db, world):
    template = await new_template(db, per_person_limit=2)
    first = await claim(db, template.id, world.ann)
    second = await claim(db, template.id, world.ann)
    used = await use(db, [second.code.lower(), first.code], world.ann, order_ref="41")
    assert [(c.id, t.id) for c, t in used] == [(second.id, template.id), (first.id, template.id)]
    row = await coupon(db, first.id)
    assert (row.status, row.redeemed_for, row.redeemed_store_id, row.redeemed_by) == (
        CouponStatus.REDEEMED,
        "41",
        None,  # an online order without a store
        f"customer:{world.ann}",
    )
    again = use(db, [first.code], world.ann, order_ref="42")
    assert await problem_fields(again) == [("ALREADY_REDEEMED", ("couponCodes", "0"))]


async def test_only_the_orders_customers_coupons_and_each_once(db, world):
    template = await new_template(db)
    bobs = await claim(db, template.id, world.bob)
    anns = await claim(db, template.id, world.ann)
    assert await problem_fields(use(db, [anns.code, bobs.code], world.ann)) == [
        ("NOT_FOUND", ("couponCodes", "1"))
    ]
    assert await problem_fields(use(db, ["not a code"], world.ann)) == [
        ("NOT_FOUND", ("couponCodes", "0"))
    ]
    assert await problem_fields(use(db, [anns.code, anns.code], world.ann)) == [
        ("INVALID", ("couponCodes", "1"))
    ]
    # The refused calls rolled back: ann's coupon is still hers to use, bob's untouched.
    assert (await coupon(db, anns.id)).status is CouponStatus.CLAIMED
    assert (await coupon(db, bobs.id)).status is CouponStatus.CLAIMED


async def test_channel_store_and_validity_rules_apply(db, world):
    offline = await new_template(db, use_channel=CouponChannel.OFFLINE)
    at_a = await new_template(db, partner_ids=[world.partner_a])
    held_offline = await claim(db, offline.id, world.ann)
    held_at_a = await claim(db, at_a.id, world.ann)
    assert await problem_fields(use(db, [held_offline.code], world.ann)) == [
        ("WRONG_CHANNEL", ("couponCodes", "0"))
    ]
    # Limited to partner A's stores: not online without a store, nor at B's store.
    assert await problem_fields(use(db, [held_at_a.code], world.ann)) == [
        ("WRONG_STORE", ("couponCodes", "0"))
    ]
    at_b = use(db, [held_at_a.code], world.ann, store_id=world.store_b1, partner_id=world.partner_b)
    assert await problem_fields(at_b) == [("WRONG_STORE", ("couponCodes", "0"))]
    late = use(db, [held_offline.code], world.ann, use=CouponChannel.OFFLINE, now=T0 + 60 * DAY)
    assert await problem_fields(late) == [("EXPIRED", ("couponCodes", "0"))]
    done = await use(
        db,
        [held_at_a.code, held_offline.code],
        world.ann,
        principal=store_staff(world.partner_a, world.store_a2),
        use=CouponChannel.OFFLINE,
        store_id=world.store_a2,
        partner_id=world.partner_a,
    )
    assert {c.redeemed_store_id for c, _ in done} == {world.store_a2}


async def test_releasing_an_order_finds_its_coupons_with_or_without_a_store(db, world):
    template = await new_template(db, per_person_limit=2)
    online = await claim(db, template.id, world.ann)
    at_store = await claim(db, template.id, world.ann)
    await use(db, [online.code], world.ann, order_ref="7")
    await use(
        db,
        [at_store.code],
        world.ann,
        store_id=world.store_a1,
        partner_id=world.partner_a,
        order_ref="8",
    )
    async with db.transaction() as session:
        # How the orders domain releases: the order's seller (HQ for a store-less online
        # order; the store's partner otherwise) and the order's id.
        hq = await coupon_release.release(
            session, coupon_release.OrderScope(partner_id=None), order_ref="7", now=T0
        )
        partner = await coupon_release.release(
            session, coupon_release.OrderScope(partner_id=world.partner_a), order_ref="8", now=T0
        )
        # Another seller's release of the same reference finds nothing.
        other = await coupon_release.release(
            session, coupon_release.OrderScope(partner_id=world.partner_b), order_ref="8", now=T0
        )
    assert (hq.restored, partner.restored, other.restored) == ([online.id], [at_store.id], [])


async def violations(db) -> list[ChannelViolation]:
    async with db.read() as session:
        return list(await session.scalars(select(ChannelViolation).order_by(ChannelViolation.id)))


async def test_a_redemption_outside_the_partners_territories_is_recorded(db, world, count_queries):
    async with db.transaction() as session:
        session.add(PartnerTerritory(partner_id=world.partner_a, region_code="310000"))
        (await session.get_one(Store, world.store_a2)).region_code = "440305"
    template = await new_template(db, per_person_limit=3)
    inside, outside, by_hq = [await claim(db, template.id, world.ann) for _ in range(3)]
    with count_queries() as counted:
        await redeem(db, store_staff(world.partner_a, world.store_a1), inside.code)
    # The happy path is still two statements: the check rides in the store's lookup.
    assert counted.count == 2
    assert await violations(db) == []
    used = await redeem(db, store_staff(world.partner_a, world.store_a2), outside.code)
    await redeem(db, HQ, by_hq.code, store_id=world.store_a2)
    found = [
        (v.kind, v.partner_id, v.store_id, v.coupon_id, v.region_code) for v in await violations(db)
    ]
    assert found == [
        (ViolationKind.CROSS_REGION_REDEMPTION, world.partner_a, world.store_a2, used.id, "440305"),
        (
            ViolationKind.CROSS_REGION_REDEMPTION,
            world.partner_a,
            world.store_a2,
            by_hq.id,
            "440305",
        ),
    ]
    # Partner B protects no territory: it redeems anywhere without a record.
    other = await claim(db, template.id, world.bob)
    await redeem(db, store_staff(world.partner_b, world.store_b1), other.code)
    assert len(await violations(db)) == 2
