"""Redemption (核销): exactly once, only where and when the coupon allows, only by who may;
and release when the order it was used on is cancelled."""

from __future__ import annotations

from api.auth.principal import Principal, Role
from api.coupons import release as coupon_release
from api.coupons.models import CancelPolicy, CouponChannel, CouponStatus
from api.errors import DomainError
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


def integration(partner_id: int, store_id: int | None = None) -> Principal:
    """A partner's system over client credentials: a POS, or a web shop."""
    return Principal(
        f"client:{partner_id}:{store_id}",
        Role.INTEGRATION,
        partner_id=partner_id,
        store_id=store_id,
        scopes=frozenset({"coupons:redeem"}),
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
    online_only = await new_template(db, use_channel=CouponChannel.ONLINE, per_person_limit=3)
    offline_only = await new_template(db, use_channel=CouponChannel.OFFLINE)
    a = await claim(db, online_only.id, world.ann)
    b = await claim(db, offline_only.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    # At a store, the use is offline; HQ without a store: online.
    assert await failure(redeem(db, staff, a.code)) == "WRONG_CHANNEL"
    assert await failure(redeem(db, HQ, b.code)) == "WRONG_CHANNEL"
    assert await failure(redeem(db, staff, b.code)) == "ok"
    # A partner's web shop (its integration) states ONLINE, at a store of its partner.
    shop = integration(world.partner_a)
    assert await failure(redeem(db, shop, a.code, store_id=world.store_a2)) == "WRONG_CHANNEL"
    used = await redeem(
        db, shop, a.code, store_id=world.store_a2, channel=CouponChannel.ONLINE, order_ref="W-1"
    )
    assert used.redeemed_store_id == world.store_a2
    # HQ states it too; an offline use happens at a store.
    c = await claim(db, online_only.id, world.ann, principal=HQ)
    assert await problem_fields(redeem(db, HQ, c.code, channel=CouponChannel.OFFLINE)) == [
        ("REQUIRED", ("storeId",))
    ]
    assert await failure(redeem(db, HQ, c.code, store_id=world.store_hq)) == "WRONG_CHANNEL"
    assert (
        await failure(redeem(db, HQ, c.code, store_id=world.store_hq, channel=CouponChannel.ONLINE))
        == "ok"
    )


async def test_staff_at_the_counter_cannot_call_a_use_online(db, world):
    online_only = await new_template(db, use_channel=CouponChannel.ONLINE)
    held = await claim(db, online_only.id, world.ann)
    # The review's scenario: store staff redeem an online-only coupon by sending ONLINE.
    for principal in (
        store_staff(world.partner_a, world.store_a1),
        partner_admin(world.partner_a),
        integration(world.partner_a, store_id=world.store_a1),  # a store's own POS
    ):
        call = redeem(
            db, principal, held.code, store_id=world.store_a1, channel=CouponChannel.ONLINE
        )
        assert await problem_fields(call) == [("FORBIDDEN", ("channel",))]
    assert await problem_fields(redeem(db, HQ, held.code, channel=CouponChannel.BOTH)) == [
        ("INVALID", ("channel",))
    ]
    assert (await coupon(db, held.id)).status is CouponStatus.CLAIMED


async def test_a_coupon_limited_to_stores_or_partners_is_used_only_there(db, world):
    at_a1 = await new_template(db, store_ids=[world.store_a1])
    at_partner_b = await new_template(db, partner_ids=[world.partner_b])
    either = await new_template(db, store_ids=[world.store_hq], partner_ids=[world.partner_a])
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    staff_a2 = store_staff(world.partner_a, world.store_a2)
    staff_b1 = store_staff(world.partner_b, world.store_b1)

    admin_a = partner_admin(world.partner_a)

    # A coupon that can never be used at the caller's stores is, to the caller, no coupon.
    # A partner-wide caller may use it at another of its stores: there, it is the wrong one.
    c = await claim(db, at_a1.id, world.ann)
    assert await failure(redeem(db, staff_a2, c.code)) == "NOT_FOUND"
    assert await failure(redeem(db, staff_b1, c.code)) == "NOT_FOUND"
    assert await failure(redeem(db, admin_a, c.code, store_id=world.store_a2)) == "WRONG_STORE"
    assert await failure(redeem(db, HQ, c.code)) == "WRONG_STORE"  # online, no store
    assert await failure(redeem(db, staff_a1, c.code)) == "ok"

    c = await claim(db, at_partner_b.id, world.ann)
    assert await failure(redeem(db, staff_a1, c.code)) == "NOT_FOUND"
    assert await failure(redeem(db, HQ, c.code, store_id=world.store_a1)) == "WRONG_STORE"
    assert await failure(redeem(db, staff_b1, c.code)) == "ok"

    c = await claim(db, either.id, world.ann)
    assert await failure(redeem(db, staff_b1, c.code)) == "NOT_FOUND"
    assert await failure(redeem(db, HQ, c.code, store_id=world.store_hq)) == "ok"
    c2 = await claim(db, either.id, world.bob)
    assert await failure(redeem(db, staff_a2, c2.code)) == "ok"


async def test_a_voided_coupon_cannot_be_used(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.VOID)
    held = await claim(db, template.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    await redeem(db, staff, held.code, order_ref="O-1")
    async with db.transaction() as session:
        await coupon_release.release(session, staff, order_ref="O-1", now=T0)
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
    template = await new_template(
        db, store_ids=[world.store_a1], valid_until=T0 + DAY, use_channel=CouponChannel.OFFLINE
    )
    held = await claim(db, template.id, world.ann)
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    admin_a = partner_admin(world.partner_a)
    shop_a = integration(world.partner_a)
    await redeem(db, staff_a1, held.code)
    later = T0 + 2 * DAY
    # Redeemed and expired, tried online, or at the wrong store of the same partner: where
    # comes first, it is what the cashier can act on.
    online = redeem(db, shop_a, held.code, store_id=world.store_a1, channel=CouponChannel.ONLINE)
    assert await failure(online) == "WRONG_CHANNEL"
    wrong_store = redeem(db, admin_a, held.code, store_id=world.store_a2, now=later)
    assert await failure(wrong_store) == "WRONG_STORE"
    assert await problem_fields(redeem(db, staff_a1, held.code, now=later)) == [
        ("ALREADY_REDEEMED", ("code",))
    ]


async def test_another_partners_exclusive_coupon_is_refused_exactly_like_an_unknown_code(db, world):
    only_b = await new_template(
        db, partner_ids=[world.partner_b], use_channel=CouponChannel.ONLINE, per_person_limit=2
    )
    fresh = await claim(db, only_b.id, world.bob)
    used = await claim(db, only_b.id, world.bob)
    await redeem(
        db,
        integration(world.partner_b),
        used.code,
        store_id=world.store_b1,
        channel=CouponChannel.ONLINE,
    )

    async def refusal(principal, code, **kwargs):
        try:
            await redeem(db, principal, code, **kwargs)
        except DomainError as error:
            return [(p.code.name, p.message, p.field) for p in error.problems]
        raise AssertionError("redeemed another partner's coupon")

    # Partner A tries every channel and store it may name: each answer is the unknown code's.
    for principal, stores in (
        (store_staff(world.partner_a, world.store_a1), (None,)),
        (partner_admin(world.partner_a), (world.store_a1, world.store_a2)),
        (integration(world.partner_a), (world.store_a1, world.store_a2)),
    ):
        unknown = await refusal(principal, "ABCDEFGHJKMNPQRS", store_id=stores[0])
        assert unknown == [("NOT_FOUND", "No such coupon.", ("code",))]
        for store_id in stores:
            for channel in (None, CouponChannel.ONLINE, CouponChannel.OFFLINE):
                if channel is CouponChannel.ONLINE and principal.role is not Role.INTEGRATION:
                    continue  # refused for who they are, before any code is read
                for code in (fresh.code, used.code):
                    got = await refusal(principal, code, store_id=store_id, channel=channel)
                    assert got == unknown
    assert (await coupon(db, fresh.id)).status is CouponStatus.CLAIMED


async def test_when_a_coupon_was_used_is_told_only_to_who_could_see_that_use(db, world):
    anywhere = await new_template(db)
    held = await claim(db, anywhere.id, world.ann)
    staff_b1 = store_staff(world.partner_b, world.store_b1)
    await redeem(db, staff_b1, held.code, now=T0 + DAY)

    async def message(principal, **kwargs):
        try:
            await redeem(db, principal, held.code, **kwargs)
        except DomainError as error:
            (problem,) = error.problems
            assert problem.code.name == "ALREADY_REDEEMED"
            return problem.message
        raise AssertionError("redeemed twice")

    used_at = f"This coupon was redeemed at {(T0 + DAY).isoformat()}."
    assert await message(staff_b1) == used_at
    assert await message(HQ, store_id=world.store_hq) == used_at
    # Partner A could use this coupon too, so it learns it is gone; not when, nor at whose.
    hidden = "This coupon was already redeemed."
    assert await message(store_staff(world.partner_a, world.store_a1)) == hidden
    assert await message(partner_admin(world.partner_a), store_id=world.store_a2) == hidden


# --- release on order cancel ---------------------------------------------------------------


async def test_cancelling_an_order_restores_its_coupon_while_it_is_valid(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.RESTORE)
    held = await claim(db, template.id, world.ann)
    staff = store_staff(world.partner_a, world.store_a1)
    await redeem(db, staff, held.code, order_ref="O-7")
    async with db.transaction() as session:
        result = await coupon_release.release(session, staff, order_ref="O-7", now=T0 + DAY)
    assert (result.restored, result.voided) == ([held.id], [])
    back = await coupon(db, held.id)
    assert back.status is CouponStatus.CLAIMED
    assert (back.redeemed_at, back.redeemed_store_id, back.redeemed_for) == (None, None, None)
    # Idempotent: cancelling again changes nothing; and the coupon can be used again.
    async with db.transaction() as session:
        again = await coupon_release.release(session, staff, order_ref="O-7", now=T0 + DAY)
    assert (again.restored, again.voided) == ([], [])
    assert await failure(redeem(db, staff, held.code, order_ref="O-8")) == "ok"


async def test_a_restored_coupon_past_its_validity_is_voided_instead(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.RESTORE, valid_until=T0 + DAY)
    held = await claim(db, template.id, world.ann)
    await redeem(db, store_staff(world.partner_a, world.store_a1), held.code, order_ref="O-9")
    async with db.transaction() as session:
        seller = coupon_release.OrderScope(
            partner_id=world.partner_a
        )  # as the orders domain calls it
        result = await coupon_release.release(session, seller, order_ref="O-9", now=T0 + 2 * DAY)
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
        result = await coupon_release.release(session, staff, order_ref="O-1", now=T0)
    assert (result.restored, result.voided) == ([two.id], [one.id])
    assert (await coupon(db, other.id)).status is CouponStatus.REDEEMED
    async with db.transaction() as session:
        again = await coupon_release.release(session, staff, order_ref="O-1", now=T0)
    assert (again.restored, again.voided) == ([], [])


async def test_cancelling_an_order_touches_only_the_cancelling_partners_coupons(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.RESTORE, per_person_limit=5)
    staff_a1 = store_staff(world.partner_a, world.store_a1)
    staff_a2 = store_staff(world.partner_a, world.store_a2)
    staff_b1 = store_staff(world.partner_b, world.store_b1)
    # Order "1001" exists at partner A, at partner B and at HQ (online): three orders.
    at_a = await claim(db, template.id, world.ann)
    at_b = await claim(db, template.id, world.bob)
    at_hq = await claim(db, template.id, world.bob)
    await redeem(db, staff_a1, at_a.code, order_ref="1001")
    await redeem(db, staff_b1, at_b.code, order_ref="1001")
    await redeem(db, HQ, at_hq.code, order_ref="1001")

    async def release(scope):
        async with db.transaction() as session:
            result = await coupon_release.release(session, scope, order_ref="1001", now=T0 + DAY)
        return result.restored, result.voided

    async def statuses():
        return [(await coupon(db, c.id)).status for c in (at_a, at_b, at_hq)]

    redeemed, claimed = CouponStatus.REDEEMED, CouponStatus.CLAIMED
    # Store a2's staff: a1's order is not theirs either.
    assert await release(staff_a2) == ([], [])
    assert await release(staff_a1) == ([at_a.id], [])
    assert await statuses() == [claimed, redeemed, redeemed]
    # Partner B's admin cancels its own "1001"; HQ its own.
    assert await release(partner_admin(world.partner_b)) == ([at_b.id], [])
    assert await statuses() == [claimed, claimed, redeemed]
    assert await release(HQ) == ([at_hq.id], [])
    assert await statuses() == [claimed, claimed, claimed]


async def test_a_void_on_cancel_is_scoped_to_the_seller_too(db, world):
    template = await new_template(db, cancel_policy=CancelPolicy.VOID, per_person_limit=5)
    at_a = await claim(db, template.id, world.ann)
    at_b = await claim(db, template.id, world.bob)
    at_hq_store = await claim(db, template.id, world.bob)
    await redeem(db, store_staff(world.partner_a, world.store_a2), at_a.code, order_ref="77")
    await redeem(db, store_staff(world.partner_b, world.store_b1), at_b.code, order_ref="77")
    await redeem(db, HQ, at_hq_store.code, store_id=world.store_hq, order_ref="77")
    async with db.transaction() as session:
        result = await coupon_release.release(
            session, coupon_release.OrderScope(partner_id=world.partner_a), order_ref="77", now=T0
        )
    assert (result.restored, result.voided) == ([], [at_a.id])
    async with db.transaction() as session:
        result = await coupon_release.release(
            session, coupon_release.OrderScope(None), order_ref="77", now=T0
        )
    assert (result.restored, result.voided) == ([], [at_hq_store.id])
    assert (await coupon(db, at_b.id)).status is CouponStatus.REDEEMED
    # Members sell nothing.
    async with db.transaction() as session:
        call = coupon_release.release(session, member(world.ann), order_ref="77", now=T0)
        assert await failure(call) == "FORBIDDEN"
