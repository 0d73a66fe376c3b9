"""Every list a caller hands the customers domain is capped (review finding 7).

Unbounded, one `customers` filter of a thousand tags (an EXISTS each) overflowed SQLite's
expression tree, and forty thousand ids passed PostgreSQL's 32,767-parameter limit: a 500
for anyone holding customers:read, members included. Over a cap is now a clear refusal:
a top-level BAD_USER_INPUT for query filters, a UserError on the field for mutation inputs.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.auth.principal import Principal, Role
from api.customers.customer_filter import CustomerFilter, customers_query
from api.customers.errors import CustomerErrorCode
from api.errors import DomainError
from tests.customers.conftest import gid, pk
from tests.factories import create_customer

CUSTOMERS = "query($filter: CustomerFilter) { customers(filter: $filter) { totalCount } }"

# filter field → a value of its kind (ids of the right type, numbered).
LISTS = {
    "tags": lambda i: f"tag{i}",
    "anyTags": lambda i: f"tag{i}",
    "levelIds": lambda i: gid("MemberLevel", i + 1),
    "levelCodes": lambda i: f"level{i}",
    "recruitedStoreIds": lambda i: gid("Store", i + 1),
    "recruitedGuideIds": lambda i: gid("StaffUser", i + 1),
    "recruitedPartnerIds": lambda i: gid("Partner", i + 1),
}


@pytest.fixture
async def member(gql, as_principal) -> Any:
    """A member's own client: members hold customers:read (for themself)."""
    me = await create_customer(gql, "13700000001", name="Me", tags=["tag0"])
    return as_principal(Role.MEMBER, customer_id=pk(me["id"]), subject=f"customer:{pk(me['id'])}")


@pytest.mark.parametrize("field", sorted(LISTS))
async def test_every_filter_list_takes_fifty_values_and_refuses_the_fifty_first(gql, member, field):
    make = LISTS[field]
    for caller in (gql, member):
        fifty = await caller(CUSTOMERS, {"filter": {field: [make(i) for i in range(50)]}})
        assert isinstance(fifty["customers"]["totalCount"], int)
        body = await caller.raw(CUSTOMERS, {"filter": {field: [make(i) for i in range(51)]}})
        assert body["data"] is None
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"] == f"filter.{field} takes at most 50 values; got 51."


async def test_the_cap_is_checked_before_any_id_is_decoded(gql):
    """Forty thousand ids (past PostgreSQL's parameter limit), malformed ones among them:
    the answer is the cap, at once, not a 500 nor an 'Invalid ID'."""
    ids = [gid("Store", i) for i in range(40_000)] + ["not an id"]
    body = await gql.raw(CUSTOMERS, {"filter": {"recruitedStoreIds": ids}})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["message"] == (
        "filter.recruitedStoreIds takes at most 50 values; got 40001."
    )


async def test_a_thousand_tags_are_refused_not_an_expression_tree_overflow(member):
    body = await member.raw(CUSTOMERS, {"filter": {"tags": [f"t{i}" for i in range(1000)]}})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "at most 50 values" in body["errors"][0]["message"]


async def test_search_is_at_most_a_hundred_characters(gql, member):
    for caller in (gql, member):
        ok = await caller(CUSTOMERS, {"filter": {"search": "m" * 100}})
        assert ok["customers"]["totalCount"] == 0
        body = await caller.raw(CUSTOMERS, {"filter": {"search": "m" * 101}})
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"] == "filter.search is at most 100 characters; got 101."


async def test_every_oversized_field_is_named_at_once(gql):
    body = await gql.raw(
        CUSTOMERS,
        {"filter": {"tags": ["t"] * 60, "levelCodes": ["c"] * 51, "search": "s" * 200}},
    )
    assert body["errors"][0]["message"] == (
        "filter.tags takes at most 50 values; got 60. "
        "filter.levelCodes takes at most 50 values; got 51. "
        "filter.search is at most 100 characters; got 200."
    )


def test_the_service_refuses_oversized_filters_for_callers_outside_graphql():
    hq = Principal(subject="user:1", role=Role.HQ_ADMIN)
    where = CustomerFilter(level_ids=list(range(51)), search="x" * 101)
    with pytest.raises(DomainError) as refused:
        customers_query(hq, where)
    assert [(p.code, p.field) for p in refused.value.problems] == [
        (CustomerErrorCode.INVALID, ("filter", "levelIds")),
        (CustomerErrorCode.INVALID, ("filter", "search")),
    ]
    # At the cap it builds.
    customers_query(hq, CustomerFilter(level_ids=list(range(50))))


UPSERT = """mutation($input: CustomerUpsertInput!) {
  customerUpsert(input: $input) { customer { id } errors { field code message } }
}"""
UPDATE = """mutation($input: CustomerUpdateInput!) {
  customerUpdate(input: $input) { customer { id } errors { field code message } }
}"""
MERGE = """mutation($input: CustomersMergeInput!) {
  customersMerge(input: $input) { customer { id } errors { field code message } }
}"""


def _phone(i: int) -> dict[str, str]:
    return {"kind": "PHONE", "value": f"137{i:08d}"}


def _consent(i: int) -> dict[str, Any]:
    return {"purpose": "PROFILING", "granted": i % 2 == 0, "source": "store"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"identities": [_phone(i) for i in range(21)]},
            ("INVALID", ["input", "identities"], "At most 20 identities at once."),
        ),
        (
            {"identities": [_phone(1)], "tags": [f"t{i}" for i in range(51)]},
            ("INVALID", ["input", "tags"], "At most 50 tags."),
        ),
        (
            {"identities": [_phone(1)], "consents": [_consent(i) for i in range(21)]},
            ("INVALID", ["input", "consents"], "At most 20 consent decisions at once."),
        ),
        (
            {"identities": [_phone(1)], "attributes": {f"k{i}": i for i in range(101)}},
            ("INVALID", ["input", "attributes"], "At most 100 attributes."),
        ),
    ],
)
async def test_upsert_lists_are_capped(gql, payload, expected):
    result = (await gql(UPSERT, {"input": payload}))["customerUpsert"]
    assert result["customer"] is None
    assert [(e["code"], e["field"], e["message"]) for e in result["errors"]] == [expected]
    assert (await gql("{ customers { totalCount } }"))["customers"]["totalCount"] == 0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"tagsAdd": [f"t{i}" for i in range(51)]}, ("tagsAdd", "At most 50 tags.")),
        ({"tagsRemove": [f"t{i}" for i in range(51)]}, ("tagsRemove", "At most 50 tags.")),
        (
            {"attributesUnset": [f"k{i}" for i in range(101)]},
            ("attributesUnset", "At most 100 attributes."),
        ),
        (
            {"consents": [_consent(i) for i in range(21)]},
            ("consents", "At most 20 consent decisions at once."),
        ),
        (
            {"identitiesAdd": [_phone(i) for i in range(2, 23)]},
            ("identitiesAdd", "At most 20 identities at once."),
        ),
        (
            {"identitiesRemove": [_phone(i) for i in range(2, 23)]},
            ("identitiesRemove", "At most 20 identities at once."),
        ),
    ],
)
async def test_update_lists_are_capped(gql, payload, expected):
    customer = await create_customer(gql, "13700000001", tags=["keep"])
    result = (await gql(UPDATE, {"input": {"id": customer["id"], **payload}}))["customerUpdate"]
    assert result["customer"] is None
    field, message = expected
    assert [(e["code"], e["field"], e["message"]) for e in result["errors"]] == [
        ("INVALID", ["input", field], message)
    ]
    after = await gql("query($id: ID!) { customer(id: $id) { tags } }", {"id": customer["id"]})
    assert after["customer"]["tags"] == ["keep"]


async def test_merge_sources_are_capped_before_they_are_decoded(gql):
    target = await create_customer(gql, "13700000001")
    sources = [gid("Customer", 1000 + i) for i in range(5000)] + ["not an id"]
    result = (await gql(MERGE, {"input": {"targetId": target["id"], "sourceIds": sources}}))[
        "customersMerge"
    ]
    assert result["errors"] == [
        {
            "field": ["input", "sourceIds"],
            "code": "MERGE_INVALID",
            "message": "At most 10 sources per merge.",
        }
    ]


async def test_duplicate_suggestions_are_capped(gql, member):
    me = await create_customer(gql, "13700000002")
    for caller in (gql, member):
        body = await caller.raw(
            "query($id: ID!) { customerDuplicates(customerId: $id, first: 51) { score } }",
            {"id": me["id"]},
        )
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert body["errors"][0]["message"] == "`first` must be between 1 and 50."
