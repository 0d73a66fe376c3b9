"""Undoing an order gives back exactly the coupons it used (its ``order_coupon`` rows), never
a coupon redeemed at a counter with ``couponRedeem(orderRef:)`` under a reference that reads
like the order's id: that coupon was spent on another sale and must stay spent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from api.coupons import redemption as coupon_redemption
from api.coupons import release as coupon_release
from api.coupons.models import CancelPolicy, CouponStatus
from tests.orders.conftest import (
    NOW,
    coupon_row,
    grant_coupon,
    member,
    store_staff,
)
from tests.orders.test_lifecycle import new_life, pickup_order


async def redeem_at_counter(db, shop, code: str, order_ref: str) -> None:
    async with db.transaction() as session:
        await coupon_redemption.redeem(
            session,
            store_staff(shop.partner_a, shop.a1),
            code,
            store_id=shop.a1,
            order_ref=order_ref,
            now=NOW,
        )


@pytest.mark.parametrize("undo", ["cancel", "expire", "refund"])
async def test_undoing_an_order_leaves_a_counter_coupon_with_its_id_as_reference(
    db, shop, settings, undo
):
    life = new_life(db, settings)
    staff = store_staff(shop.partner_a, shop.a1)
    order = await pickup_order(db, shop)
    # Ann's other coupon, used at a1's till for its own receipt that happens to read "1", "2"..
    counter = await grant_coupon(db, shop.ann)
    await redeem_at_counter(db, shop, counter, str(order.id))
    if undo == "cancel":
        await life.cancel(member(shop.ann), order.id)
    elif undo == "expire":
        run = await life.expire(now=order.pickup_expires_at + timedelta(minutes=1))
        assert (run.expired, run.failed) == (1, [])
    else:
        await life.pickup(staff, code=order.pickup_code)
        await life.refund(staff, order.id, "R-1")
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED  # its own
    spent = await coupon_row(db, counter)
    assert (spent.status, spent.redeemed_for) == (CouponStatus.REDEEMED, str(order.id))


async def test_release_order_coupons_touches_only_coupons_still_redeemed_for_the_order(db, shop):
    restore = await grant_coupon(db, shop.ann)
    void = await grant_coupon(db, shop.ann, cancel_policy=CancelPolicy.VOID)
    elsewhere = await grant_coupon(db, shop.ann)
    for code, ref in ((restore, "7"), (void, "7"), (elsewhere, "8")):
        await redeem_at_counter(db, shop, code, ref)
    ids = [(await coupon_row(db, code)).id for code in (restore, void, elsewhere)]
    async with db.transaction() as session:
        result = await coupon_release.release_order_coupons(session, 7, ids, now=NOW)
    assert (result.restored, result.voided) == ([ids[0]], [ids[1]])
    assert (await coupon_row(db, elsewhere)).status is CouponStatus.REDEEMED  # another order's
    async with db.transaction() as session:
        again = await coupon_release.release_order_coupons(session, 7, ids, now=NOW)
        nothing = await coupon_release.release_order_coupons(session, 7, [], now=NOW)
    assert (again.restored, again.voided) == ([], [])  # released once, never twice
    assert (nothing.restored, nothing.voided) == ([], [])
