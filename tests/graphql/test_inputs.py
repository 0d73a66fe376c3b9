"""Every input value is checked in one place before anything runs, so a new field cannot
forget it: text holds no control characters (tabs and line breaks aside) and no lone
surrogates, lists and strings are bounded, decimals are finite and bounded, and an id has
one spelling. Each used to be an INTERNAL error (or stored garbage) somewhere; each is now a
coded error before a single SQL statement, on both engines."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from api.graphql.ids import encode_id
from tests.factories import create_customer

ID = encode_id("Customer", 1)

# Fields issue 12 found taking text unchecked, each with a bad value at one of them.
TEXT_FIELDS = {
    "storeCreate name": (
        'mutation($t: String!) { storeCreate(input: {code: "S1", name: $t, regionCode: '
        '"310000", address: "1 Road"}) { errors { code } } }'
    ),
    "storeCreate address": (
        'mutation($t: String!) { storeCreate(input: {code: "S1", name: "S", regionCode: '
        '"310000", address: $t}) { errors { code } } }'
    ),
    "memberLevelCreate code": (
        'mutation($t: String!) { memberLevelCreate(input: {code: $t, name: "Gold", rank: 1, '
        'metric: SPEND, threshold: "100"}) { errors { code } } }'
    ),
    "pointsAdjust reason": (
        "mutation($t: String!) { pointsAdjust(input: {customerId: "
        f'"{ID}", amount: 5, reason: $t, idempotencyKey: "k1"}}) {{ errors {{ code }} }} }}'
    ),
    "pointsAdjust idempotencyKey": (
        "mutation($t: String!) { pointsAdjust(input: {customerId: "
        f'"{ID}", amount: 5, reason: "goodwill", idempotencyKey: $t}}) {{ errors {{ code }} }} }}'
    ),
    "couponClaim claimKey": (
        "mutation($t: String) { couponClaim(input: {templateId: "
        f'"{encode_id("CouponTemplate", 1)}", claimKey: $t}}) {{ errors {{ code }} }} }}'
    ),
    "orderCancel reason": (
        f'mutation($t: String!) {{ orderCancel(input: {{orderId: "{encode_id("Order", 1)}", '
        "reason: $t}) { errors { code } } }"
    ),
    "partners search": "query($t: String) { partners(filter: {search: $t}) { totalCount } }",
    "products search": "query($t: String) { products(filter: {search: $t}) { totalCount } }",
    "sku code": "query($t: String!) { sku(code: $t) { id } }",
    "audit actor": "query($t: String) { auditEvents(filter: {actor: $t}) { totalCount } }",
    "customer attributes (JSON)": (
        'mutation($t: String!) { customerUpsert(input: {name: "Ann", attributes: {note: $t}}) '
        "{ errors { code } } }"
    ),
}
BAD_TEXT = {
    "NUL": "a\x00b",
    "escape sequence": "\x01\x1b[31m\x7f",
    "C1 control": "a\x85b",
    "lone surrogate": "a\ud800b",
}


async def post_escaped(gql: Any, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    # As a client sends them: JSON escapes (\u0000, \ud800); a lone surrogate is valid JSON.
    response = await gql.http.post(
        "/graphql",
        content=json.dumps({"query": query, "variables": variables}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


@pytest.mark.parametrize("bad", BAD_TEXT, ids=list(BAD_TEXT))
@pytest.mark.parametrize("field", TEXT_FIELDS, ids=list(TEXT_FIELDS))
async def test_text_with_control_characters_is_refused_before_any_sql(
    gql, count_queries, field, bad
):
    with count_queries() as counter:
        error = only_error(await post_escaped(gql, TEXT_FIELDS[field], {"t": BAD_TEXT[bad]}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "`$t` cannot hold" in error["message"]
    assert counter.count == 0


async def test_text_in_a_literal_is_checked_like_a_variable(gql, count_queries):
    with count_queries() as counter:
        error = only_error(await gql.raw('{ sku(code: "TEA\\u0000") { id } }'))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("`code` cannot hold a control character (U+0000)")
    assert counter.count == 0


async def test_a_points_reason_with_an_escape_sequence_is_not_stored(gql, db):
    # SQLite used to store "\x01\x1b[31m\x7f" as a reason (a terminal would obey it).
    customer = await create_customer(gql, "13800000001")
    adjust = """mutation($input: PointsAdjustInput!) { pointsAdjust(input: $input) {
        errors { code } } }"""
    refused = await post_escaped(
        gql,
        adjust,
        {
            "input": {
                "customerId": customer["id"],
                "amount": 5,
                "reason": "\x01\x1b[31m\x7f",
                "idempotencyKey": "k1",
            }
        },
    )
    assert only_error(refused)["extensions"]["code"] == "BAD_USER_INPUT"
    # Tabs and line breaks are text; the same adjustment with a two-line reason goes through.
    variables = {
        "input": {
            "customerId": customer["id"],
            "amount": 5,
            "reason": "goodwill\nper call 42",
            "idempotencyKey": "k1",
        }
    }
    assert (await gql(adjust, variables))["pointsAdjust"]["errors"] == []
    balance = await gql(
        "query($id: ID!) { customer(id: $id) { points { balance } } }", {"id": customer["id"]}
    )
    assert balance["customer"]["points"]["balance"] == 5


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("query($ids: [ID!]) { stockLevels(filter: {storeIds: $ids}) { totalCount } }", "$ids"),
        ("query($ids: [ID!]) { stockLevels(filter: {skuIds: $ids}) { totalCount } }", "$ids"),
        ("query($ids: [ID!]) { stockMovements(filter: {storeIds: $ids}) { totalCount } }", "$ids"),
        ("query($ids: [ID!]) { stockAlerts(filter: {skuIds: $ids}) { totalCount } }", "$ids"),
        ("query($ids: [ID!]) { stores(filter: {partnerIds: $ids}) { totalCount } }", "$ids"),
    ],
)
async def test_forty_thousand_ids_are_refused_before_any_sql(gql, count_queries, query, path):
    # 40,000 parameters are more than PostgreSQL takes in one statement (32,767).
    ids = [encode_id("Store", n) for n in range(1, 40_001)]
    with count_queries() as counter:
        error = only_error(await gql.raw(query, {"ids": ids}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == f"A list holds at most 1000 values; `{path}` has 40000."
    assert counter.count == 0


async def test_a_list_literal_is_bounded_like_a_variable(gql):
    ids = ", ".join(f'"{encode_id("Store", n)}"' for n in range(1, 1_002))
    error = only_error(
        await gql.raw(f"{{ stores(filter: {{partnerIds: [{ids}]}}) {{ totalCount }} }}")
    )
    assert error["message"] == "A list holds at most 1000 values; `filter.partnerIds` has 1001."


async def test_a_search_of_fifty_thousand_bytes_is_refused(gql, count_queries):
    with count_queries() as counter:
        error = only_error(
            await gql.raw(
                "query($s: String) { partners(filter: {search: $s}) { totalCount } }",
                {"s": "x" * 50_000},
            )
        )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "A text value is at most 10000 characters; `$s` has 50000."
    assert counter.count == 0


@pytest.mark.parametrize("text", ["%" * 10_000, "\U0001f375" * 10_000], ids=["escapes", "4-byte"])
async def test_a_search_at_the_cap_is_answered_on_both_engines(gql, text):
    # The longest text allowed stays inside SQLite's LIKE pattern limit (50,000 bytes).
    for search in ("partners", "couponTemplates"):
        body = await gql(
            f"query($s: String) {{ {search}(filter: {{search: $s}}) {{ totalCount }} }}",
            {"s": text},
        )
        assert body[search]["totalCount"] == 0


COUPON = """mutation($amount: Decimal) { couponTemplateCreate(input: {name: "10 off",
    kind: AMOUNT_OFF_THRESHOLD, claimChannel: ONLINE, useChannel: ONLINE, totalStock: 10,
    thresholdAmount: "100", discountAmount: $amount, validDays: 30}) { errors { code field } } }"""


@pytest.mark.parametrize(
    ("amount", "code", "reason"),
    [
        ("NaN", "BAD_USER_INPUT", "finite"),
        ("sNaN", "BAD_USER_INPUT", "finite"),
        ("-Infinity", "BAD_USER_INPUT", "finite"),
        ("1E+30", "BAD_USER_INPUT", "below 1,000,000,000,000,000"),
        ("1E-30", "BAD_USER_INPUT", "at most 8 decimal places"),
        ("0.000000001", "BAD_USER_INPUT", "at most 8 decimal places"),
        # Not a decimal at all: the scalar refuses it, like any variable of the wrong type.
        ("1." + "0" * 100, "GRAPHQL_VALIDATION_FAILED", "at most 64 characters"),
        ("ten", "GRAPHQL_VALIDATION_FAILED", "Not a decimal number"),
        (True, "GRAPHQL_VALIDATION_FAILED", "a string"),
    ],
)
async def test_decimals_must_be_finite_and_bounded(gql, count_queries, amount, code, reason):
    with count_queries() as counter:
        error = only_error(await gql.raw(COUPON, {"amount": amount}))
    assert error["extensions"]["code"] == code
    assert reason in error["message"]
    assert counter.count == 0


async def test_a_decimal_literal_is_checked_too(gql):
    literal = COUPON.replace("discountAmount: $amount", 'discountAmount: "NaN"').replace(
        "($amount: Decimal)", ""
    )
    error = only_error(await gql.raw(literal))
    assert "finite" in error["message"]


async def test_decimals_in_range_still_work(gql):
    body = await gql(COUPON, {"amount": "10.00"})
    assert body["couponTemplateCreate"]["errors"] == []


def spellings_of_customer_one() -> dict[str, str]:
    canonical = encode_id("Customer", 1)
    return {
        "zero padded": base64.urlsafe_b64encode(b"Customer:0000000001").decode().rstrip("="),
        "Arabic-Indic digit": base64.urlsafe_b64encode("Customer:١".encode()).decode().rstrip("="),
        "padded base64": canonical + "=" * (-len(canonical) % 4 or 4),
        "standard alphabet": base64.b64encode(b"Customer:1").decode(),
        "stray characters": canonical[:4] + "!" + canonical[4:],
        "unused bits set": canonical[:-1] + chr(ord(canonical[-1]) + 1),
        "surrounding space": f" {canonical} ",
    }


@pytest.mark.parametrize("spelling", list(spellings_of_customer_one()))
async def test_only_the_canonical_id_names_an_object(gql, spelling):
    customer = await create_customer(gql, "13800000001")
    assert customer["id"] == encode_id("Customer", 1)
    found = await gql("query($id: ID!) { node(id: $id) { id } }", {"id": customer["id"]})
    assert found["node"] == {"id": customer["id"]}
    other = spellings_of_customer_one()[spelling]
    assert other != customer["id"]
    body = await gql.raw("query($id: ID!) { node(id: $id) { id } }", {"id": other})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["message"] == f"Invalid ID: {other!r}."
