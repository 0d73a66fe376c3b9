"""Races through the API, each request its own transaction, on both engines. The outcomes
are exact: one redemption of a code, never more coupons than stock or than a person's limit."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from sqlalchemy import func, select

from api.auth.principal import Role
from api.coupons.models import Coupon, CouponClaimCount, CouponStatus
from api.db import utcnow
from api.graphql.ids import encode_id
from tests.coupons import conftest
from tests.coupons.conftest import DAY, new_customers, template_row

NOW = utcnow()

CLAIM = """
mutation($input: CouponClaimInput!) {
  couponClaim(input: $input) { coupon { code } errors { code } }
}"""

REDEEM = """
mutation($input: CouponRedeemInput!) {
  couponRedeem(input: $input) { coupon { status } errors { code } }
}"""


async def new_template(db, **overrides):
    return await conftest.new_template(db, valid_from=NOW - DAY, valid_until=NOW + DAY, **overrides)


async def post(http: httpx.AsyncClient, token: str, query: str, variables: dict) -> dict:
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def outcome(payload: dict) -> str:
    return payload["errors"][0]["code"] if payload["errors"] else "ok"


async def coupons_of(db, template_id) -> list[Coupon]:
    async with db.read() as session:
        return list(await session.scalars(select(Coupon).where(Coupon.template_id == template_id)))


async def test_200_concurrent_redemptions_of_one_code_redeem_it_once(
    db, world, app, issue_token, client
):
    template = await new_template(db)
    held = await conftest.claim(db, template.id, world.ann, now=NOW)
    token = issue_token(
        Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.store_a1, subject="staff:9"
    )
    bodies = await asyncio.gather(
        *(
            post(client, token, REDEEM, {"input": {"code": held.code, "orderRef": f"POS-{i}"}})
            for i in range(200)
        )
    )
    results = Counter(outcome(b["couponRedeem"]) for b in bodies)
    assert results == {"ok": 1, "ALREADY_REDEEMED": 199}
    (row,) = await coupons_of(db, template.id)
    assert row.status is CouponStatus.REDEEMED and row.redeemed_by == "staff:9"
    winner = next(i for i, b in enumerate(bodies) if not b["couponRedeem"]["errors"])
    assert row.redeemed_for == f"POS-{winner}"


async def test_500_members_claiming_a_stock_of_100_get_exactly_100_codes(
    db, world, app, issue_token, client
):
    template = await new_template(db, total_stock=100)
    customers = await new_customers(db, 500)
    tokens = [issue_token(Role.MEMBER, customer_id=c, subject=f"customer:{c}") for c in customers]
    variables = {
        "input": {"templateId": encode_id("CouponTemplate", template.id), "channel": "ONLINE"}
    }
    bodies = await asyncio.gather(*(post(client, t, CLAIM, variables) for t in tokens))
    payloads = [b["couponClaim"] for b in bodies]
    assert Counter(outcome(p) for p in payloads) == {"ok": 100, "OUT_OF_STOCK": 400}
    codes = {p["coupon"]["code"] for p in payloads if p["coupon"]}
    assert len(codes) == 100
    assert (await template_row(db, template.id)).issued == 100
    rows = await coupons_of(db, template.id)
    assert {r.code for r in rows} == codes
    assert len({r.customer_id for r in rows}) == 100
    # The 400 refused claims left no count behind.
    async with db.read() as session:
        counted = await session.scalar(
            select(func.sum(CouponClaimCount.claimed)).where(
                CouponClaimCount.template_id == template.id
            )
        )
    assert counted == 100


async def test_50_concurrent_claims_by_one_person_with_limit_2_give_exactly_2(
    db, world, app, issue_token, client
):
    template = await new_template(db, total_stock=1000, per_person_limit=2)
    token = issue_token(Role.MEMBER, customer_id=world.ann, subject=f"customer:{world.ann}")
    variables = {
        "input": {"templateId": encode_id("CouponTemplate", template.id), "channel": "ONLINE"}
    }
    bodies = await asyncio.gather(*(post(client, token, CLAIM, variables) for _ in range(50)))
    assert Counter(outcome(b["couponClaim"]) for b in bodies) == {"ok": 2, "LIMIT_REACHED": 48}
    rows = await coupons_of(db, template.id)
    assert [r.customer_id for r in rows] == [world.ann, world.ann]
    assert (await template_row(db, template.id)).issued == 2


async def test_20_retries_of_one_claim_at_once_give_one_coupon(db, world, issue_token, client):
    template = await new_template(db, per_person_limit=5)
    token = issue_token(Role.MEMBER, customer_id=world.ann, subject=f"customer:{world.ann}")
    variables = {
        "input": {
            "templateId": encode_id("CouponTemplate", template.id),
            "channel": "ONLINE",
            "claimKey": "tap-77",
        }
    }
    bodies = await asyncio.gather(*(post(client, token, CLAIM, variables) for _ in range(20)))
    assert {outcome(b["couponClaim"]) for b in bodies} == {"ok"}
    assert len({b["couponClaim"]["coupon"]["code"] for b in bodies}) == 1
    assert (await template_row(db, template.id)).issued == 1
