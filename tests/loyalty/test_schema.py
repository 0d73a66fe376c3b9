"""The points API: pointsAdjust, earning rules, quotes, Customer.points / pointsLedger, and
who may see and change what."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest

from api.auth.principal import Role
from api.db import utcnow
from api.graphql.ids import encode_id
from tests.conftest import GraphQLClient
from tests.factories import create_partner, create_store
from tests.loyalty.conftest import account, entries, new_customers

ADJUST = """
mutation($input: PointsAdjustInput!) {
  pointsAdjust(input: $input) {
    entry { id kind amount pendingDelta balanceAfter reason sourceType actor expiresAt }
    balance { balance pending expiringSoon nextExpiresAt debt }
    errors { code field message }
  }
}"""

RULE_CREATE = """
mutation($input: PointsEarningRuleCreateInput!) {
  pointsEarningRuleCreate(input: $input) {
    rule { id name channel storeId sku pointsPerYuan multiplier priority active }
    errors { code field message }
  }
}"""

QUOTE = """
query($customer: ID!, $channel: String!, $store: ID, $lines: [PointsQuoteLineInput!]!) {
  pointsQuote(customerId: $customer, channel: $channel, storeId: $store, lines: $lines) {
    points
    lines { sku amount points rule { name } }
  }
}"""

CUSTOMERS_POINTS = """
query($first: Int!) {
  customers(first: $first) {
    nodes {
      id
      points { balance pending expiringSoon nextExpiresAt debt }
      pointsLedger(first: 3) {
        totalCount
        nodes { id kind amount pendingDelta balanceAfter sourceId expiresAt createdAt }
      }
    }
  }
}"""

NODE = "query($id: ID!) { node(id: $id) { id ... on PointsEntry { amount reason } } }"


def cid(pk: int) -> str:
    return encode_id("Customer", pk)


def adjust_input(customer: int, amount: int, key: str = "k-1", **extra) -> dict:
    return {
        "input": {
            "customerId": cid(customer),
            "amount": amount,
            "reason": extra.pop("reason", "售后补偿"),
            "idempotencyKey": key,
            **extra,
        }
    }


@pytest.fixture
def as_principal(app, issue_token):
    @asynccontextmanager
    async def client(role: Role, **claims) -> AsyncIterator[GraphQLClient]:
        token = issue_token(role, **claims)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://qudao.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as http:
            yield GraphQLClient(http)

    return client


# --- pointsAdjust -----------------------------------------------------------------------------


async def test_an_operator_grants_and_deducts_points(db, gql):
    (ann,) = await new_customers(db)
    granted = (await gql(ADJUST, adjust_input(ann, 120)))["pointsAdjust"]
    assert granted["errors"] == []
    entry = granted["entry"]
    assert (entry["kind"], entry["amount"], entry["balanceAfter"], entry["actor"]) == (
        "ADJUST",
        120,
        120,
        "user:1",
    )
    assert entry["expiresAt"] is not None
    assert granted["balance"]["balance"] == 120
    deducted = (await gql(ADJUST, adjust_input(ann, -20, "k-2")))["pointsAdjust"]
    assert (deducted["entry"]["amount"], deducted["balance"]["balance"]) == (-20, 100)
    assert (await account(db, ann)).consistent


@pytest.mark.parametrize(
    ("amount", "key", "code", "field"),
    [
        (0, "k-9", "INVALID_AMOUNT", ["input", "amount"]),
        (1_000_001, "k-9", "INVALID_AMOUNT", ["input", "amount"]),
        (-1_000_001, "k-9", "INVALID_AMOUNT", ["input", "amount"]),
        (-1, "k-9", "INSUFFICIENT_POINTS", ["input", "amount"]),
        (5, "", "INVALID", ["input", "idempotencyKey"]),
        (5, "k" * 65, "INVALID", ["input", "idempotencyKey"]),
    ],
)
async def test_a_bad_adjustment_is_a_user_error(db, gql, amount, key, code, field):
    (ann,) = await new_customers(db)
    payload = (await gql(ADJUST, adjust_input(ann, amount, key)))["pointsAdjust"]
    assert payload["entry"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)]
    assert await entries(db, ann) == []


async def test_a_missing_or_malformed_customer_is_a_user_error(db, gql):
    missing = (await gql(ADJUST, adjust_input(9999, 5)))["pointsAdjust"]
    assert [(e["code"], e["field"]) for e in missing["errors"]] == [
        ("NOT_FOUND", ["input", "customerId"])
    ]
    variables = adjust_input(1, 5)
    variables["input"]["customerId"] = encode_id("Partner", 1)
    wrong_type = (await gql(ADJUST, variables))["pointsAdjust"]
    assert [e["code"] for e in wrong_type["errors"]] == ["INVALID"]


async def test_an_idempotency_key_reused_with_other_arguments_is_refused(db, gql):
    (ann,) = await new_customers(db)
    first = (await gql(ADJUST, adjust_input(ann, 10)))["pointsAdjust"]
    retry = (await gql(ADJUST, adjust_input(ann, 10)))["pointsAdjust"]
    assert retry["entry"]["id"] == first["entry"]["id"]
    other = (await gql(ADJUST, adjust_input(ann, 11)))["pointsAdjust"]
    assert [e["code"] for e in other["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert len(await entries(db, ann)) == 1


async def test_a_partner_adjusts_only_the_customers_it_recruited(db, gql, as_principal):
    mine = await create_partner(gql, "P-MINE")
    theirs = await create_partner(gql, "P-THEIRS")
    mine_pk, theirs_pk = (int(_pk(p["id"])) for p in (mine, theirs))
    (own,) = await new_customers(db, recruited_partner_id=mine_pk)
    (other,) = await new_customers(db, recruited_partner_id=theirs_pk)
    (unrecruited,) = await new_customers(db)
    scopes = {"points:write", "customers:read"}
    async with as_principal(Role.INTEGRATION, partner_id=mine_pk, scopes=scopes) as pos:
        ok = (await pos(ADJUST, adjust_input(own, 30, "pos-1")))["pointsAdjust"]
        assert ok["errors"] == [] and ok["balance"]["balance"] == 30
        for customer in (other, unrecruited):
            refused = (await pos(ADJUST, adjust_input(customer, 30, "pos-2")))["pointsAdjust"]
            assert [e["code"] for e in refused["errors"]] == ["NOT_FOUND"]
            assert refused["errors"][0]["message"] == "No such customer."
        # The entry is readable by id to its partner only.
        entry_id = ok["entry"]["id"]
        assert (await pos(NODE, {"id": entry_id}))["node"]["amount"] == 30
    async with as_principal(Role.INTEGRATION, partner_id=theirs_pk, scopes=scopes) as other_pos:
        assert (await other_pos(NODE, {"id": entry_id}))["node"] is None
    # Ledger lines are customer data: without customers:read, not even one's own.
    async with as_principal(
        Role.INTEGRATION, partner_id=mine_pk, scopes={"points:write"}
    ) as writer_only:
        assert (await writer_only(NODE, {"id": entry_id}))["node"] is None
    # Keys are per caller: HQ's "pos-1" is another key than the partner's.
    hq = (await gql(ADJUST, adjust_input(own, 5, "pos-1")))["pointsAdjust"]
    assert hq["errors"] == [] and hq["entry"]["id"] != entry_id
    assert await entries(db, other) == [] and await entries(db, unrecruited) == []


async def test_adjusting_needs_the_points_write_scope(db, as_principal):
    (ann,) = await new_customers(db)
    for role, claims in (
        (Role.PARTNER_ADMIN, {"partner_id": 1}),
        (Role.CHANNEL_MANAGER, {}),
        (Role.MEMBER, {"customer_id": ann, "subject": f"customer:{ann}"}),
    ):
        async with as_principal(role, **claims) as caller:
            body = await caller.raw(ADJUST, adjust_input(ann, 5))
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await entries(db, ann) == []


# --- Customer.points and Customer.pointsLedger ------------------------------------------------


async def test_customer_points_and_ledger_cost_the_same_statements_for_5_or_50(
    db, gql, points, count_queries
):
    customers = await new_customers(db, 50)
    now = utcnow()
    for cid_ in customers:
        await points.earn(cid_, 100, f"o-{cid_}", now=now - timedelta(days=400))  # expired
        await points.earn(cid_, 40, f"p-{cid_}", now=now, pending=True)
        await points.earn(cid_, 25, f"s-{cid_}", now=now - timedelta(days=350))  # soon
    counts = {}
    for first in (5, 50):
        with count_queries() as baseline:
            await gql("query($n: Int!) { customers(first: $n) { nodes { id } } }", {"n": first})
        with count_queries() as counter:
            data = await gql(CUSTOMERS_POINTS, {"first": first})
        assert len(data["customers"]["nodes"]) == first
        counts[first] = counter.count - baseline.count
    # Points: one statement for all; the ledger: the pages (one ROW_NUMBER query), their
    # lots' expiries, and the counts.
    assert counts == {5: 4, 50: 4}
    node = data["customers"]["nodes"][0]
    # The old lot is past its expiry: not spendable although the job has not run.
    assert node["points"] == {
        "balance": 25,
        "pending": 40,
        "expiringSoon": 25,
        "nextExpiresAt": node["points"]["nextExpiresAt"],
        "debt": 0,
    }
    assert node["points"]["nextExpiresAt"] is not None
    ledger = node["pointsLedger"]
    assert ledger["totalCount"] == 3
    assert [e["kind"] for e in ledger["nodes"]] == ["EARN"] * 3
    assert [e["sourceId"][0] for e in ledger["nodes"]] == ["s", "p", "o"]  # newest first
    assert all(e["expiresAt"] for e in ledger["nodes"])


async def test_a_member_sees_their_own_points_only(db, points, as_principal):
    ann, bob = await new_customers(db, 2)
    entry = await points.earn(ann, 10, "o-1", now=utcnow())
    other = await points.earn(bob, 10, "o-2", now=utcnow())
    async with as_principal(Role.MEMBER, customer_id=ann, subject=f"customer:{ann}") as member:
        mine = await member(NODE, {"id": encode_id("PointsEntry", entry.id)})
        assert mine["node"]["amount"] == 10
        theirs = await member(NODE, {"id": encode_id("PointsEntry", other.id)})
        assert theirs["node"] is None


# --- earning rules and quotes -----------------------------------------------------------------


async def test_earning_rules_are_created_listed_and_quoted(db, gql):
    (ann,) = await new_customers(db)
    base = (await gql(RULE_CREATE, {"input": {"name": "每元1分"}}))["pointsEarningRuleCreate"]
    assert base["errors"] == []
    tea = (
        await gql(
            RULE_CREATE,
            {
                "input": {
                    "name": "茶叶三倍",
                    "channel": "mini_program",
                    "sku": "TEA-1",
                    "multiplier": "3",
                    "pointsPerYuan": "0.5",
                }
            },
        )
    )["pointsEarningRuleCreate"]
    assert tea["rule"]["multiplier"] == "3" and tea["rule"]["pointsPerYuan"] == "0.5"
    listed = await gql("{ pointsEarningRules(first: 10) { totalCount nodes { name } } }")
    assert [n["name"] for n in listed["pointsEarningRules"]["nodes"]] == ["每元1分", "茶叶三倍"]
    quoted = await gql(
        QUOTE,
        {
            "customer": cid(ann),
            "channel": "mini_program",
            "lines": [{"sku": "TEA-1", "amount": "39.90"}, {"sku": "CUP-1", "amount": "9.99"}],
        },
    )
    assert quoted["pointsQuote"] == {
        "points": 59 + 9,
        "lines": [
            {"sku": "TEA-1", "amount": "39.90", "points": 59, "rule": {"name": "茶叶三倍"}},
            {"sku": "CUP-1", "amount": "9.99", "points": 9, "rule": {"name": "每元1分"}},
        ],
    }
    assert await entries(db, ann) == []  # a quote writes nothing


async def test_a_bad_rule_is_refused_with_every_problem(db, gql):
    payload = (
        await gql(
            RULE_CREATE,
            {
                "input": {
                    "name": " ",
                    "multiplier": "0",
                    "pointsPerYuan": "0.00001",
                    "storeId": encode_id("Store", 999),
                    "startsAt": "2026-05-01T00:00:00Z",
                    "endsAt": "2026-04-01T00:00:00Z",
                }
            },
        )
    )["pointsEarningRuleCreate"]
    assert payload["rule"] is None
    assert sorted((e["code"], e["field"][-1]) for e in payload["errors"]) == [
        ("INVALID", "endsAt"),
        ("INVALID", "name"),
        ("INVALID_AMOUNT", "multiplier"),
        ("INVALID_AMOUNT", "pointsPerYuan"),
        ("UNKNOWN_STORE", "storeId"),
    ]


async def test_partners_see_rules_for_all_stores_and_their_own_not_anothers(db, gql, as_principal):
    mine = await create_partner(gql, "P-MINE")
    theirs = await create_partner(gql, "P-THEIRS")
    my_store = await create_store(gql, "S-MINE", mine["id"])
    their_store = await create_store(gql, "S-THEIRS", theirs["id"])
    for name, store in (("all", None), ("mine", my_store), ("theirs", their_store)):
        payload = {"name": name, "storeId": store["id"] if store else None}
        assert (await gql(RULE_CREATE, {"input": payload}))["pointsEarningRuleCreate"][
            "errors"
        ] == []
    async with as_principal(Role.PARTNER_ADMIN, partner_id=int(_pk(mine["id"]))) as partner:
        listed = await partner("{ pointsEarningRules { nodes { name } } }")
        assert [n["name"] for n in listed["pointsEarningRules"]["nodes"]] == ["all", "mine"]
        created = await partner.raw(RULE_CREATE, {"input": {"name": "x"}})
        assert created["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_quote_for_another_partners_customer_is_null(db, gql, as_principal):
    mine = await create_partner(gql, "P-MINE")
    theirs = await create_partner(gql, "P-THEIRS")
    (other,) = await new_customers(db, recruited_partner_id=int(_pk(theirs["id"])))
    variables = {"customer": cid(other), "channel": "store", "lines": [{"sku": "A", "amount": "1"}]}
    async with as_principal(Role.PARTNER_ADMIN, partner_id=int(_pk(mine["id"]))) as partner:
        assert (await partner(QUOTE, variables))["pointsQuote"] is None
    assert (await gql(QUOTE, variables))["pointsQuote"] == {
        "points": 0,
        "lines": [{"sku": "A", "amount": "1", "points": 0, "rule": None}],
    }
    bad = await gql.raw(QUOTE, {**variables, "lines": []})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def _pk(global_id: str) -> int:
    from api.graphql.ids import decode_id

    return decode_id(global_id)[1]


async def test_a_quote_at_another_partners_store_answers_like_a_missing_store(
    db, gql, as_principal
):
    # The other partner's store runs a ×10 rule: a quote priced with it would reveal it.
    mine = await create_partner(gql, "P-MINE")
    theirs = await create_partner(gql, "P-THEIRS")
    my_store = await create_store(gql, "S-MINE", mine["id"])
    their_store = await create_store(gql, "S-THEIRS", theirs["id"])
    for payload in (
        {"name": "base"},
        {"name": "mine ×2", "storeId": my_store["id"], "multiplier": "2", "priority": 1},
        {"name": "theirs ×10", "storeId": their_store["id"], "multiplier": "10", "priority": 1},
    ):
        created = await gql(RULE_CREATE, {"input": payload})
        assert created["pointsEarningRuleCreate"]["errors"] == []
    (ann,) = await new_customers(
        db, recruited_partner_id=_pk(mine["id"]), recruited_store_id=_pk(my_store["id"])
    )
    cart = {"customer": cid(ann), "channel": "store", "lines": [{"sku": "A", "amount": "10"}]}

    async def refusal(client, store_id: str) -> dict:
        body = await client.raw(QUOTE, {**cart, "store": store_id})
        assert body["data"] == {"pointsQuote": None}
        return body["errors"][0]

    async with as_principal(Role.PARTNER_ADMIN, partner_id=_pk(mine["id"])) as partner:
        own = await partner(QUOTE, {**cart, "store": my_store["id"]})
        assert own["pointsQuote"]["points"] == 20
        theirs_error = await refusal(partner, their_store["id"])
        missing_error = await refusal(partner, encode_id("Store", 999_999))
    assert theirs_error["extensions"]["code"] == "BAD_USER_INPUT"
    assert theirs_error["message"] == missing_error["message"] == "No such store."
    assert {k: v for k, v in theirs_error.items() if k != "locations"} == {
        k: v for k, v in missing_error.items() if k != "locations"
    }
    # A clerk of one store cannot price with a sibling store's rules either.
    sibling = await create_store(gql, "S-MINE-2", mine["id"])
    clerk = {"partner_id": _pk(mine["id"]), "store_id": _pk(my_store["id"])}
    async with as_principal(Role.STORE_STAFF, **clerk) as staff:
        assert (await refusal(staff, sibling["id"]))["message"] == "No such store."
    # HQ sees every store, and the quote uses that store's rule.
    assert (await gql(QUOTE, {**cart, "store": their_store["id"]}))["pointsQuote"]["points"] == 100
