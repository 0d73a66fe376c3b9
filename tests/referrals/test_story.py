"""The whole story over HTTP: HQ opens a campaign, ann (a member) makes her invite, dan (new)
accepts it and ann earns the registration reward; dan's first order through the real
orderCreate earns ann the first-order reward, once. A pickup order rewards when it is picked
up; a cancelled one never does; a marketplace import is not a first order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from api.coupons.models import Coupon, CouponOrigin
from api.loyalty import balances as loyalty_balances
from api.orders.models import Order
from api.referrals.models import ReferralMilestone, ReferralReward
from tests.orders.conftest import (
    DAY,
    NOW,
    caller,
    gid,
    member,
    store_staff,
    token_of,
)
from tests.orders.test_import import csv_text, row
from tests.orders.test_import import run as run_import
from tests.referrals.conftest import (
    ENDS,
    STARTS,
    accept,
    invite,
    make_campaign,
    newcomer,
    referrals,
    rewards,
)

CAMPAIGN_CREATE = """mutation($input: ReferralCampaignCreateInput!) {
  referralCampaignCreate(input: $input) {
    referralCampaign { id name running maxRegistrationsPerDay maxRewardedPerInviter
      registrationReward { kind points couponTemplate { id } }
      firstOrderReward { kind points couponTemplate { id name } } }
    errors { field code message } } }"""
INVITE = """mutation($input: ReferralInviteCreateInput!) { referralInviteCreate(input: $input) {
  invite { code link campaign { id } } created errors { field code message } } }"""
ACCEPT = """mutation($input: ReferralAcceptInput!) { referralAccept(input: $input) {
  referral { code registeredAt firstOrderAt campaign { id } inviter { id } invitee { id } }
  errors { field code message } } }"""
CREATE_ORDER = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
  order { id status pickupCode } errors { code message } } }"""
PICKUP = """mutation($code: String!) { orderPickup(input: {code: $code}) {
  order { status } errors { code } } }"""
CANCEL = """mutation($id: ID!) { orderCancel(input: {orderId: $id, reason: "changed my mind"}) {
  order { status } errors { code } } }"""
STATS = """query($id: ID!) { referralCampaignStats(campaignId: $id) {
  invites registrations firstOrders rewardsPaid pointsPaid couponsPaid rewardsWithheld
  withheldByReason { reason count } rewardCost { amount currency } } }"""


def ok(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body["errors"]
    (result,) = body["data"].values()
    assert result["errors"] == [], result["errors"]
    return result


def delivery() -> dict[str, Any]:
    return {
        "input": {
            "channel": "MINI_PROGRAM",
            "fulfillment": "DELIVERY",
            "deliveryRegionCode": "310115",
            "lines": [{"sku": "TEA-1", "quantity": 1}],
        }
    }


def pickup_at(store: int) -> dict[str, Any]:
    return {
        "input": {
            "channel": "MINI_PROGRAM",
            "fulfillment": "PICKUP",
            "storeId": gid("Store", store),
            "lines": [{"sku": "TEA-1", "quantity": 1}],
        }
    }


async def granted_coupons(db: Any, customer_id: int, template_id: int) -> list[Coupon]:
    """The coupons of a template granted with a claim key (a reward's), not by hand."""
    async with db.read() as session:
        return list(
            await session.scalars(
                select(Coupon)
                .where(
                    Coupon.customer_id == customer_id,
                    Coupon.template_id == template_id,
                    Coupon.origin == CouponOrigin.GRANT,
                    Coupon.claim_key.is_not(None),
                )
                .order_by(Coupon.id)
            )
        )


async def test_invite_registration_first_order_and_the_numbers(
    db, shop, app, gql, client, issue_token, settings
):
    created = ok(
        await gql.raw(
            CAMPAIGN_CREATE,
            {
                "input": {
                    "name": "老带新 春季",
                    "startsAt": STARTS.isoformat(),
                    "endsAt": ENDS.isoformat(),
                    "registrationReward": {"points": 200},
                    "firstOrderReward": {"couponTemplateId": gid("CouponTemplate", shop.template)},
                    "maxRewardedPerInviter": 10,
                }
            },
        )
    )["referralCampaign"]
    assert created["running"] and created["maxRegistrationsPerDay"] == 20
    assert created["registrationReward"] == {
        "kind": "POINTS",
        "points": 200,
        "couponTemplate": None,
    }
    assert created["firstOrderReward"]["couponTemplate"]["name"] == "立减10元"
    campaign_id = created["id"]

    ann = caller(app, token_of(issue_token, member(shop.ann)))
    made = ok(await ann(INVITE, {"input": {"campaignId": campaign_id}}))
    code = made["invite"]["code"]
    assert made["created"] and made["invite"]["link"] == settings.referral_link_base + code
    again = ok(await ann(INVITE, {"input": {"campaignId": campaign_id}}))
    assert (again["invite"]["code"], again["created"]) == (code, False)

    dan_id = await newcomer(db, name="丁大")
    dan = caller(app, token_of(issue_token, member(dan_id)))
    typed = f"{code[:4].lower()} {code[4:]}"  # as typed from a poster: any case, a space
    accepted = ok(await dan(ACCEPT, {"input": {"code": typed, "deviceId": "iphone-dan"}}))
    referral = accepted["referral"]
    assert referral["code"] == code and referral["firstOrderAt"] is None
    assert referral["campaign"]["id"] == campaign_id
    # The invitee sees themself, not their inviter.
    assert (referral["invitee"], referral["inviter"]) == ({"id": gid("Customer", dan_id)}, None)

    # Registration: 200 points to ann, pending for the return window (7 days).
    async with db.read() as session:
        now = (await loyalty_balances.balances_of(session, [shop.ann], NOW + DAY))[shop.ann]
    assert now.pending == 200
    (ref,) = await referrals(db)
    assert await rewards(db) == [(ref.id, "registration", "points", 200, "2.00", None)]

    # dan's first order: a delivery, complete at creation, through the real orderCreate.
    first = ok(await dan(CREATE_ORDER, delivery()))["order"]
    assert first["status"] == "COMPLETED"
    (ref,) = await referrals(db)
    async with db.read() as session:
        order_id = await session.scalar(select(Order.id).where(Order.customer_id == dan_id))
    assert ref.first_order_id == order_id and ref.first_order_at is not None
    (coupon,) = await granted_coupons(db, shop.ann, shop.template)
    assert await rewards(db) == [
        (ref.id, "first_order", "coupon", 0, "10.00", None),
        (ref.id, "registration", "points", 200, "2.00", None),
    ]
    async with db.read() as session:
        paid = await session.get_one(ReferralReward, (ref.id, ReferralMilestone.FIRST_ORDER))
    assert paid.coupon_id == coupon.id

    # A second order is not a first order: nothing more.
    ok(await dan(CREATE_ORDER, delivery()))
    assert len(await granted_coupons(db, shop.ann, shop.template)) == 1
    assert len(await rewards(db)) == 2

    stats = (await gql(STATS, {"id": campaign_id}))["referralCampaignStats"]
    assert stats == {
        "invites": 1,
        "registrations": 1,
        "firstOrders": 1,
        "rewardsPaid": 2,
        "pointsPaid": 200,
        "couponsPaid": 1,
        "rewardsWithheld": 0,
        "withheldByReason": [],
        # 200 points at 100 a yuan = ¥2.00, and the coupon's ¥10 off.
        "rewardCost": {"amount": "12.00", "currency": "CNY"},
    }


async def test_a_pickup_order_rewards_when_picked_up_and_a_cancelled_one_never(
    db, shop, app, issue_token
):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.ann, campaign_id)
    eve_id, fay_id = await newcomer(db, name="伊娃"), await newcomer(db, name="费费")
    await accept(db, eve_id, code)
    await accept(db, fay_id, code)
    eve = caller(app, token_of(issue_token, member(eve_id)))
    fay = caller(app, token_of(issue_token, member(fay_id)))
    staff = caller(app, token_of(issue_token, store_staff(shop.partner_a, shop.a1)))

    placed = ok(await eve(CREATE_ORDER, pickup_at(shop.a1)))["order"]
    assert placed["status"] == "PLACED"
    assert all(r.first_order_id is None for r in await referrals(db))  # paid, not yet sold

    fay_order = ok(await fay(CREATE_ORDER, pickup_at(shop.a1)))["order"]
    ok(await fay(CANCEL, {"id": fay_order["id"]}))

    assert ok(await staff(PICKUP, {"code": placed["pickupCode"]}))["order"]["status"] == (
        "COMPLETED"
    )
    eve_ref, fay_ref = await referrals(db)
    assert eve_ref.first_order_id is not None and fay_ref.first_order_id is None
    assert [r for r in await rewards(db) if r[1] == "first_order"] == [
        (eve_ref.id, "first_order", "points", 500, "5.00", None)
    ]


async def test_an_imported_marketplace_order_is_not_a_first_order(db, shop, app, issue_token):
    campaign_id = await make_campaign(db)
    code = await invite(db, shop.ann, campaign_id)
    gus_id = await newcomer(db, phone="13987654321")
    # A Tmall order of the same phone before the invite: public-domain history, so gus is
    # still new; and another after it is no first order either.
    await run_import(db, csv_text(row("T1", phone="13987654321")))
    await accept(db, gus_id, code)
    await run_import(db, csv_text(row("T2", phone="13987654321")))
    async with db.read() as session:
        imported = (await session.scalars(select(Order).where(Order.customer_id == gus_id))).all()
    assert len(imported) == 2
    (ref,) = await referrals(db)
    assert ref.first_order_id is None
    assert [r[1] for r in await rewards(db)] == ["registration"]
    # Their first private-domain order is.
    gus = caller(app, token_of(issue_token, member(gus_id)))
    ok(await gus(CREATE_ORDER, delivery()))
    (ref,) = await referrals(db)
    assert ref.first_order_id is not None
    assert sorted(r[1] for r in await rewards(db)) == ["first_order", "registration"]
    assert sum(r[3] for r in await rewards(db)) == Decimal(700)
