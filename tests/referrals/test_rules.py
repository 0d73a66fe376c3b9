"""The rules of inviting and accepting, through the service: every refusal with its code, the
daily limit (per UTC day), the inviter's cap (recorded, reward withheld), coupon rewards that
cannot be granted (withheld, the registration stands), and the stats worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from api.coupons import claims as coupon_claims
from api.coupons import templates as coupon_templates
from api.coupons.models import CouponChannel, CouponOrigin
from api.customers.models import CustomerIdentity, IdentityKind
from api.db import Database
from api.referrals import accepting
from api.referrals.accepting import NEW_MEMBER_WINDOW
from api.referrals.campaigns import RewardDraft
from api.referrals.invites import INVITE_CODE_LENGTH, create_invite
from api.referrals.stats import CampaignStats, campaign_stats
from tests.orders.conftest import DAY, HQ, NOW, coupon_draft, member, partner_admin, place, refusal
from tests.referrals.conftest import (
    ENDS,
    SETTINGS,
    STARTS,
    accept,
    invite,
    invite_codes,
    make_campaign,
    newcomer,
    referrals,
    rewards,
)

NOON = datetime.combine(NOW.date(), datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)


async def new_template(db: Database, **overrides: object) -> int:
    async with db.transaction() as session:
        template = await coupon_templates.create_template(
            session, HQ, coupon_draft(name="邀请有礼", **overrides), now=NOW - 2 * DAY
        )
    return template.id


async def stats(db: Database, campaign_id: int) -> CampaignStats:
    async with db.read() as session:
        found = await campaign_stats(session, HQ, campaign_id)
    assert found is not None
    return found


def codes(problems: list[tuple[str, tuple[str, ...] | None]]) -> list[str]:
    return [code for code, _ in problems]


# --- invites ---------------------------------------------------------------------------------


async def test_one_code_per_member_and_campaign_from_an_unambiguous_alphabet(db, shop):
    first = await make_campaign(db)
    second = await make_campaign(db, name="第二期")
    code = await invite(db, shop.ann, first)
    assert await invite(db, shop.ann, first) == code  # a repeat: the same code
    other = await invite(db, shop.ann, second)
    assert other != code
    for made in (code, other):
        assert len(made) == INVITE_CODE_LENGTH
        assert not set(made) & set("01OIL")
    assert len(await invite_codes(db)) == 2


async def test_invites_only_while_the_campaign_runs_and_only_by_members(db, shop):
    campaign_id = await make_campaign(db)
    later = ENDS + timedelta(seconds=1)
    earlier = STARTS - timedelta(seconds=1)
    for now in (later, earlier):
        async with db.transaction() as session:
            problems = await refusal(create_invite(session, member(shop.ann), campaign_id, now=now))
        assert problems == [("CAMPAIGN_NOT_RUNNING", ("campaignId",))]
    async with db.transaction() as session:
        assert await refusal(
            create_invite(session, member(shop.ann), campaign_id + 99, now=NOW)
        ) == [("NOT_FOUND", ("campaignId",))]
        assert codes(
            await refusal(
                create_invite(session, partner_admin(shop.partner_a), campaign_id, now=NOW)
            )
        ) == ["FORBIDDEN"]


# --- refusals --------------------------------------------------------------------------------


async def test_unknown_malformed_ended_and_unstarted_codes_all_answer_alike(db, shop):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.ann, campaign_id)
    dan = await newcomer(db)
    answers = [
        await refusal(accept(db, dan, "ZZZZZZZZ")),  # well formed, nobody's
        await refusal(accept(db, dan, "not a code")),
        await refusal(accept(db, dan, code, now=ENDS)),
        await refusal(accept(db, dan, code, now=STARTS - timedelta(seconds=1))),
    ]
    assert answers == [[("UNKNOWN_CODE", ("code",))]] * 4
    assert await referrals(db) == []
    await accept(db, dan, code)  # while it runs: fine


async def test_nobody_accepts_their_own_invite(db, shop):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.ann, campaign_id)
    assert await refusal(accept(db, shop.ann, code)) == [("SELF_INVITE", ("code",))]


async def test_the_first_accepted_invite_wins_for_ever(db, shop):
    first = await make_campaign(db)
    second = await make_campaign(db, name="第二期")
    dan = await newcomer(db)
    cat_code = await invite(db, shop.cat, first)
    await accept(db, dan, await invite(db, shop.ann, first))
    assert codes(await refusal(accept(db, dan, cat_code, device="another"))) == ["ALREADY_REFERRED"]
    later = await invite(db, shop.bob, second)
    assert codes(await refusal(accept(db, dan, later, device="another"))) == ["ALREADY_REFERRED"]
    (ref,) = await referrals(db)
    assert ref.inviter_id == shop.ann


async def test_not_new_a_member_from_before_the_campaign(db, shop):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.cat, campaign_id)
    old = await newcomer(db, member_since=STARTS - timedelta(seconds=1))
    fresh = await newcomer(db, member_since=STARTS + timedelta(hours=1))
    assert codes(await refusal(accept(db, old, code))) == ["NOT_NEW"]
    await accept(db, fresh, code)  # joined during the campaign: new
    # ann has been a member for 30 days: never new in a campaign started yesterday.
    assert codes(await refusal(accept(db, shop.ann, code))) == ["NOT_NEW"]


async def test_not_new_a_member_for_more_than_a_day_though_they_joined_during_the_campaign(
    db, shop
):
    # The campaign has run for ten days; a new member registers and accepts in one session.
    campaign_id = await make_campaign(db, starts_at=NOW - 10 * DAY)
    code = await invite(db, shop.cat, campaign_id)
    window = NEW_MEMBER_WINDOW
    settled = await newcomer(db, member_since=NOW - window - timedelta(seconds=1))
    just_joined = await newcomer(db, member_since=NOW - timedelta(minutes=3))
    this_morning = await newcomer(db, member_since=NOW - window + timedelta(minutes=1))
    assert codes(await refusal(accept(db, settled, code))) == ["NOT_NEW"]
    await accept(db, just_joined, code)
    await accept(db, this_morning, code)
    await accept(db, await newcomer(db), code)  # not a member at all: new
    assert len(await referrals(db)) == 3


async def test_not_new_after_a_private_domain_order(db, shop):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.ann, campaign_id)
    dan = await newcomer(db)
    await place(db, member(dan), delivery_region_code="310115")
    assert codes(await refusal(accept(db, dan, code))) == ["NOT_NEW"]


async def test_not_new_once_they_have_invited_someone(db, shop):
    # Also what keeps the tree free of cycles: dan invited eve, so eve's friend dan cannot
    # then accept eve's invite (nor anyone else's).
    campaign_id = await make_campaign(db)
    dan, eve = await newcomer(db), await newcomer(db)
    await accept(db, eve, await invite(db, dan, campaign_id))
    assert codes(await refusal(accept(db, dan, await invite(db, eve, campaign_id)))) == ["NOT_NEW"]
    assert codes(await refusal(accept(db, dan, await invite(db, shop.ann, campaign_id)))) == [
        "NOT_NEW"
    ]


async def test_one_registration_per_device_per_campaign(db, shop):
    first = await make_campaign(db)
    second = await make_campaign(db, name="第二期")
    dan, eve, fay = await newcomer(db), await newcomer(db), await newcomer(db)
    await accept(db, dan, await invite(db, shop.ann, first), device="android-42")
    assert await refusal(
        accept(db, eve, await invite(db, shop.bob, first), device="android-42")
    ) == [("DEVICE_USED", ("deviceId",))]
    # The same device in another campaign is another registration.
    await accept(db, fay, await invite(db, shop.ann, second), device="android-42")
    # Digests, not the raw id.
    assert all(
        r.device_digest != "android-42" and len(r.device_digest) == 64 for r in await referrals(db)
    )


async def test_one_registration_per_phone_per_campaign(db, shop):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.ann, campaign_id)
    dan = await newcomer(db, phone="13711112222")
    await accept(db, dan, code)
    # The number is reassigned to a new account (a recycled number, 二次号): in this
    # campaign it has registered already.
    eve = await newcomer(db, phone=None)
    async with db.transaction() as session:
        await session.execute(
            update(CustomerIdentity)
            .where(
                CustomerIdentity.kind == IdentityKind.PHONE, CustomerIdentity.value == "13711112222"
            )
            .values(customer_id=eve)
        )
    assert codes(await refusal(accept(db, eve, code))) == ["PHONE_USED"]
    (ref,) = await referrals(db)
    assert ref.phone_digest is not None and "13711112222" not in ref.phone_digest


async def test_a_customer_without_a_phone_is_limited_by_device_only(db, shop):
    campaign_id = await make_campaign(db)
    dan, eve = await newcomer(db, phone=None), await newcomer(db, phone=None)
    await accept(db, dan, await invite(db, shop.ann, campaign_id))
    await accept(db, eve, await invite(db, shop.ann, campaign_id))
    assert [r.phone_digest for r in await referrals(db)] == [None, None]


async def test_a_device_id_is_required_and_bounded(db, shop):
    code = await invite(db, shop.ann, await make_campaign(db))
    dan = await newcomer(db)
    assert await refusal(accept(db, dan, code, device="   ")) == [("REQUIRED", ("deviceId",))]
    assert await refusal(accept(db, dan, code, device="d" * 201)) == [("INVALID", ("deviceId",))]


@pytest.mark.parametrize("bad", ["\x00", "\t", "\n", "\x7f", "\ud800"])
async def test_control_characters_and_lone_surrogates_are_invalid_in_a_code_or_device(
    db, shop, bad
):
    # NUL is refused by PostgreSQL and a lone surrogate cannot even be encoded: both would
    # fail deep down; they are bad input, said so up front.
    code = await invite(db, shop.ann, await make_campaign(db))
    dan = await newcomer(db)
    assert await refusal(accept(db, dan, code, device=f"iphone{bad}dan")) == [
        ("INVALID", ("deviceId",))
    ]
    assert await refusal(accept(db, dan, f"{code[:4]}{bad}{code[4:]}")) == [("INVALID", ("code",))]
    assert await referrals(db) == []
    await accept(db, dan, code)  # typed cleanly


async def test_only_members_accept_and_for_themselves(db, shop):
    code = await invite(db, shop.ann, await make_campaign(db))
    async with db.transaction() as session:
        problems = await refusal(
            accepting.accept(
                session,
                partner_admin(shop.partner_a),
                code,
                "dev",
                secret=b"s",
                settings=SETTINGS,
                now=NOW,
            )
        )
    assert codes(problems) == ["FORBIDDEN"]


# --- limits ----------------------------------------------------------------------------------


async def test_the_inviters_daily_limit_counts_the_utc_day(db, shop):
    campaign_id = await make_campaign(db, max_registrations_per_day=2)
    code = await invite(db, shop.ann, campaign_id)
    other = await invite(db, shop.cat, campaign_id)
    friends = [await newcomer(db) for _ in range(5)]
    await accept(db, friends[0], code, now=NOON)
    await accept(db, friends[1], code, now=NOON + timedelta(hours=11, minutes=59))
    assert await refusal(accept(db, friends[2], code, now=NOON + timedelta(hours=11))) == [
        ("DAILY_LIMIT", ("code",))
    ]
    await accept(db, friends[3], other, now=NOON)  # another inviter's day is their own
    await accept(db, friends[2], code, now=NOON + timedelta(hours=12))  # 00:00 UTC: a new day
    assert len(await referrals(db)) == 4


async def test_past_the_inviters_cap_referrals_are_recorded_and_rewards_withheld(db, shop):
    campaign_id = await make_campaign(db, max_rewarded_per_inviter=2)
    code = await invite(db, shop.ann, campaign_id)
    friends = [await newcomer(db) for _ in range(3)]
    for friend in friends:
        await accept(db, friend, code)
    for friend in reversed(friends):  # the third friend orders first: still past the cap
        await place(db, member(friend), delivery_region_code="310115")
    first, second, third = (r.id for r in await referrals(db))
    assert await rewards(db) == [
        (first, "first_order", "points", 500, "5.00", None),
        (first, "registration", "points", 200, "2.00", None),
        (second, "first_order", "points", 500, "5.00", None),
        (second, "registration", "points", 200, "2.00", None),
        (third, "first_order", "points", 0, "0.00", "inviter_limit"),
        (third, "registration", "points", 0, "0.00", "inviter_limit"),
    ]
    numbers = await stats(db, campaign_id)
    assert (numbers.invites, numbers.registrations, numbers.first_orders) == (1, 3, 3)
    assert (numbers.rewards_paid, numbers.points_paid, numbers.coupons_paid) == (4, 1400, 0)
    assert (numbers.rewards_withheld, numbers.withheld_by_reason) == (2, {"inviter_limit": 2})
    assert str(numbers.reward_cost) == "14.00"  # 1400 points at 100 a yuan


async def test_a_coupon_that_cannot_be_granted_is_withheld_and_the_registration_stands(db, shop):
    scarce = await new_template(db, total_stock=2, per_person_limit=5)
    once = await new_template(db, per_person_limit=1, discount_amount=Decimal("8.00"))
    campaign_id = await make_campaign(
        db,
        registration_reward=RewardDraft(template_id=scarce),
        first_order_reward=RewardDraft(template_id=once),
    )
    # Someone else takes one of the two in stock before the campaign pays.
    async with db.transaction() as session:
        await coupon_claims.claim(
            session, HQ, scarce, shop.bob, channel=CouponChannel.ONLINE, origin=CouponOrigin.GRANT
        )
    code = await invite(db, shop.ann, campaign_id)
    friends = [await newcomer(db) for _ in range(2)]
    for friend in friends:
        await accept(db, friend, code)
        await place(db, member(friend), delivery_region_code="310115")
    first, second = (r.id for r in await referrals(db))
    assert await rewards(db) == [
        (first, "first_order", "coupon", 0, "8.00", None),
        (first, "registration", "coupon", 0, "10.00", None),
        (second, "first_order", "coupon", 0, "0.00", "limit_reached"),  # one per person
        (second, "registration", "coupon", 0, "0.00", "out_of_stock"),
    ]
    numbers = await stats(db, campaign_id)
    assert (numbers.registrations, numbers.first_orders) == (2, 2)
    assert (numbers.rewards_paid, numbers.coupons_paid, numbers.rewards_withheld) == (2, 2, 2)
    assert numbers.withheld_by_reason == {"limit_reached": 1, "out_of_stock": 1}
    assert str(numbers.reward_cost) == "18.00"


async def test_a_campaign_without_a_first_order_reward_still_counts_first_orders(db, shop):
    campaign_id = await make_campaign(db, first_order_reward=None)
    dan = await newcomer(db)
    await accept(db, dan, await invite(db, shop.ann, campaign_id))
    await place(db, member(dan), delivery_region_code="310115")
    (ref,) = await referrals(db)
    assert ref.first_order_id is not None
    assert [r[1] for r in await rewards(db)] == ["registration"]
    assert (await stats(db, campaign_id)).first_orders == 1
