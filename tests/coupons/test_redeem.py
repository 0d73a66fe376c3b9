"""Redemption (核销): exactly once, only where and when the coupon allows, only by who may;
and release when the order it was used on is cancelled."""

from __future__ import annotations

from api.coupons import service
from api.coupons.models import CancelPolicy, CouponChannel, CouponStatus
from tests.coupons.conftest import (
    DAY,
    HQ,
    T0,
    claim,
    coupon,
    failure,
    member,
    new_template,
    partner_admin,
    problem_fields,
    redeem,
    store_staff,
)


async def test_store_staff_redeem_a_coupon_once(db, world):
    template = await new_template(db)
    held = await claim(db, template.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    used = await redeem(db, staff, held.code, order_ref="POS-1001", now=T0 + DAY)
    assert used.id == held.id
    assert used.status is CouponStatus.REDEEMED
    assert (used.redeemed_at, used.redeemed_store_id) == (T0 + DAY, world.store_a1)
    assert used.redeemed_by == staff.subject and used.redeemed_for == "POS-1001"
    # The second time is refused and changes nothing.
    again = redeem(db, staff, held.code, now=T0 + 2 * DAY)
    assert await problem_fields(again) == [("ALREADY_REDEEMED", ("code",))]
    assert (await coupon(db, held.id)).redeemed_at == T0 + DAY


async def test_a_code_is_read_as_typed_or_scanned(db, world):
    template = await new_template(db)
    held = await claim(db, template.id, world.ann)
    typed = "-".join(held.code[i : i + 4] for i in range(0, 16, 4)).lower()
    staff = store_staff(world.partner_a, world.store_a1)
    assert (await redeem(db, staff, f" {typed} ")).id == held.id


async def test_an_unknown_code_is_not_found(db, world):
    staff = store_staff(world.partner_a, world.store_a1)
    assert await problem_fields(redeem(db, staff, "ABCDEFGHJKMNPQRS")) == [("NOT_FOUND", ("code",))]
    assert await problem_fields(redeem(db, staff, "not a code")) == [("NOT_FOUND", ("code",))]


async def test_a_coupon_is_used_only_within_its_validity(db, world):
    template = await new_template(db, valid_from=T0 + DAY, valid_until=T0 + 3 * DAY)
    held = await claim(db, template.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    assert await failure(redeem(db, staff, held.code, now=T0)) == "NOT_STARTED"
    assert await failure(redeem(db, staff, held.code, now=T0 + 3 * DAY)) == "EXPIRED"
    assert await failure(redeem(db, staff, held.code, now=T0 + 3 * DAY - DAY / 24)) == "ok"


async def test_a_coupon_valid_n_days_expires_n_days_after_its_claim(db, world):
    template = await new_template(db, valid_from=None, valid_until=None, valid_days=7)
    held = await claim(db, template.id, world.ann, now=T0 + 2 * DAY)
    staff = store_staff(world.partner_a, world.store_a1)
    assert await failure(redeem(db, staff, held.code, now=T0 + 9 * DAY)) == "EXPIRED"
    assert await failure(redeem(db, staff, held.code, now=T0 + 8 * DAY)) == "ok"


async def test_a_coupon_is_used_only_on_its_channel(db, world):
    online_only = await new_template(db, use_channel=CouponChannel.ONLINE)
    offline_only = await new_template(db, use_channel=CouponChannel.OFFLINE)
    a = await claim(db, online_only.id, world.ann)
    b = await claim(db, offline_only.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    # At a store, the use is offline unless said otherwise.
    assert await failure(redeem(db, staff, a.code)) == "WRONG_CHANNEL"
    assert await failure(redeem(db, HQ, b.code)) == "WRONG_CHANNEL"  # HQ, no store: online
    assert await failure(redeem(db, staff, a.code, channel=CouponChannel.ONLINE)) == "ok"
    assert await failure(redeem(db, staff, b.code)) == "ok"


async def test_a_coupon_limited_to_stores_or_partners_is_used_only_there(db, world):
    at_a1 = await new_template(db, store_ids=[world.store_a1])
    at_partner_b = await new_template(db, partner_ids=[world.partner_b])
    either = await new_template(db, store_ids=[world.store_hq], partner_ids=[world.partner_a])
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    staff_a2 = store_staff(world.partner_a, world.store_a2)
    staff_b1 = store_staff(world.partner_b, world.store_b1)

    c = await claim(db, at_a1.id, world.ann)
    assert await failure(redeem(db, staff_a2, c.code)) == "WRONG_STORE"
    assert await failure(redeem(db, staff_b1, c.code)) == "WRONG_STORE"
    assert await failure(redeem(db, HQ, c.code)) == "WRONG_STORE"  # online, no store
    assert await failure(redeem(db, staff_a1, c.code)) == "ok"

    c = await claim(db, at_partner_b.id, world.ann)
    assert await failure(redeem(db, staff_a1, c.code)) == "WRONG_STORE"
    assert await failure(redeem(db, staff_b1, c.code)) == "ok"

    c = await claim(db, either.id, world.ann)
    assert await failure(redeem(db, staff_b1, c.code)) == "WRONG_STORE"
    assert await failure(redeem(db, HQ, c.code, store_id=world.store_hq)) == "ok"
    c2 = await claim(db, either.id, world.bob)
    assert await failure(redeem(db, staff_a2, c2.code)) == "ok"


async def test_a_voided_coupon_cannot_be_used(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.VOID)
    held = await claim(db, template.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    await redeem(db, staff, held.code, order_ref="O-1")
    async with db.transaction() as session:
        await service.release(session, order_ref="O-1", now=T0)
    assert await failure(redeem(db, staff, held.code)) == "VOIDED"


async def test_staff_redeem_only_at_their_own_store(db, world):
    template = await new_template(db)
    held = await claim(db, template.id, world.ann)
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    # Store A's staff at store B (same partner): B is out of reach, answered like a missing one.
    assert await problem_fields(redeem(db, staff_a1, held.code, store_id=world.store_a2)) == [
        ("NOT_FOUND", ("storeId",))
    ]
    assert await problem_fields(redeem(db, staff_a1, held.code, store_id=999)) == [
        ("NOT_FOUND", ("storeId",))
    ]
    # Partner A's admin (or its integration client) at any of A's stores, not at B's.
    admin_a = partner_admin(world.partner_a)
    assert await problem_fields(redeem(db, admin_a, held.code, store_id=world.store_b1)) == [
        ("NOT_FOUND", ("storeId",))
    ]
    assert await problem_fields(redeem(db, admin_a, held.code)) == [("REQUIRED", ("storeId",))]
    assert (await redeem(db, admin_a, held.code, store_id=world.store_a2)).redeemed_store_id == (
        world.store_a2
    )
    assert (await coupon(db, held.id)).status is CouponStatus.REDEEMED


async def test_a_member_cannot_redeem_even_their_own_coupon(db, world):
    template = await new_template(db)
    held = await claim(db, template.id, world.ann)
    call = redeem(db, member(world.ann), held.code, store_id=world.store_a1)
    assert await failure(call) == "FORBIDDEN"
    assert (await coupon(db, held.id)).status is CouponStatus.CLAIMED


async def test_failures_are_explained_where_first_then_whether_then_when(db, world):
    template = await new_template(db, store_ids=[world.store_a1], valid_until=T0 + DAY)
    held = await claim(db, template.id, world.ann)
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    staff_b1 = store_staff(world.partner_b, world.store_b1)
    await redeem(db, staff_a1, held.code)
    # Redeemed and expired, tried at the wrong store: the store is what the cashier can act on.
    assert await failure(redeem(db, staff_b1, held.code, now=T0 + 2 * DAY)) == "WRONG_STORE"
    assert await failure(redeem(db, staff_a1, held.code, now=T0 + 2 * DAY)) == "ALREADY_REDEEMED"


# --- release on order cancel ---------------------------------------------------------------


async def test_cancelling_an_order_restores_its_coupon_while_it_is_valid(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.RESTORE)
    held = await claim(db, template.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    await redeem(db, staff, held.code, order_ref="O-7")
    async with db.transaction() as session:
        result = await service.release(session, order_ref="O-7", now=T0 + DAY)
    assert (result.restored, result.voided) == ([held.id], [])
    back = await coupon(db, held.id)
    assert back.status is CouponStatus.CLAIMED
    assert (back.redeemed_at, back.redeemed_store_id, back.redeemed_for) == (None, None, None)
    # Idempotent: cancelling again changes nothing; and the coupon can be used again.
    async with db.transaction() as session:
        again = await service.release(session, order_ref="O-7", now=T0 + DAY)
    assert (again.restored, again.voided) == ([], [])
    assert await failure(redeem(db, staff, held.code, order_ref="O-8")) == "ok"


async def test_a_restored_coupon_past_its_validity_is_voided_instead(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.RESTORE, valid_until=T0 + DAY)
    held = await claim(db, template.id, world.ann)
    await redeem(db, store_staff(world.partner_a, world.store_a1), held.code, order_ref="O-9")
    async with db.transaction() as session:
        result = await service.release(session, order_ref="O-9", now=T0 + 2 * DAY)
    assert (result.restored, result.voided) == ([], [held.id])
    voided = await coupon(db, held.id)
    assert (voided.status, voided.voided_at) == (CouponStatus.VOIDED, T0 + 2 * DAY)


async def test_a_void_policy_voids_on_cancel_and_leaves_other_orders_alone(db, world):
    voiding = await new_template(db, cancel_policy=CancelPolicy.VOID, per_person_limit=2)
    restoring = await new_template(db, cancel_policy=CancelPolicy.RESTORE)
    staff = store_staff(world.partner_a, world.store_a1)
    one = await claim(db, voiding.id, world.ann)
    two = await claim(db, restoring.id, world.ann)
    other = await claim(db, voiding.id, world.ann)
    await redeem(db, staff, one.code, order_ref="O-1")
    await redeem(db, staff, two.code, order_ref="O-1")
    await redeem(db, staff, other.code, order_ref="O-2")
    async with db.transaction() as session:
        result = await service.release(session, order_ref="O-1", now=T0)
    assert (result.restored, result.voided) == ([two.id], [one.id])
    assert (await coupon(db, other.id)).status is CouponStatus.REDEEMED
    async with db.transaction() as session:
        again = await service.release(session, order_ref="O-1", now=T0)
    assert (again.restored, again.voided) == ([], [])
