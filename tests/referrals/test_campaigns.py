"""Campaigns over GraphQL: what HQ may create (every problem of the input at once, with its
field), who reads campaigns and stats, and what a page costs in statements."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.coupons import claims as coupon_claims
from api.coupons import templates as coupon_templates
from api.coupons.models import CouponChannel, CouponOrigin, TemplateStatus
from api.graphql.ids import encode_id
from tests.orders.conftest import (
    DAY,
    HQ,
    NOW,
    caller,
    coupon_draft,
    gid,
    member,
    partner_admin,
    token_of,
)
from tests.referrals.conftest import ENDS, STARTS, make_campaign

CREATE = """mutation($input: ReferralCampaignCreateInput!) {
  referralCampaignCreate(input: $input) {
    referralCampaign { id name } errors { field code message } } }"""
CAMPAIGNS = """query($running: Boolean, $first: Int) {
  referralCampaigns(running: $running, first: $first) {
    totalCount
    nodes { id name running startsAt endsAt maxRewardedPerInviter maxRegistrationsPerDay
      registrationReward { kind points couponTemplate { id name } }
      firstOrderReward { kind points couponTemplate { id name } } } } }"""
NODE = """query($id: ID!) { node(id: $id) { ... on ReferralCampaign { name } } }"""
STATS = """query($id: ID!) { referralCampaignStats(campaignId: $id) { registrations } }"""

MARKETER = Principal("user:9", Role.MARKETER, scopes=ROLE_SCOPES[Role.MARKETER])
CHANNEL_MANAGER = Principal(
    "user:8", Role.CHANNEL_MANAGER, scopes=ROLE_SCOPES[Role.CHANNEL_MANAGER]
)


def base(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "老带新",
        "startsAt": STARTS.isoformat(),
        "endsAt": ENDS.isoformat(),
        "registrationReward": {"points": 100},
    }
    values.update(overrides)
    return {"input": values}


def errors(body: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    assert "errors" not in body, body["errors"]
    return [(e["code"], e["field"]) for e in body["data"]["referralCampaignCreate"]["errors"]]


def top_level(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


async def template(db: Any, **overrides: Any) -> int:
    async with db.transaction() as session:
        row = await coupon_templates.create_template(
            session, HQ, coupon_draft(**overrides), now=NOW - 2 * DAY
        )
    return row.id


async def test_marketing_creates_a_campaign(app, shop, issue_token):
    marketer = caller(app, token_of(issue_token, MARKETER))
    body = await marketer(
        CREATE,
        base(
            endsAt=None,
            firstOrderReward={"couponTemplateId": gid("CouponTemplate", shop.template)},
            maxRewardedPerInviter=50,
            maxRegistrationsPerDay=5,
        ),
    )
    assert errors(body) == []
    assert body["data"]["referralCampaignCreate"]["referralCampaign"]["name"] == "老带新"


async def test_every_problem_of_the_input_at_once(gql, db, shop):
    body = await gql.raw(
        CREATE,
        base(
            name="  ",
            endsAt=(STARTS - timedelta(hours=1)).isoformat(),
            registrationReward={"points": 100, "couponTemplateId": gid("CouponTemplate", 1)},
            firstOrderReward={"points": 1_000_001},
            maxRewardedPerInviter=0,
            maxRegistrationsPerDay=0,
        ),
    )
    assert errors(body) == [
        ("INVALID", ["input", "name"]),
        ("INVALID", ["input", "endsAt"]),
        ("INVALID", ["input", "registrationReward"]),
        ("INVALID", ["input", "firstOrderReward", "points"]),
        ("INVALID", ["input", "maxRewardedPerInviter"]),
        ("INVALID", ["input", "maxRegistrationsPerDay"]),
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"registrationReward": None}, [("REQUIRED", ["input", "registrationReward"])]),
        ({"registrationReward": {}}, [("INVALID", ["input", "registrationReward"])]),
        (
            {"registrationReward": {"points": 0}},
            [("INVALID", ["input", "registrationReward", "points"])],
        ),
        (  # over already
            {"startsAt": (NOW - 2 * DAY).isoformat(), "endsAt": (NOW - DAY).isoformat()},
            [("INVALID", ["input", "endsAt"])],
        ),
    ],
)
async def test_rewards_and_windows_that_make_no_sense(gql, shop, overrides, expected):
    assert errors(await gql.raw(CREATE, base(**overrides))) == expected


@pytest.mark.parametrize("name", ["老带新\x00", "老带新\n春季", "\x1b[31m老带新", "老带新\ud800"])
async def test_a_name_with_control_characters_or_a_lone_surrogate_is_invalid(gql, shop, name):
    # NUL used to reach PostgreSQL, which refuses it: an internal error instead of an answer.
    # Sent as JSON escapes (\u0000, \ud800), as a client may: a lone surrogate is valid
    # JSON, though no UTF-8.
    body = json.dumps({"query": CREATE, "variables": base(name=name)})
    response = await gql.http.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert errors(response.json()) == [("INVALID", ["input", "name"])]


async def test_a_coupon_reward_needs_a_template_that_can_be_granted(gql, db, shop):
    at = ["input", "firstOrderReward", "couponTemplateId"]
    paused = await template(db, name="paused")
    async with db.transaction() as session:
        await coupon_templates.update_template(session, HQ, paused, status=TemplateStatus.PAUSED)
    offline = await template(db, name="offline", claim_channel=CouponChannel.OFFLINE)
    dollars = await template(db, name="usd", currency="USD")
    empty = await template(db, name="empty", total_stock=1)
    async with db.transaction() as session:  # bob takes the only one
        await coupon_claims.claim(
            session, HQ, empty, shop.bob, channel=CouponChannel.ONLINE, origin=CouponOrigin.GRANT
        )
    over = await template(db, name="over", claim_ends_at=NOW - timedelta(hours=1))
    answers = {}
    for name, template_id in (
        ("unknown", 999),
        ("paused", paused),
        ("offline", offline),
        ("usd", dollars),
        ("empty", empty),
        ("over", over),
    ):
        reward = {"couponTemplateId": gid("CouponTemplate", template_id)}
        answers[name] = errors(await gql.raw(CREATE, base(firstOrderReward=reward)))
    assert answers == {
        "unknown": [("UNKNOWN_TEMPLATE", at)],
        "paused": [("TEMPLATE_UNUSABLE", at)],
        "offline": [("TEMPLATE_UNUSABLE", at)],
        "usd": [("TEMPLATE_UNUSABLE", at)],
        "empty": [("TEMPLATE_UNUSABLE", at)],
        "over": [("TEMPLATE_UNUSABLE", at)],
    }
    assert errors(
        await gql.raw(CREATE, base(firstOrderReward={"couponTemplateId": encode_id("Store", 1)}))
    ) == [("INVALID", at)]


async def test_only_hq_with_referrals_write_creates(app, shop, issue_token):
    for principal in (member(shop.ann), partner_admin(shop.partner_a), CHANNEL_MANAGER):
        body = await caller(app, token_of(issue_token, principal))(CREATE, base())
        assert top_level(body) == ["FORBIDDEN"]


async def test_hq_and_members_read_campaigns_partners_do_not(db, app, shop, gql, issue_token):
    running = await make_campaign(db, template_id=shop.template)
    ended = await make_campaign(
        db, name="去年", starts_at=NOW - 60 * DAY, ends_at=NOW - 30 * DAY, now=NOW - 60 * DAY
    )
    every = (await gql(CAMPAIGNS, {}))["referralCampaigns"]
    assert every["totalCount"] == 2
    assert [(c["name"], c["running"]) for c in every["nodes"]] == [
        ("老带新", True),
        ("去年", False),
    ]
    first = every["nodes"][0]
    assert first["registrationReward"] == {"kind": "POINTS", "points": 200, "couponTemplate": None}
    assert first["firstOrderReward"]["couponTemplate"]["name"] == "立减10元"
    now_running = (await gql(CAMPAIGNS, {"running": True}))["referralCampaigns"]["nodes"]
    assert [c["id"] for c in now_running] == [gid("ReferralCampaign", running)]

    ann = caller(app, token_of(issue_token, member(shop.ann)))
    assert len((await ann(CAMPAIGNS, {}))["data"]["referralCampaigns"]["nodes"]) == 2
    assert (await ann(NODE, {"id": gid("ReferralCampaign", ended)}))["data"]["node"] == {
        "name": "去年"
    }

    partner = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    assert top_level(await partner(CAMPAIGNS, {})) == ["FORBIDDEN"]
    assert (await partner(NODE, {"id": gid("ReferralCampaign", running)}))["data"]["node"] is None


async def test_stats_are_hqs(db, app, shop, gql, issue_token):
    campaign_id = gid("ReferralCampaign", await make_campaign(db))
    assert (await gql(STATS, {"id": campaign_id}))["referralCampaignStats"] == {"registrations": 0}
    assert (await gql(STATS, {"id": gid("ReferralCampaign", 99)}))["referralCampaignStats"] is None
    manager = caller(app, token_of(issue_token, CHANNEL_MANAGER))  # analytics:read
    assert (await manager(STATS, {"id": campaign_id}))["data"]["referralCampaignStats"] == {
        "registrations": 0
    }
    for principal in (member(shop.ann), partner_admin(shop.partner_a)):
        body = await caller(app, token_of(issue_token, principal))(STATS, {"id": campaign_id})
        assert top_level(body) == ["FORBIDDEN"]


@pytest.mark.parametrize("campaigns", [2, 6])
async def test_a_page_of_campaigns_costs_the_same_whatever_its_size(
    db, shop, gql, count_queries, campaigns
):
    for number in range(campaigns):
        await make_campaign(db, template_id=shop.template, name=f"第{number}期")
    with count_queries() as counter:
        page = (await gql(CAMPAIGNS, {"first": 10}))["referralCampaigns"]
    assert len(page["nodes"]) == campaigns
    # The page, its count, and the coupon templates of the rewards (one batch).
    assert counter.count == 3
