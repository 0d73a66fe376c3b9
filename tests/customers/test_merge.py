"""customersMerge: one person again, everything moved in one transaction, old ids redirect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select, update

from api.auth.principal import Principal, Role
from api.coupons.models import (
    Coupon,
    CouponChannel,
    CouponKind,
    CouponOrigin,
    CouponStatus,
    CouponTemplate,
)
from api.customers.merge import merge_customers
from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.qualification import record_spend
from api.customers.upsert import upsert_customer
from api.errors import DomainError
from api.loyalty import earning as loyalty_earning
from tests.customers.conftest import create_level, gid, join, pk
from tests.factories import create_customer
from tests.wiring import CUSTOMERS, POINTS_POLICY

MERGE = """
mutation($input: CustomersMergeInput!) {
  customersMerge(input: $input) {
    dryRun
    customer { id }
    moves { kind count description }
    conflicts { field message }
    errors { field message code }
  }
}"""

PROFILE = """query($id: ID!) {
  customer(id: $id) {
    id name status tags attributes firstChannel
    identities { kind value }
    consents { purpose granted source }
    membership { since level { code } recruitedStore { code } }
    levelHistory { nodes { reason fromLevel { code } toLevel { code } } }
    points { balance }
    coupons { nodes { code } }
  }
}"""


async def merge(gql, target: str, sources: list[str], dry_run: bool = False) -> dict:
    payload = {"targetId": target, "sourceIds": sources, "dryRun": dry_run}
    return (await gql(MERGE, {"input": payload}))["customersMerge"]


@pytest.fixture
async def duplicates(gql, db, network):
    """One person as three customers: a store member, an earlier member elsewhere with more
    points and a higher level, and a marketplace buyer."""
    await create_level(gql, "silver", 0, "0")
    await create_level(gql, "gold", 1, "1000")
    target = await create_customer(
        gql,
        "13800000041",
        name="Li Na",
        tags=["store"],
        attributes={"size": "M", "city": "Shanghai"},
        firstChannel="store",
        consents=[
            {
                "purpose": "MARKETING_MESSAGES",
                "granted": True,
                "source": "store",
                "decidedAt": "2024-01-01T00:00:00Z",
            }
        ],
    )
    early = await create_customer(
        gql,
        identities=[{"kind": "WECHAT_OPENID", "value": "wxapp:oLiNa"}],
        tags=["mini_program", "store"],
        attributes={"size": "L", "pet": "cat"},
        firstChannel="mini_program",
        consents=[
            {
                "purpose": "MARKETING_MESSAGES",
                "granted": False,
                "source": "mini_program",
                "decidedAt": "2024-02-01T00:00:00Z",
            }
        ],
    )
    buyer = await create_customer(
        gql,
        identities=[{"kind": "MARKETPLACE_BUYER", "value": "tmall:lina"}],
        birthday="1992-02-02",
        tags=["tmall"],
    )
    await join(gql, customerId=early["id"], storeId=network["SB"]["id"])
    await join(gql, customerId=target["id"], storeId=network["SA"]["id"])
    gold = (await gql("{ memberLevels { id } }"))["memberLevels"][1]["id"]
    await gql(
        "mutation($c: ID!, $l: ID) { memberLevelSet(input: {customerId: $c, levelId: $l}) "
        "{ errors { code } } }",
        {"c": early["id"], "l": gold},
    )
    now = datetime.now(UTC)
    async with db.transaction() as session:
        # The mini-program account came first (created and joined a year earlier).
        await session.execute(
            update(Customer)
            .where(Customer.id == pk(early["id"]))
            .values(created_at=now - timedelta(days=400), member_since=now - timedelta(days=380))
        )
        template = (
            await session.execute(
                insert(CouponTemplate)
                .values(
                    name="10 off",
                    kind=CouponKind.FIXED_OFF,
                    discount_amount=Decimal(10),
                    claim_channel=CouponChannel.BOTH,
                    use_channel=CouponChannel.BOTH,
                    total_stock=100,
                )
                .returning(CouponTemplate.id)
            )
        ).scalar_one()
        await session.execute(
            insert(Coupon),
            [
                {
                    "template_id": template,
                    "customer_id": pk(early["id"]),
                    "code": f"EARLY{j}",
                    "status": CouponStatus.CLAIMED,
                    "origin": CouponOrigin.GRANT,
                    "claim_channel": "online",
                    "valid_from": now,
                    "valid_until": now + timedelta(days=30),
                }
                for j in range(2)
            ],
        )
        for customer, points in ((target, 100), (early, 1200), (buyer, 0)):
            if points:
                await loyalty_earning.earn(
                    session,
                    pk(customer["id"]),
                    points,
                    source_type="test",
                    source_id=customer["id"],
                    reason="welcome",
                    actor=None,
                    now=now,
                    pending=False,
                    policy=POINTS_POLICY,
                )
    return {"target": target, "early": early, "buyer": buyer, **network}


async def test_the_preview_is_exactly_what_the_merge_then_does(gql, duplicates):
    d = duplicates
    before = await gql(PROFILE, {"id": d["target"]["id"]})
    preview = await merge(gql, d["target"]["id"], [d["early"]["id"], d["buyer"]["id"]], True)
    assert preview["errors"] == [] and preview["dryRun"] is True
    # A dry run changes nothing.
    assert await gql(PROFILE, {"id": d["target"]["id"]}) == before
    assert (await gql(PROFILE, {"id": d["early"]["id"]}))["customer"]["id"] == d["early"]["id"]

    moves = {m["kind"]: m for m in preview["moves"]}
    assert moves["identities"]["count"] == 2
    assert moves["identities"]["description"] == "1 marketplace_buyer, 1 wechat_openid"
    assert (moves["tags"]["count"], moves["tags"]["description"]) == (2, "mini_program, tmall")
    assert moves["points"]["count"] == 1200
    assert (moves["coupons"]["count"], moves["coupons"]["description"]) == (
        2,
        "2 coupons of 1 template",
    )
    assert moves["membership"]["count"] == 1 and moves["level"]["description"] == "level gold"
    assert moves["profile"]["description"] == "fills birthday"
    conflicts = {c["field"]: c["message"] for c in preview["conflicts"]}
    assert conflicts["recruitedStore"].endswith("the earliest recruitment wins: SB.")
    assert conflicts["level"] == "Levels differ (gold, silver); the higher wins: gold."
    assert conflicts["attributes.size"] == "Values differ; the target's value is kept."
    assert "withdrawn" in conflicts["consents.marketing_messages"]
    assert conflicts["firstChannel"].endswith("the earliest contact wins: mini_program.")

    done = await merge(gql, d["target"]["id"], [d["early"]["id"], d["buyer"]["id"]])
    assert done["errors"] == [] and done["dryRun"] is False
    assert (done["moves"], done["conflicts"]) == (preview["moves"], preview["conflicts"])

    after = (await gql(PROFILE, {"id": d["target"]["id"]}))["customer"]
    assert {(i["kind"], i["value"]) for i in after["identities"]} == {
        ("PHONE", "13800000041"),
        ("WECHAT_OPENID", "wxapp:oLiNa"),
        ("MARKETPLACE_BUYER", "tmall:lina"),
    }
    assert sorted(after["tags"]) == ["mini_program", "store", "tmall"]
    assert after["attributes"] == {"size": "M", "city": "Shanghai", "pet": "cat"}
    assert after["firstChannel"] == "mini_program"
    assert after["consents"] == [
        {"purpose": "MARKETING_MESSAGES", "granted": False, "source": "mini_program"}
    ]
    assert after["membership"]["recruitedStore"] == {"code": "SB"}
    assert after["membership"]["level"] == {"code": "gold"}
    assert after["points"] == {"balance": 1300}
    assert sorted(c["code"] for c in after["coupons"]["nodes"]) == ["EARLY0", "EARLY1"]
    # The level history keeps both customers' changes, the merge on top.
    history = [(h["reason"], h["toLevel"]["code"]) for h in after["levelHistory"]["nodes"]]
    assert history[0] == ("merge", "gold")
    assert sorted(history[1:]) == [("join", "silver"), ("join", "silver"), ("manual", "gold")]


async def test_old_ids_redirect_through_customer_node_and_nodes(gql, duplicates):
    d = duplicates
    await merge(gql, d["target"]["id"], [d["early"]["id"]])
    data = await gql(
        "query($a: ID!, $b: ID!) { customer(id: $a) { id status } node(id: $a) { id } "
        "nodes(ids: [$a, $b]) { id } }",
        {"a": d["early"]["id"], "b": d["buyer"]["id"]},
    )
    target = d["target"]["id"]
    assert data == {
        "customer": {"id": target, "status": "ACTIVE"},
        "node": {"id": target},
        "nodes": [{"id": target}, {"id": d["buyer"]["id"]}],
    }
    listed = await gql("{ customers { totalCount nodes { id } } }")
    assert listed["customers"]["totalCount"] == 2  # the merged source is not listed
    # A customer merged into a source earlier follows it to the new target: one hop.
    await merge(gql, d["buyer"]["id"], [target])
    assert (await gql(PROFILE, {"id": d["early"]["id"]}))["customer"]["id"] == d["buyer"]["id"]


@pytest.mark.parametrize(
    ("sources", "target", "expected"),
    [
        ([], "t", [("REQUIRED", ["input", "sourceIds"])]),
        (["t"], "t", [("MERGE_INVALID", ["input", "sourceIds", "0"])]),
        (["a", "a"], "t", [("MERGE_INVALID", ["input", "sourceIds", "1"])]),
        (["a", "missing"], "t", [("NOT_FOUND", ["input", "sourceIds", "1"])]),
        (["a"], "missing", [("NOT_FOUND", ["input", "targetId"])]),
        (["merged"], "t", [("MERGE_INVALID", ["input", "sourceIds", "0"])]),
        (["a"], "merged", [("MERGE_INVALID", ["input", "targetId"])]),
        (["a"] * 11, "t", None),
        (["not-an-id"], "t", [("INVALID", ["input", "sourceIds", "0"])]),
    ],
)
async def test_refusals(gql, sources, target, expected):
    ids = {
        "t": (await create_customer(gql, "13800000051"))["id"],
        "a": (await create_customer(gql, "13800000052"))["id"],
        "merged": (await create_customer(gql, "13800000053"))["id"],
        "missing": gid("Customer", 9999),
        "not-an-id": "bm9wZQ",
    }
    keep = (await create_customer(gql, "13800000054"))["id"]
    assert (await merge(gql, keep, [ids["merged"]]))["errors"] == []
    result = await merge(gql, ids[target], [ids[s] for s in sources])
    assert result["customer"] is None and result["moves"] == []
    codes = [(e["code"], e["field"]) for e in result["errors"]]
    if expected is None:  # eleven sources: over the limit (and duplicates besides)
        assert ("MERGE_INVALID", ["input", "sourceIds"]) in codes
    else:
        assert codes == expected
    # Nothing moved.
    assert (await gql(PROFILE, {"id": ids["a"]}))["customer"]["id"] == ids["a"]


async def test_merges_are_audited_with_what_moved(gql, as_principal, duplicates):
    d = duplicates
    await merge(gql, d["target"]["id"], [d["early"]["id"]], dry_run=True)
    await merge(gql, d["target"]["id"], [d["early"]["id"]])
    events = (await gql("{ auditEvents { nodes { actor action objectType objectId detail } } }"))[
        "auditEvents"
    ]["nodes"]
    merges = [e for e in events if e["action"] in ("customersMerge", "customers.merged")]
    assert [(e["action"], e["objectId"], e["detail"].get("outcome")) for e in merges] == [
        ("customersMerge", d["target"]["id"], "ok"),
        ("customers.merged", d["target"]["id"], None),
        ("customersMerge", None, "rejected"),  # the dry run changed nothing
    ]
    detail = merges[1]["detail"]
    assert detail["sources"] == [pk(d["early"]["id"])]
    assert ["points", 1200, "1200 points in 1 lots"] in detail["moves"]

    # Only HQ staff merge: a partner's integration holding the scope is refused.
    integration = as_principal(Role.INTEGRATION, partner_id=1, scopes={"customers:write"})
    body = await integration.raw(
        MERGE, {"input": {"targetId": d["target"]["id"], "sourceIds": [d["buyer"]["id"]]}}
    )
    assert [e["code"] for e in body["data"]["customersMerge"]["errors"]] == ["FORBIDDEN"]


async def test_a_merge_racing_upserts_loses_no_identity(db):
    async with db.transaction() as session:
        target = (
            await upsert_customer(
                session, CustomerDraft([(IdentityKind.PHONE, "13700003333")]), actor=None
            )
        ).customer.id
        source = (
            await upsert_customer(
                session, CustomerDraft([(IdentityKind.PHONE, "13700004444")]), actor=None
            )
        ).customer.id
    hq = Principal(subject="user:1", role=Role.HQ_ADMIN)

    async def do_merge():
        async with db.transaction() as session:
            await merge_customers(session, hq, target, [source], dry_run=False, wiring=CUSTOMERS)

    async def attach(i: int) -> int:
        draft = CustomerDraft(
            [(IdentityKind.PHONE, "13700004444"), (IdentityKind.WECHAT_OPENID, f"wxapp:o{i}")]
        )
        async with db.transaction() as session:
            return (await upsert_customer(session, draft, actor=None)).customer.id

    outcomes = await asyncio.gather(
        *(attach(i) for i in range(10)), do_merge(), *(attach(i) for i in range(10, 20))
    )
    assert set(outcomes[:10] + outcomes[11:]) <= {target, source}
    async with db.read() as session:
        owners = dict(
            (
                await session.execute(
                    select(CustomerIdentity.customer_id, func.count()).group_by(
                        CustomerIdentity.customer_id
                    )
                )
            ).all()
        )
        merged = await session.scalar(select(Customer.status).where(Customer.id == source))
    assert owners == {target: 22}  # two phones and twenty openids, all on the survivor
    assert merged is CustomerStatus.MERGED


async def test_a_merged_customer_cannot_be_merged_again_concurrently(db):
    async with db.transaction() as session:
        ids = [
            (
                await upsert_customer(
                    session,
                    CustomerDraft([(IdentityKind.PHONE, f"1370000555{i}")]),
                    actor=None,
                )
            ).customer.id
            for i in range(3)
        ]
    hq = Principal(subject="user:1", role=Role.HQ_ADMIN)

    async def attempt(target: int, source: int):
        try:
            async with db.transaction() as session:
                await merge_customers(
                    session, hq, target, [source], dry_run=False, wiring=CUSTOMERS
                )
            return "ok"
        except DomainError as error:
            return error.problems[0].code.name

    # Two merges of one source into different targets: exactly one wins.
    results = await asyncio.gather(attempt(ids[0], ids[2]), attempt(ids[1], ids[2]))
    assert sorted(results) == ["MERGE_INVALID", "ok"]


async def test_spend_recorded_during_a_merge_lands_on_the_survivor(db):
    from api.customers.models import QualifyingSpend

    async with db.transaction() as session:
        target, source = [
            (
                await upsert_customer(
                    session, CustomerDraft([(IdentityKind.PHONE, phone)]), actor=None
                )
            ).customer.id
            for phone in ("13700006661", "13700006662")
        ]
    hq = Principal(subject="user:1", role=Role.HQ_ADMIN)

    async def spend(i: int) -> None:
        async with db.transaction() as session:
            await record_spend(
                session,
                source,
                Decimal(10),
                source_type="order",
                source_id=str(i),
                at=datetime.now(UTC),
            )

    async def do_merge() -> None:
        async with db.transaction() as session:
            await merge_customers(session, hq, target, [source], dry_run=False, wiring=CUSTOMERS)

    await asyncio.gather(
        *(spend(i) for i in range(8)), do_merge(), *(spend(i) for i in range(8, 16))
    )
    async with db.read() as session:
        owners = dict(
            (
                await session.execute(
                    select(QualifyingSpend.customer_id, func.sum(QualifyingSpend.amount)).group_by(
                        QualifyingSpend.customer_id
                    )
                )
            ).all()
        )
    assert owners == {target: Decimal(160)}
