"""Claiming (领券) and granting: every check, in order, and nothing half-written on failure."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from api.coupons import claims as coupon_claims
from api.coupons import templates as coupon_templates
from api.coupons.models import (
    Coupon,
    CouponChannel,
    CouponClaimCount,
    CouponOrigin,
    CouponStatus,
    TemplateStatus,
)
from api.customers.merge import merge_customers
from api.customers.models import Customer, CustomerStatus
from tests.coupons.conftest import (
    DAY,
    HQ,
    T0,
    claim,
    failure,
    member,
    new_customers,
    new_template,
    partner_admin,
    problem_fields,
    template_row,
)
from tests.wiring import CUSTOMERS


async def claim_counts(db, template_id):
    async with db.read() as session:
        rows = await session.execute(
            select(CouponClaimCount.customer_id, CouponClaimCount.claimed).where(
                CouponClaimCount.template_id == template_id
            )
        )
        return dict(rows.all())


async def test_a_member_claims_a_coupon_with_an_unguessable_code(db, world):
    template = await new_template(db)
    coupon = await claim(db, template.id, world.ann, store_id=world.store_a1)
    assert re.fullmatch(r"[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{16}", coupon.code)
    assert (coupon.status, coupon.origin) == (CouponStatus.CLAIMED, CouponOrigin.CLAIM)
    assert (coupon.customer_id, coupon.claim_channel) == (world.ann, "online")
    assert coupon.claim_store_id == world.store_a1
    # Fixed validity: the template's dates.
    assert (coupon.valid_from, coupon.valid_until) == (T0 - DAY, T0 + 30 * DAY)
    assert coupon.claimed_at == T0
    assert (await template_row(db, template.id)).issued == 1
    assert await claim_counts(db, template.id) == {world.ann: 1}

    other = await claim(db, template.id, world.bob)
    assert other.code != coupon.code


async def test_a_coupon_valid_n_days_after_claim_runs_from_the_claim(db, world):
    template = await new_template(db, valid_from=None, valid_until=None, valid_days=7)
    later = T0 + 3 * DAY
    coupon = await claim(db, template.id, world.ann, now=later)
    assert (coupon.valid_from, coupon.valid_until) == (later, later + 7 * DAY)


async def test_claims_open_and_close_with_the_claim_window(db, world):
    template = await new_template(db, claim_starts_at=T0, claim_ends_at=T0 + 2 * DAY)
    assert await failure(claim(db, template.id, world.ann, now=T0 - DAY)) == "NOT_STARTED"
    assert await failure(claim(db, template.id, world.ann, now=T0 + 2 * DAY)) == "CLAIM_ENDED"
    assert await failure(claim(db, template.id, world.ann, now=T0)) == "ok"


async def test_a_fixed_validity_that_has_ended_ends_the_claims_too(db, world):
    template = await new_template(db)  # valid until T0 + 30 days, no claim window
    assert await failure(claim(db, template.id, world.ann, now=T0 + 30 * DAY)) == "CLAIM_ENDED"


async def test_a_claim_must_happen_on_a_channel_the_template_allows(db, world):
    online = await new_template(db, claim_channel=CouponChannel.ONLINE)
    offline = await new_template(db, claim_channel=CouponChannel.OFFLINE)
    # HQ states the channel of a grant; an offline one happens at a store.
    grant = {"principal": HQ, "store_id": world.store_a1}
    assert await failure(
        claim(db, online.id, world.ann, channel=CouponChannel.OFFLINE, **grant)
    ) == ("WRONG_CHANNEL")
    assert await failure(claim(db, offline.id, world.ann, channel=CouponChannel.ONLINE)) == (
        "WRONG_CHANNEL"
    )
    assert await failure(
        claim(db, offline.id, world.ann, channel=CouponChannel.OFFLINE, **grant)
    ) == ("ok")
    assert await problem_fields(claim(db, online.id, world.bob, channel=CouponChannel.BOTH)) == [
        ("INVALID", ("channel",))
    ]


async def test_a_member_claims_online_and_cannot_claim_an_offline_campaign_from_home(db, world):
    offline = await new_template(db, claim_channel=CouponChannel.OFFLINE)
    both = await new_template(db)
    # The review's scenario: a member sends OFFLINE and any store. Refused, whatever the store.
    for store_id in (world.store_a1, world.store_b1, None):
        call = claim(db, offline.id, world.ann, channel=CouponChannel.OFFLINE, store_id=store_id)
        assert await problem_fields(call) == [("FORBIDDEN", ("channel",))]
    # Unstated, a member's claim is online: the offline campaign is then on the wrong channel.
    assert await failure(claim(db, offline.id, world.ann, channel=None)) == "WRONG_CHANNEL"
    coupon = await claim(db, both.id, world.ann, channel=None)
    assert coupon.claim_channel == "online"
    async with db.read() as session:
        held = await session.scalar(select(func.count()).select_from(Coupon))
    assert held == 1
    assert (await template_row(db, offline.id)).issued == 0


async def test_an_offline_claim_names_a_store_where_the_template_may_be_used(db, world):
    at_a1 = await new_template(db, claim_channel=CouponChannel.OFFLINE, store_ids=[world.store_a1])
    partner_a = await new_template(db, partner_ids=[world.partner_a])
    offline = CouponChannel.OFFLINE
    # HQ grants offline: at a store (named), and one of the template's.
    assert await problem_fields(claim(db, at_a1.id, world.ann, principal=HQ, channel=offline)) == [
        ("REQUIRED", ("storeId",))
    ]
    for store_id in (world.store_a2, world.store_b1, world.store_hq):
        call = claim(db, at_a1.id, world.ann, principal=HQ, channel=offline, store_id=store_id)
        assert await problem_fields(call) == [("WRONG_STORE", ("storeId",))]
    granted = await claim(
        db, at_a1.id, world.ann, principal=HQ, channel=offline, store_id=world.store_a1
    )
    assert (granted.claim_channel, granted.claim_store_id) == ("offline", world.store_a1)
    # HQ naming a store without a channel: offline there.
    second = await claim(
        db, partner_a.id, world.bob, principal=HQ, channel=None, store_id=world.store_a2
    )
    assert (second.claim_channel, second.claim_store_id) == ("offline", world.store_a2)
    # A member's online claim through a store is attributed only to a store it may be used at.
    call = claim(db, partner_a.id, world.ann, store_id=world.store_b1)
    assert await problem_fields(call) == [("WRONG_STORE", ("storeId",))]
    assert (await claim(db, partner_a.id, world.ann, store_id=world.store_a1)).claim_store_id == (
        world.store_a1
    )
    assert await claim_counts(db, at_a1.id) == {world.ann: 1}
    assert (await template_row(db, at_a1.id)).issued == 1


async def test_a_paused_template_gives_nothing_until_resumed(db, world):
    template = await new_template(db)
    async with db.transaction() as session:
        await coupon_templates.update_template(
            session, HQ, template.id, status=TemplateStatus.PAUSED
        )
    assert await failure(claim(db, template.id, world.ann)) == "TEMPLATE_PAUSED"
    async with db.transaction() as session:
        await coupon_templates.update_template(
            session, HQ, template.id, status=TemplateStatus.ACTIVE
        )
    assert await failure(claim(db, template.id, world.ann)) == "ok"


async def test_the_per_person_limit_counts_claims_and_grants_together(db, world):
    template = await new_template(db, per_person_limit=2)
    await claim(db, template.id, world.ann)
    await claim(db, template.id, world.ann, principal=HQ)  # an HQ grant counts as well
    assert await failure(claim(db, template.id, world.ann)) == "LIMIT_REACHED"
    assert await failure(claim(db, template.id, world.ann, principal=HQ)) == "LIMIT_REACHED"
    assert await claim_counts(db, template.id) == {world.ann: 2}
    assert await failure(claim(db, template.id, world.bob)) == "ok"


async def test_stock_runs_out_and_a_refused_claim_leaves_nothing_behind(db, world):
    template = await new_template(db, total_stock=1)
    await claim(db, template.id, world.ann)
    assert await failure(claim(db, template.id, world.bob)) == "OUT_OF_STOCK"
    # Bob's count was raised before the stock guard refused: it rolled back with the claim.
    assert await claim_counts(db, template.id) == {world.ann: 1}
    assert (await template_row(db, template.id)).issued == 1
    async with db.transaction() as session:
        await coupon_templates.update_template(session, HQ, template.id, total_stock=2)
    assert await failure(claim(db, template.id, world.bob)) == "ok"


async def test_a_retried_claim_with_the_same_key_returns_the_first_coupon(db, world):
    template = await new_template(db, per_person_limit=3)
    first = await claim(db, template.id, world.ann, claim_key="tap-1")
    again = await claim(db, template.id, world.ann, claim_key="tap-1")
    assert again.id == first.id and again.code == first.code
    assert (await template_row(db, template.id)).issued == 1
    # Another key is another claim; the same key from another person is theirs alone.
    assert (await claim(db, template.id, world.ann, claim_key="tap-2")).id != first.id
    assert (await claim(db, template.id, world.bob, claim_key="tap-1")).customer_id == world.bob
    assert await claim_counts(db, template.id) == {world.ann: 2, world.bob: 1}


async def test_a_claim_retried_after_the_holder_was_merged_returns_the_first_coupon(db, world):
    template = await new_template(db, per_person_limit=3)
    (dup,) = await new_customers(db)
    first = await service_claim(db, member(dup), template.id, claim_key="tap-1")
    assert first.created
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, world.ann, [dup], dry_run=False, wiring=CUSTOMERS, now=T0
        )
    # The app retries with the token it had (the old id), or the survivor's new token, or HQ
    # retries a grant naming either id: each time the first coupon, never a second.
    for principal, named in (
        (member(dup), None),
        (member(world.ann), None),
        (member(world.ann), dup),
    ):
        again = await service_claim(db, principal, template.id, named, claim_key="tap-1")
        assert (again.created, again.coupon.id, again.coupon.code) == (
            False,
            first.coupon.id,
            first.coupon.code,
        )
    assert (await template_row(db, template.id)).issued == 1
    assert await claim_counts(db, template.id) == {world.ann: 1}
    # A new key is a new claim of the merged person; the same key is still another person's own.
    assert (await service_claim(db, member(world.ann), template.id, claim_key="tap-2")).created
    bobs = await service_claim(db, member(world.bob), template.id, claim_key="tap-1")
    assert bobs.created and bobs.coupon.customer_id == world.bob
    assert await claim_counts(db, template.id) == {world.ann: 2, world.bob: 1}


async def test_a_grant_key_used_before_a_merge_is_found_after_it(db, world):
    template = await new_template(db, per_person_limit=2)
    (dup,) = await new_customers(db)
    first = await service_claim(db, HQ, template.id, dup, claim_key="crm-42")
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, world.ann, [dup], dry_run=False, wiring=CUSTOMERS, now=T0
        )
    again = await service_claim(db, HQ, template.id, world.ann, claim_key="crm-42")
    assert (again.created, again.coupon.id) == (False, first.coupon.id)
    assert (await template_row(db, template.id)).issued == 1


async def service_claim(db, principal, template_id, customer_id=None, **kwargs):
    origin = CouponOrigin.CLAIM if principal.is_member else CouponOrigin.GRANT
    async with db.transaction() as session:
        return await coupon_claims.claim(
            session,
            principal,
            template_id,
            customer_id,
            channel=CouponChannel.ONLINE,
            now=T0,
            origin=origin,
            **kwargs,
        )


async def test_claims_refer_to_missing_things_as_not_found(db, world):
    template = await new_template(db)
    assert await problem_fields(claim(db, template.id + 1, world.ann)) == [
        ("NOT_FOUND", ("templateId",))
    ]
    assert await problem_fields(claim(db, template.id, world.ann, store_id=999)) == [
        ("NOT_FOUND", ("storeId",))
    ]
    assert await problem_fields(claim(db, template.id, 999, principal=HQ)) == [
        ("NOT_FOUND", ("customerId",))
    ]


async def test_a_member_claims_only_for_themself(db, world):
    template = await new_template(db)
    # Ann's token naming Bob: Bob answers like a missing customer.
    call = claim(db, template.id, world.bob, principal=member(world.ann))
    assert await problem_fields(call) == [("NOT_FOUND", ("customerId",))]
    # Nobody else "claims": partners cannot, and granting is HQ's.
    async with db.transaction() as session:
        call = coupon_claims.claim(
            session,
            partner_admin(world.partner_a),
            template.id,
            world.ann,
            channel=CouponChannel.OFFLINE,
            origin=CouponOrigin.GRANT,
        )
        assert await failure(call) == "FORBIDDEN"
    async with db.transaction() as session:
        call = coupon_claims.claim(
            session, HQ, template.id, world.ann, channel=CouponChannel.ONLINE, now=T0
        )
        assert await failure(call) == "FORBIDDEN"  # HQ grants (origin GRANT), never claims


async def test_an_hq_grant_is_recorded_as_such(db, world):
    template = await new_template(db)
    coupon = await claim(db, template.id, world.bob, principal=HQ)
    assert (coupon.origin, coupon.customer_id) == (CouponOrigin.GRANT, world.bob)


async def test_a_merged_id_claims_as_the_surviving_person(db, world):
    template = await new_template(db, per_person_limit=1)
    (old,) = await new_customers(db)
    async with db.transaction() as session:
        row = await session.get(Customer, old)
        row.status, row.merged_into_id = CustomerStatus.MERGED, world.ann
    coupon = await claim(db, template.id, old, principal=HQ)
    assert coupon.customer_id == world.ann
    # The old id of the same person: the limit is reached for Ann, whichever id is used.
    assert await failure(claim(db, template.id, world.ann)) == "LIMIT_REACHED"
    # A member token still naming the old id claims for the survivor, too.
    second = await new_template(db)
    assert (await claim(db, second.id, old, principal=member(old))).customer_id == world.ann
    async with db.read() as session:
        held = await session.scalar(
            select(func.count()).select_from(Coupon).where(Coupon.customer_id == old)
        )
    assert held == 0
