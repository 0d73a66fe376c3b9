"""A page of customers costs a fixed number of statements, however many customers it holds."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert

from api.coupons.models import (
    Coupon,
    CouponChannel,
    CouponKind,
    CouponOrigin,
    CouponStatus,
    CouponTemplate,
)
from api.customers.models import (
    ConsentPurpose,
    Customer,
    CustomerConsent,
    CustomerIdentity,
    CustomerStatus,
    CustomerTag,
    IdentityKind,
    LevelMetric,
    MemberLevel,
    MemberLevelChange,
)
from api.db import utcnow
from api.loyalty import earning as loyalty_earning
from api.partners.models import Partner, PartnerStatus, PartnerType, Store
from tests.wiring import POINTS_POLICY


async def seed(db, customers: int) -> None:
    """``customers`` members, each with identities, tags, a consent, two level changes,
    points and three coupons."""
    now = utcnow()
    ids = range(1, customers + 1)
    async with db.transaction() as session:
        await session.execute(
            insert(Partner),
            [
                {
                    "id": 1,
                    "code": "P1",
                    "name": "P1",
                    "type": PartnerType.AGENT,
                    "status": PartnerStatus.ACTIVE,
                }
            ],
        )
        await session.execute(
            insert(Store),
            [
                {
                    "id": 1,
                    "partner_id": 1,
                    "code": "S1",
                    "name": "S1",
                    "region_code": "310115",
                    "address": "a",
                    "status": "open",
                }
            ],
        )
        await session.execute(
            insert(MemberLevel),
            [
                {
                    "id": 1,
                    "code": "silver",
                    "name": "Silver",
                    "rank": 0,
                    "metric": LevelMetric.SPEND,
                    "threshold": Decimal(0),
                },
                {
                    "id": 2,
                    "code": "gold",
                    "name": "Gold",
                    "rank": 1,
                    "metric": LevelMetric.SPEND,
                    "threshold": Decimal(1000),
                },
            ],
        )
        await session.execute(
            insert(Customer),
            [
                {
                    "id": i,
                    "status": CustomerStatus.ACTIVE,
                    "name": f"C{i}",
                    "attributes": {},
                    "member_since": now,
                    "recruited_partner_id": 1,
                    "recruited_store_id": 1,
                    "level_id": 1 + i % 2,
                    "manual_level_id": 1,
                    "contact_phone": "13800000000",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in ids
            ],
        )
        await session.execute(
            insert(CustomerIdentity),
            [
                {"customer_id": i, "kind": kind, "value": value, "created_at": now}
                for i in ids
                for kind, value in (
                    (IdentityKind.PHONE, f"139{i:08d}"),
                    (IdentityKind.WECHAT_OPENID, f"wxapp:o{i}"),
                )
            ],
        )
        await session.execute(
            insert(CustomerTag),
            [{"customer_id": i, "tag": t, "created_at": now} for i in ids for t in ("a", "b")],
        )
        await session.execute(
            insert(CustomerConsent),
            [
                {
                    "customer_id": i,
                    "purpose": ConsentPurpose.PROFILING,
                    "granted": True,
                    "source": "store",
                    "decided_at": now,
                }
                for i in ids
            ],
        )
        await session.execute(
            insert(MemberLevelChange),
            [
                {
                    "customer_id": i,
                    "from_level_id": f,
                    "to_level_id": t,
                    "reason": r,
                    "created_at": now,
                }
                for i in ids
                for f, t, r in ((None, 1, "join"), (1, 2, "upgrade"))
            ],
        )
        await session.execute(
            insert(CouponTemplate),
            [
                {
                    "id": 1,
                    "name": "10 off",
                    "kind": CouponKind.FIXED_OFF,
                    "discount_amount": Decimal(10),
                    "claim_channel": CouponChannel.BOTH,
                    "use_channel": CouponChannel.BOTH,
                    "total_stock": 10_000,
                }
            ],
        )
        await session.execute(
            insert(Coupon),
            [
                {
                    "template_id": 1,
                    "customer_id": i,
                    "code": f"C{i}-{j}",
                    "status": CouponStatus.CLAIMED,
                    "origin": CouponOrigin.GRANT,
                    "claim_channel": "online",
                    "valid_from": now,
                    "valid_until": now + timedelta(days=30),
                    "claimed_at": now,
                }
                for i in ids
                for j in range(3)
            ],
        )
        for i in ids:
            await loyalty_earning.earn(
                session,
                i,
                100 * i,
                source_type="test",
                source_id=str(i),
                reason="seed",
                actor=None,
                now=now,
                pending=False,
                policy=POINTS_POLICY,
            )


EVERYTHING = """{ customers(first: 50) { totalCount edges { cursor node {
    id name gender birthday status createdAt firstChannel attributes contactPhone
    identities { kind value unionidHint }
    consents { purpose granted source decidedAt }
    tags
    level { code }
    membership {
      since recruitedGuideId periodEndsAt graceEndsAt
      level { code rank } manualLevel { code }
      recruitedStore { code partner { code } } recruitedPartner { code }
    }
    levelHistory(first: 3) { totalCount nodes { reason fromLevel { code } toLevel { code } } }
    points { balance pending expiringSoon }
    pointsLedger(first: 3) { nodes { kind } }
    coupons(first: 2) { totalCount nodes { code } }
} } } }"""


@pytest.mark.parametrize("customers", [5, 50])
async def test_a_full_customer_page_is_a_fixed_number_of_statements(
    gql, db, count_queries, customers
):
    await seed(db, customers)
    with count_queries() as counter:
        data = await gql(EVERYTHING)
    edges = data["customers"]["edges"]
    assert len(edges) == customers
    last = edges[-1]["node"]
    assert last["points"]["balance"] == 100 * customers
    assert len(last["levelHistory"]["nodes"]) == 2 and last["levelHistory"]["totalCount"] == 2
    assert len(last["identities"]) == 2 and last["tags"] == ["a", "b"]
    # The customers page and its count; identities, consents, tags, levels, stores,
    # partners (the store's and the recruiting one share a batch), the level history page and
    # count; points balances, ledger pages and their lots' expiries; coupon pages and
    # counts; the PII audit INSERT.
    assert counter.count == 16, counter.statements


ISSUE_QUERY = """{ customers(first: 50) { edges { node {
    points { balance }
    coupons(first: 5) { edges { node { code } } }
} } } }"""


@pytest.mark.parametrize("customers", [5, 50])
async def test_issue_query_points_and_coupons(gql, db, count_queries, customers):
    await seed(db, customers)
    with count_queries() as counter:
        data = await gql(ISSUE_QUERY)
    edges = data["customers"]["edges"]
    assert len(edges) == customers
    assert edges[0]["node"]["points"] == {"balance": 100}
    assert [e["node"]["code"] for e in edges[0]["node"]["coupons"]["edges"]] == [
        "C1-2",
        "C1-1",
        "C1-0",
    ]  # newest first
    # The customers page, the points balances, the coupon pages: one each.
    assert counter.count == 3, counter.statements
