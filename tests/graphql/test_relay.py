"""Relay: opaque ids, node/nodes, and keyset connections walked both ways."""

from __future__ import annotations

import base64

from tests.factories import create_partner, create_store

PAGE = """
query($first: Int, $after: String, $last: Int, $before: String, $sort: PartnerSortKeys,
      $reverse: Boolean) {
  partners(first: $first, after: $after, last: $last, before: $before, sortKey: $sort,
           reverse: $reverse) {
    totalCount
    edges { cursor node { code } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def codes(connection: dict) -> list[str]:
    return [edge["node"]["code"] for edge in connection["edges"]]


async def seven_partners(gql) -> list[dict]:
    names = ["Gamma", "alpha", "Delta", "beta", "Epsilon", "Zeta", "Eta"]
    return [await create_partner(gql, f"P{i}", name=name) for i, name in enumerate(names, 1)]


async def test_ids_are_opaque_and_node_finds_every_type(gql):
    partner = await create_partner(gql, "P1")
    store = await create_store(gql, "S1", partner["id"])
    assert "Partner" not in partner["id"]  # opaque, not "Partner:1"
    data = await gql(
        """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
             ... on Partner { code } ... on Store { code } } }""",
        {"ids": [store["id"], partner["id"]]},
    )
    assert data["nodes"] == [
        {"__typename": "Store", "id": store["id"], "code": "S1"},
        {"__typename": "Partner", "id": partner["id"], "code": "P1"},
    ]


async def test_a_missing_object_is_null(gql):
    missing = base64.urlsafe_b64encode(b"Partner:999").decode().rstrip("=")
    data = await gql(
        "query($id: ID!) { node(id: $id) { id } partner(id: $id) { id } }", {"id": missing}
    )
    assert data == {"node": None, "partner": None}


async def test_nodes_keeps_order_and_nulls(gql):
    a = await create_partner(gql, "PA")
    missing = base64.urlsafe_b64encode(b"Store:42").decode().rstrip("=")
    data = await gql(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [missing, a["id"], a["id"]]}
    )
    assert data["nodes"] == [None, {"id": a["id"]}, {"id": a["id"]}]


async def test_walk_forward_with_first_and_after(gql):
    await seven_partners(gql)
    first = (await gql(PAGE, {"first": 3}))["partners"]
    assert codes(first) == ["P1", "P2", "P3"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    assert first["totalCount"] == 7
    second = (await gql(PAGE, {"first": 3, "after": first["pageInfo"]["endCursor"]}))["partners"]
    assert codes(second) == ["P4", "P5", "P6"]
    assert second["pageInfo"]["hasPreviousPage"] is True
    third = (await gql(PAGE, {"first": 3, "after": second["pageInfo"]["endCursor"]}))["partners"]
    assert codes(third) == ["P7"]
    assert third["pageInfo"]["hasNextPage"] is False


async def test_walk_backward_with_last_and_before(gql):
    await seven_partners(gql)
    tail = (await gql(PAGE, {"last": 3}))["partners"]
    assert codes(tail) == ["P5", "P6", "P7"]
    assert tail["pageInfo"]["hasPreviousPage"] is True
    assert tail["pageInfo"]["hasNextPage"] is False
    before = (await gql(PAGE, {"last": 3, "before": tail["pageInfo"]["startCursor"]}))["partners"]
    assert codes(before) == ["P2", "P3", "P4"]
    assert before["pageInfo"]["hasNextPage"] is True
    head = (await gql(PAGE, {"last": 3, "before": before["pageInfo"]["startCursor"]}))["partners"]
    assert codes(head) == ["P1"]
    assert head["pageInfo"]["hasPreviousPage"] is False


async def test_sort_by_name_and_reverse(gql):
    await seven_partners(gql)
    by_name = (await gql(PAGE, {"first": 4, "sort": "NAME"}))["partners"]
    # Codepoint order on both engines: capitals sort before lowercase.
    assert codes(by_name) == ["P3", "P5", "P7", "P1"]  # Delta, Epsilon, Eta, Gamma
    rest = (
        await gql(PAGE, {"first": 4, "sort": "NAME", "after": by_name["pageInfo"]["endCursor"]})
    )["partners"]
    assert codes(rest) == ["P6", "P2", "P4"]  # Zeta, alpha, beta
    reverse = (await gql(PAGE, {"first": 2, "reverse": True}))["partners"]
    assert codes(reverse) == ["P7", "P6"]
    after = (
        await gql(PAGE, {"first": 2, "reverse": True, "after": reverse["pageInfo"]["endCursor"]})
    )["partners"]
    assert codes(after) == ["P5", "P4"]


async def test_a_cursor_of_another_sort_order_is_refused(gql):
    await seven_partners(gql)
    by_name = (await gql(PAGE, {"first": 1, "sort": "NAME"}))["partners"]
    body = await gql.raw(PAGE, {"first": 1, "after": by_name["pageInfo"]["endCursor"]})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_first_zero_and_the_default_page(gql):
    await seven_partners(gql)
    empty = (await gql(PAGE, {"first": 0}))["partners"]
    assert empty["edges"] == [] and empty["pageInfo"]["hasNextPage"] is True
    default = (await gql(PAGE, {}))["partners"]
    assert len(default["edges"]) == 7  # default page size is 20


async def test_nested_connections_page_per_parent(gql):
    a = await create_partner(gql, "PA")
    b = await create_partner(gql, "PB")
    for i in range(4):
        await create_store(gql, f"SA{i}", a["id"])
    await create_store(gql, "SB0", b["id"])
    query = """query($after: String) { partners { nodes { code stores(first: 2, after: $after) {
        totalCount nodes { code } pageInfo { hasNextPage endCursor } } } } }"""
    data = await gql(query)
    pa, pb = data["partners"]["nodes"]
    assert [s["code"] for s in pa["stores"]["nodes"]] == ["SA0", "SA1"]
    assert pa["stores"]["pageInfo"]["hasNextPage"] is True
    assert pa["stores"]["totalCount"] == 4
    assert [s["code"] for s in pb["stores"]["nodes"]] == ["SB0"]
    assert pb["stores"]["pageInfo"]["hasNextPage"] is False
    cursor = pa["stores"]["pageInfo"]["endCursor"]
    nxt = (await gql(query, {"after": cursor}))["partners"]["nodes"][0]["stores"]
    assert [s["code"] for s in nxt["nodes"]] == ["SA2", "SA3"]
    assert nxt["pageInfo"]["hasNextPage"] is False


async def test_nodes_refuses_more_ids_than_a_page(gql):
    body = await gql.raw("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ["x"] * 101})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
