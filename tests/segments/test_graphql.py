"""Segments over the API: preview, save, members, explain, and who may see what.

The people are conftest.py's: partner A recruited ann, dan and fay; partner B bob; cat
nobody. Another partner's segment (or customer) answers exactly like a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from api.analytics.models import CustomerMetrics
from api.auth.principal import Role
from api.customers.models import Customer, CustomerStatus, CustomerTag
from api.db import Database
from api.graphql.ids import encode_id
from tests.conftest import GraphQLClient
from tests.segments.conftest import NOW, People

PREVIEW = """
query($q: String!) {
  segmentPreview(query: $q) {
    count sample { name } errors { field message code line column }
  }
}"""
CREATE = """
mutation($input: SegmentCreateInput!) {
  segmentCreate(input: $input) {
    segment { id name query description owner { code } createdBy }
    errors { field message code line column }
  }
}"""
UPDATE = """
mutation($input: SegmentUpdateInput!) {
  segmentUpdate(input: $input) { segment { id name query description } errors { field code } }
}"""
DELETE = """
mutation($input: SegmentDeleteInput!) {
  segmentDelete(input: $input) { deletedSegmentId errors { field code message } }
}"""
SEGMENT = """
query($id: ID!) {
  segment(id: $id) {
    name count members(first: 50) { nodes { name } pageInfo { hasNextPage } }
  }
}"""
EXPLAIN = """
query($id: ID!, $c: ID!) {
  segment(id: $id) {
    explain(customerId: $c) {
      matches customer { name } clauses { text line column matched }
    }
  }
}"""
SEGMENTS = "{ segments(first: 10) { nodes { name } totalCount } }"
Principal = Callable[..., GraphQLClient]


def cid(people: People, name: str) -> str:
    return encode_id("Customer", people.ids[name])


async def create(gql: GraphQLClient, name: str, query: str, **more: Any) -> dict[str, Any]:
    result = (await gql(CREATE, {"input": {"name": name, "query": query, **more}}))["segmentCreate"]
    assert result["errors"] == [], result["errors"]
    return result["segment"]


def names(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["name"] for n in nodes]


# --- preview -------------------------------------------------------------------------------


async def test_preview_counts_and_samples_by_id(gql: GraphQLClient, people: People) -> None:
    found = (await gql(PREVIEW, {"q": "member = true AND NOT tag = 'vip_blacklist'"}))[
        "segmentPreview"
    ]
    assert found == {
        "count": 3,
        "sample": [{"name": "ann"}, {"name": "dan"}, {"name": "fay"}],
        "errors": [],
    }
    nobody = (await gql(PREVIEW, {"q": "orders_count > 99"}))["segmentPreview"]
    assert nobody == {"count": 0, "sample": [], "errors": []}


async def test_preview_points_at_the_mistake(gql: GraphQLClient, people: People) -> None:
    found = (await gql(PREVIEW, {"q": "orders_count >= 3 AND\n  oders_count < 9"}))[
        "segmentPreview"
    ]
    assert found == {
        "count": 0,
        "sample": [],
        "errors": [
            {
                "field": ["query"],
                "message": "Unknown field 'oders_count' at line 2, column 3; did you mean "
                "'orders_count'?",
                "code": "INVALID_QUERY",
                "line": 2,
                "column": 3,
            }
        ],
    }


async def test_a_partners_preview_holds_only_its_recruits(
    people: People, as_principal: Principal
) -> None:
    admin_a = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_a)
    found = (await admin_a(PREVIEW, {"q": "orders_count >= 0"}))["segmentPreview"]
    assert (found["count"], names(found["sample"])) == (3, ["ann", "dan", "fay"])
    # Naming another partner's recruits finds nobody.
    found = (await admin_a(PREVIEW, {"q": "recruiting_partner = 'pb'"}))["segmentPreview"]
    assert found["count"] == 0
    # A caller without customers:read gets the count only.
    counter = as_principal(
        Role.PARTNER_ADMIN, partner_id=people.partner_a, scopes={"analytics:read"}
    )
    found = (await counter(PREVIEW, {"q": "orders_count >= 0"}))["segmentPreview"]
    assert (found["count"], found["sample"]) == (3, [])


async def test_store_staff_and_members_cannot_use_segments(
    people: People, as_principal: Principal
) -> None:
    staff = as_principal(Role.STORE_STAFF, partner_id=people.partner_a, store_id=people.a1)
    member = as_principal(
        Role.MEMBER, customer_id=people.ids["ann"], subject=f"customer:{people.ids['ann']}"
    )
    for caller in (staff, member):
        for document, variables in (
            (PREVIEW, {"q": "member = true"}),
            (CREATE, {"input": {"name": "x", "query": "member = true"}}),
            (SEGMENTS, None),
        ):
            body = await caller.raw(document, variables)
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body


# --- saving --------------------------------------------------------------------------------


async def test_create_checks_the_name_and_the_query(gql: GraphQLClient, people: People) -> None:
    result = (await gql(CREATE, {"input": {"name": " ", "query": "orders_count >= 3 AND tag ="}}))[
        "segmentCreate"
    ]
    assert result["segment"] is None
    assert result["errors"] == [
        {
            "field": ["input", "name"],
            "message": "name is required.",
            "code": "REQUIRED",
            "line": None,
            "column": None,
        },
        {
            "field": ["input", "query"],
            "message": "Expected a value after '=' at column 28 (the query ends there).",
            "code": "INVALID_QUERY",
            "line": 1,
            "column": 28,
        },
    ]


async def _sent_escaped(gql: GraphQLClient, query: str, variables: dict[str, Any]) -> Any:
    """As a client sends it: JSON with \\u escapes (a lone surrogate has no UTF-8)."""
    response = await gql.http.post(
        "/graphql",
        content=json.dumps({"query": query, "variables": variables}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


async def test_control_characters_and_lone_surrogates_are_mistakes_not_crashes(
    gql: GraphQLClient, people: People
) -> None:
    """PostgreSQL refuses NUL and no engine can store a lone surrogate: each is refused,
    pointing at it, before any SQL runs."""
    for query, column, what in (
        ("tag = 'a\x00'", 9, "a control character (U+0000)"),
        ("tag = '\ud800'", 8, "a lone surrogate (U+D800)"),
        ("member = true\x00", 14, "a control character (U+0000)"),
    ):
        found = (await _sent_escaped(gql, PREVIEW, {"q": query}))["segmentPreview"]
        assert found["errors"] == [
            {
                "field": ["query"],
                "message": f"The query holds {what} at column {column}; remove it.",
                "code": "INVALID_QUERY",
                "line": 1,
                "column": column,
            }
        ]
    variables = {
        "input": {"name": "vip\x00", "query": "tag = 'a\x00'", "description": "spring\ud800"}
    }
    result = (await _sent_escaped(gql, CREATE, variables))["segmentCreate"]
    assert result["segment"] is None
    assert [(e["field"], e["code"], e["message"]) for e in result["errors"]] == [
        (
            ["input", "name"],
            "INVALID",
            "name cannot hold a control character (U+0000).",
        ),
        (
            ["input", "description"],
            "INVALID",
            "description cannot hold a lone surrogate (U+D800).",
        ),
        (
            ["input", "query"],
            "INVALID_QUERY",
            "The query holds a control character (U+0000) at column 9; remove it.",
        ),
    ]
    # Line breaks and tabs may separate conditions, and lines of a description.
    saved = await create(
        gql, "VIP", "tag = 'vip'\n\tAND member = true", description="For the spring\nsale"
    )
    assert (saved["query"], saved["description"]) == (
        "tag = 'vip'\n\tAND member = true",
        "For the spring\nsale",
    )
    found = (await gql(SEGMENT, {"id": saved["id"]}))["segment"]
    assert (found["count"], names(found["members"]["nodes"])) == (2, ["ann", "bob"])


async def test_hq_and_partner_segments_are_kept_apart(
    gql: GraphQLClient, people: People, as_principal: Principal
) -> None:
    admin_a = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_a)
    admin_b = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_b)
    hq = await create(gql, "HQ loyal", "orders_count >= 3", description="for Q2")
    assert (hq["owner"], hq["createdBy"], hq["description"]) == (None, "user:1", "for Q2")
    mine = await create(admin_a, "A's everyone", "orders_count >= 0")
    assert mine["owner"] == {"code": "pa"}

    everything = (await gql(SEGMENTS))["segments"]
    assert (names(everything["nodes"]), everything["totalCount"]) == (
        ["HQ loyal", "A's everyone"],
        2,
    )
    assert names((await admin_a(SEGMENTS))["segments"]["nodes"]) == ["A's everyone"]
    assert (await admin_b(SEGMENTS))["segments"] == {"nodes": [], "totalCount": 0}

    # Another partner's segment, or HQ's, answers like a missing one, everywhere.
    for caller, other in ((admin_b, mine), (admin_a, hq)):
        assert (await caller("query($id: ID!) { segment(id: $id) { name } }", {"id": other["id"]}))[
            "segment"
        ] is None
        assert (await caller("query($id: ID!) { node(id: $id) { id } }", {"id": other["id"]}))[
            "node"
        ] is None
        updated = (await caller(UPDATE, {"input": {"id": other["id"], "name": "mine now"}}))[
            "segmentUpdate"
        ]
        assert updated == {
            "segment": None,
            "errors": [{"field": ["input", "id"], "code": "NOT_FOUND"}],
        }
        deleted = (await caller(DELETE, {"input": {"id": other["id"]}}))["segmentDelete"]
        assert deleted["errors"][0]["code"] == "NOT_FOUND"
    missing = encode_id("Segment", 999)
    assert (await admin_a(UPDATE, {"input": {"id": missing, "name": "x"}}))["segmentUpdate"][
        "errors"
    ] == [{"field": ["input", "id"], "code": "NOT_FOUND"}]


async def test_update_and_delete(gql: GraphQLClient, people: People) -> None:
    saved = await create(gql, "Loyal", "orders_count >= 3", description="old")
    changed = (await gql(UPDATE, {"input": {"id": saved["id"], "query": "orders_count >= 5"}}))[
        "segmentUpdate"
    ]
    assert changed["segment"] == {
        "id": saved["id"],
        "name": "Loyal",
        "query": "orders_count >= 5",
        "description": "old",
    }
    refused = (await gql(UPDATE, {"input": {"id": saved["id"], "query": "orders_count >>"}}))[
        "segmentUpdate"
    ]
    assert refused == {
        "segment": None,
        "errors": [{"field": ["input", "query"], "code": "INVALID_QUERY"}],
    }
    cleared = (await gql(UPDATE, {"input": {"id": saved["id"], "description": ""}}))[
        "segmentUpdate"
    ]
    assert cleared["segment"]["description"] is None
    blank = (await gql(UPDATE, {"input": {"id": saved["id"], "name": "  "}}))["segmentUpdate"]
    assert blank["errors"] == [{"field": ["input", "name"], "code": "REQUIRED"}]
    deleted = (await gql(DELETE, {"input": {"id": saved["id"]}}))["segmentDelete"]
    assert deleted == {"deletedSegmentId": saved["id"], "errors": []}
    assert (await gql(SEGMENTS))["segments"]["totalCount"] == 0


# --- members, count, explain ---------------------------------------------------------------


async def test_members_and_count_of_a_partners_segment_whoever_reads_it(
    gql: GraphQLClient, people: People, as_principal: Principal
) -> None:
    admin_a = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_a)
    saved = await create(admin_a, "Everyone", "orders_count >= 0")
    expected = {
        "name": "Everyone",
        "count": 3,
        "members": {
            "nodes": [{"name": n} for n in ("ann", "dan", "fay")],
            "pageInfo": {"hasNextPage": False},
        },
    }
    assert (await admin_a(SEGMENT, {"id": saved["id"]}))["segment"] == expected
    # HQ reading A's segment sees A's recruits too: the segment is A's.
    assert (await gql(SEGMENT, {"id": saved["id"]}))["segment"] == expected


async def test_members_pages_by_customer_id(gql: GraphQLClient, people: People) -> None:
    saved = await create(gql, "Everyone", "created_at < -1d")
    page = """
    query($id: ID!, $after: String) {
      segment(id: $id) { members(first: 2, after: $after) {
        nodes { name } pageInfo { hasNextPage endCursor } totalCount } }
    }"""
    first = (await gql(page, {"id": saved["id"]}))["segment"]["members"]
    assert (names(first["nodes"]), first["totalCount"]) == (["ann", "bob"], 5)
    second = (await gql(page, {"id": saved["id"], "after": first["pageInfo"]["endCursor"]}))[
        "segment"
    ]["members"]
    assert names(second["nodes"]) == ["cat", "dan"]
    third = (await gql(page, {"id": saved["id"], "after": second["pageInfo"]["endCursor"]}))[
        "segment"
    ]["members"]
    assert (names(third["nodes"]), third["pageInfo"]["hasNextPage"]) == (["fay"], False)


async def test_explain_says_which_conditions_hold(gql: GraphQLClient, people: People) -> None:
    saved = await create(
        gql, "Gold, not VIP", "level = 'gold' AND\n  NOT tag = 'vip' AND orders_count >= 2"
    )
    clauses = [
        ("level = 'gold'", 1, 1),
        ("tag = 'vip'", 2, 7),
        ("orders_count >= 2", 2, 23),
    ]

    async def explain(who: str) -> dict[str, Any]:
        found = (await gql(EXPLAIN, {"id": saved["id"], "c": cid(people, who)}))["segment"]
        return found["explain"]

    def expect(matches: bool, customer: str, *held: bool) -> dict[str, Any]:
        return {
            "matches": matches,
            "customer": {"name": customer},
            "clauses": [
                {"text": text, "line": line, "column": column, "matched": ok}
                for (text, line, column), ok in zip(clauses, held, strict=True)
            ],
        }

    assert await explain("fay") == expect(True, "fay", True, False, True)
    assert await explain("ann") == expect(False, "ann", True, True, True)  # a VIP
    assert await explain("cat") == expect(False, "cat", False, False, False)
    # A merged customer's id explains the survivor.
    assert await explain("eve") == expect(False, "ann", True, True, True)


async def test_explain_outside_the_callers_reach_is_null(
    people: People, as_principal: Principal
) -> None:
    admin_a = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_a)
    saved = await create(admin_a, "Everyone", "orders_count >= 0")
    found = (await admin_a(EXPLAIN, {"id": saved["id"], "c": cid(people, "bob")}))["segment"]
    assert found["explain"] is None
    missing = (await admin_a(EXPLAIN, {"id": saved["id"], "c": encode_id("Customer", 999)}))[
        "segment"
    ]
    assert missing["explain"] is None
    own = (await admin_a(EXPLAIN, {"id": saved["id"], "c": cid(people, "dan")}))["segment"]
    assert own["explain"]["matches"] is True


async def test_an_hq_explanation_of_a_partners_segment_counts_the_partner(
    gql: GraphQLClient, people: People, as_principal: Principal
) -> None:
    admin_a = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_a)
    saved = await create(admin_a, "Everyone", "orders_count >= 0")
    found = (await gql(EXPLAIN, {"id": saved["id"], "c": cid(people, "bob")}))["segment"]
    # bob meets the query but is B's recruit: not a member of A's segment.
    assert found["explain"]["matches"] is False
    assert found["explain"]["clauses"][0]["matched"] is True


async def test_members_page_costs_the_same_statements_however_many_members(
    gql: GraphQLClient, db: Database, people: People, count_queries: Any
) -> None:
    saved = await create(gql, "Members", "member = true AND orders_count >= 1")
    query = """
    query($id: ID!) {
      segment(id: $id) {
        count
        members(first: 50) {
          nodes { id name gender tags level { code } membership { since recruitedStore { code } } }
        }
      }
    }"""

    async def run() -> tuple[int, int]:
        with count_queries() as counter:
            found = (await gql(query, {"id": saved["id"]}))["segment"]
        assert found["count"] == len(found["members"]["nodes"])
        return len(found["members"]["nodes"]), counter.count

    few, statements = await run()
    async with db.transaction() as session:
        for n in range(40):
            customer = Customer(
                name=f"extra {n}",
                status=CustomerStatus.ACTIVE,
                member_since=NOW - timedelta(days=n + 1),
                recruited_partner_id=people.partner_a,
                recruited_store_id=people.a1,
                attributes={},
                created_at=NOW,
                updated_at=NOW,
            )
            session.add(customer)
            await session.flush()
            session.add(CustomerTag(customer_id=customer.id, tag=f"t{n}", created_at=NOW))
            session.add(
                CustomerMetrics(
                    customer_id=customer.id,
                    orders_count=1,
                    total_spent=Decimal(10),
                    gross_margin=Decimal(1),
                    avg_order_value=Decimal(10),
                    updated_at=NOW,
                )
            )
    many, statements_many = await run()
    assert (few, many) == (4, 44)
    # The segment; its count; the page; then one batch each for tags, levels and stores.
    assert statements == statements_many == 6
