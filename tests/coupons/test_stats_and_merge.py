"""Per-template stats, and what a customer merge does to coupons and per-person limits."""

from __future__ import annotations

from sqlalchemy import select

from api.coupons import release as coupon_release
from api.coupons import stats as coupon_stats
from api.coupons.models import CancelPolicy, Coupon, CouponChannel, CouponClaimCount
from api.customers.merge import merge_customers
from tests.coupons.conftest import (
    DAY,
    HQ,
    T0,
    claim,
    failure,
    new_customers,
    new_template,
    redeem,
    store_staff,
)
from tests.wiring import CUSTOMERS


async def test_stats_count_every_coupon_by_origin_state_channel_and_store(db, world):
    template = await new_template(
        db,
        total_stock=10,
        per_person_limit=5,
        cancel_policy=CancelPolicy.VOID,
        valid_from=None,
        valid_until=None,
        valid_days=5,
    )
    untouched = await new_template(db, total_stock=3)
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    staff_b1 = store_staff(world.partner_b, world.store_b1)
    online = [await claim(db, template.id, world.ann) for _ in range(3)]
    offline = [
        await claim(
            db,
            template.id,
            world.bob,
            principal=HQ,
            channel=CouponChannel.OFFLINE,
            store_id=world.store_b1,
        )
    ]
    granted = [await claim(db, template.id, world.bob, principal=HQ) for _ in range(2)]
    early = await claim(db, template.id, world.bob, now=T0 - 10 * DAY)  # expired by T0
    await redeem(db, staff_a1, online[0].code)
    await redeem(db, staff_a1, online[1].code)
    await redeem(db, staff_b1, offline[0].code)
    await redeem(db, HQ, granted[0].code, order_ref="O-1")  # online, no store
    async with db.transaction() as session:
        await coupon_release.release(session, HQ, order_ref="O-1", now=T0)  # VOID policy

    async with db.read() as session:
        stats = await coupon_stats.template_stats(session, [template.id, untouched.id], now=T0)
    got = stats[template.id]
    assert (got.issued, got.claimed, got.granted, got.remaining) == (7, 4, 3, 3)
    assert (got.redeemed, got.voided, got.expired) == (3, 1, 1)
    assert got.claims_by_channel == {"offline": 1, "online": 6}
    assert got.redemptions_by_store == {world.store_a1: 2, world.store_b1: 1}
    assert early.valid_until < T0
    assert stats[untouched.id] == coupon_stats.TemplateStats(remaining=3)


async def test_stats_of_many_templates_take_a_fixed_number_of_statements(db, world, count_queries):
    templates = [await new_template(db, name=f"券{i}") for i in range(6)]
    for t in templates:
        await claim(db, t.id, world.ann)
    async with db.read() as session:
        with count_queries() as few:
            await coupon_stats.template_stats(session, [t.id for t in templates[:2]])
        with count_queries() as many:
            await coupon_stats.template_stats(session, [t.id for t in templates])
    assert few.count == many.count == 3


async def held_by(db, customer_id):
    async with db.read() as session:
        rows = await session.scalars(select(Coupon.id).where(Coupon.customer_id == customer_id))
        return sorted(rows)


async def counts_of(db, customer_id):
    async with db.read() as session:
        rows = await session.execute(
            select(CouponClaimCount.template_id, CouponClaimCount.claimed).where(
                CouponClaimCount.customer_id == customer_id
            )
        )
        return dict(rows.all())


async def test_a_merge_moves_coupons_and_the_limit_then_counts_the_merged_person(db, world):
    limit_two = await new_template(db, name="限领2张", per_person_limit=2)
    only_ann = await new_template(db, name="仅Ann", per_person_limit=3)
    dup, other = await new_customers(db, 2)
    a1 = await claim(db, limit_two.id, world.ann)
    d1 = await claim(db, limit_two.id, dup)
    d2 = await claim(db, limit_two.id, dup)
    a2 = await claim(db, only_ann.id, world.ann)
    o1 = await claim(db, limit_two.id, other)

    async with db.transaction() as session:
        preview = await merge_customers(
            session, HQ, world.ann, [dup], dry_run=True, wiring=CUSTOMERS, now=T0
        )
        await session.rollback()
    moves = {m.kind: m for m in preview.moves}
    assert (moves["coupons"].count, moves["coupons"].description) == (2, "2 coupons of 1 template")
    assert any("限领2张" in c.message and "limit 2" in c.message for c in preview.conflicts)

    async with db.transaction() as session:
        await merge_customers(
            session, HQ, world.ann, [dup], dry_run=False, wiring=CUSTOMERS, now=T0
        )
    assert await held_by(db, world.ann) == sorted([a1.id, d1.id, d2.id, a2.id])
    assert await held_by(db, dup) == []
    assert await counts_of(db, world.ann) == {limit_two.id: 3, only_ann.id: 1}
    assert await counts_of(db, dup) == {}
    assert await held_by(db, other) == [o1.id]
    # Three of a limit-two template: kept, but no more, whichever id claims.
    assert await failure(claim(db, limit_two.id, world.ann)) == "LIMIT_REACHED"
    assert await failure(claim(db, limit_two.id, dup, principal=HQ)) == "LIMIT_REACHED"
    assert await failure(claim(db, only_ann.id, dup, principal=HQ)) == "ok"
    # The moved coupons are the survivor's to use.
    assert await failure(redeem(db, store_staff(world.partner_a, world.store_a1), d1.code)) == "ok"


async def test_a_merge_of_customers_without_coupons_moves_none(db, world):
    (dup,) = await new_customers(db)
    async with db.transaction() as session:
        outcome = await merge_customers(
            session, HQ, world.ann, [dup], dry_run=True, wiring=CUSTOMERS, now=T0
        )
        await session.rollback()
    assert [m for m in outcome.moves if m.kind == "coupons"] == []
