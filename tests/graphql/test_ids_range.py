"""Global ids name INTEGER primary keys: a number past 2**31 - 1 cannot name a row and is an
invalid id wherever ids are read (never an internal error from PostgreSQL, which refuses such
a parameter); the largest possible key is an ordinary unknown id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.errors import InputError
from api.graphql.ids import MAX_PK, decode_id, encode_id

LARGEST = MAX_PK  # 2**31 - 1: valid, and nobody's
TOO_LARGE = [2**31, 99_999_999_999, 999_999_999_999_999_999]

NODE = "query($id: ID!) { node(id: $id) { id } }"
CUSTOMER = "query($id: ID!) { customer(id: $id) { id } }"
RECORD = """mutation($input: TouchpointRecordInput!) { touchpointRecord(input: $input) {
  touchpoint { id } errors { code field }
} }"""
FUNNEL = """query($from: DateTime!, $to: DateTime!, $partnerId: ID) {
  conversionFunnel(from: $from, to: $to, partnerId: $partnerId) {
    groups { steps { customers } } errors { code field }
} }"""


def test_the_largest_key_is_the_largest_integer():
    assert MAX_PK == 2**31 - 1
    assert decode_id(encode_id("Customer", LARGEST)) == ("Customer", LARGEST)
    for pk in TOO_LARGE:
        with pytest.raises(InputError, match="Invalid ID"):
            decode_id(encode_id("Customer", pk))


def record(customer_id: str) -> dict:
    return {
        "input": {
            "eventId": "e1",
            "step": "WECOM_ADDED",
            "customer": {"id": customer_id},
            "occurredAt": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        }
    }


def funnel(partner_id: str) -> dict:
    end = datetime.now(UTC)
    return {
        "from": (end - timedelta(days=7)).isoformat(),
        "to": end.isoformat(),
        "partnerId": partner_id,
    }


@pytest.mark.parametrize("pk", TOO_LARGE)
async def test_a_key_past_the_integer_range_is_an_invalid_id(gql, pk):
    customer = encode_id("Customer", pk)
    for query in (NODE, CUSTOMER):
        (error,) = (await gql.raw(query, {"id": customer}))["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert "Invalid ID" in error["message"]
    payload = (await gql(RECORD, record(customer)))["touchpointRecord"]
    assert payload == {
        "touchpoint": None,
        "errors": [{"code": "INVALID", "field": ["input", "customer", "id"]}],
    }
    result = (await gql(FUNNEL, funnel(encode_id("Partner", pk))))["conversionFunnel"]
    assert result == {"groups": [], "errors": [{"code": "INVALID", "field": ["partnerId"]}]}


async def test_the_largest_key_is_an_unknown_id(gql):
    customer = encode_id("Customer", LARGEST)
    assert await gql(NODE, {"id": customer}) == {"node": None}
    assert await gql(CUSTOMER, {"id": customer}) == {"customer": None}
    payload = (await gql(RECORD, record(customer)))["touchpointRecord"]
    assert payload == {
        "touchpoint": None,
        "errors": [{"code": "NOT_FOUND", "field": ["input", "customer", "id"]}],
    }
    result = (await gql(FUNNEL, funnel(encode_id("Partner", LARGEST))))["conversionFunnel"]
    assert result["errors"] == [] and result["groups"][0]["steps"][0] == {"customers": 0}
