"""DateTime inputs must carry a UTC offset: a naive time is ambiguous, so it is refused."""

from __future__ import annotations

import pytest

QUERY = "query($from: DateTime!) { customers(filter: {createdAt: {from: $from}}) { totalCount } }"


@pytest.mark.parametrize("value", ["2026-11-24T09:30:00", "2026-11-24", "yesterday", "12"])
async def test_a_date_time_without_an_offset_is_refused_before_execution(gql, value):
    body = await gql.raw(QUERY, {"from": value})
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"  # like any bad variable
    assert "$from" in error["message"]


async def test_the_message_says_how_to_fix_it(gql):
    body = await gql.raw(QUERY, {"from": "2026-11-24T09:30:00"})
    assert "has no UTC offset; add one" in body["errors"][0]["message"]


async def test_a_literal_without_an_offset_is_refused_too(gql):
    body = await gql.raw(
        '{ customers(filter: {createdAt: {from: "2026-11-24T09:30:00"}}) { totalCount } }'
    )
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "has no UTC offset" in body["errors"][0]["message"]


@pytest.mark.parametrize("value", ["2026-11-24T09:30:00+08:00", "2026-11-24T01:30:00Z"])
async def test_offsets_in_any_zone_are_the_same_instant(gql, value):
    assert (await gql(QUERY, {"from": value}))["customers"]["totalCount"] == 0
