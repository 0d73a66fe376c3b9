"""Reading touchpoints: ``touchpoints`` (filters, scope, pages) and the ``Touchpoint`` node."""

from __future__ import annotations

from api.growth.models import TouchpointStep
from tests.growth.conftest import BASE, HOUR, add_touches
from tests.orders.conftest import (
    HQ,
    caller,
    gid,
    member,
    partner_admin,
    place,
    store_staff,
    token_of,
)

LIST = """query($filter: TouchpointFilter, $first: Int, $after: String, $reverse: Boolean) {
  touchpoints(filter: $filter, first: $first, after: $after, reverse: $reverse) {
    nodes { id step eventId campaignId customer { id } store { id } partner { id } order { id } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}"""

NODE = """query($id: ID!) { node(id: $id) { ... on Touchpoint { id step } } }"""


async def touches(db, shop) -> None:
    """ann: a QR scan (card-1) at a1 (partner A) at BASE+1h, WeCom at b1 (partner B) at +2h;
    bob: a QR scan (card-2) of HQ (no partner) at +3h."""
    await add_touches(
        db,
        [
            {
                "customer_id": shop.ann,
                "step": TouchpointStep.QR_SCAN,
                "at": BASE + HOUR,
                "campaign_id": "card-1",
                "store_id": shop.a1,
                "partner_id": shop.partner_a,
            },
            {
                "customer_id": shop.ann,
                "step": TouchpointStep.WECOM_ADDED,
                "at": BASE + 2 * HOUR,
                "store_id": shop.b1,
                "partner_id": shop.partner_b,
            },
            {
                "customer_id": shop.bob,
                "step": TouchpointStep.QR_SCAN,
                "at": BASE + 3 * HOUR,
                "campaign_id": "card-2",
            },
        ],
    )


def events(body: dict) -> list[str]:
    return [n["eventId"] for n in body["touchpoints"]["nodes"]]


async def test_hq_reads_every_touchpoint_with_filters(gql, db, shop):
    await touches(db, shop)
    assert events(await gql(LIST)) == ["t0", "t1", "t2"]
    assert events(await gql(LIST, {"reverse": True})) == ["t2", "t1", "t0"]
    for filter, expected in (
        ({"customerId": gid("Customer", shop.ann)}, ["t0", "t1"]),
        ({"step": ["QR_SCAN"]}, ["t0", "t2"]),
        ({"campaignId": "card-2"}, ["t2"]),
        ({"storeId": gid("Store", shop.b1)}, ["t1"]),
        ({"from": (BASE + 2 * HOUR).isoformat()}, ["t1", "t2"]),
        ({"to": (BASE + 2 * HOUR).isoformat()}, ["t0"]),
    ):
        assert events(await gql(LIST, {"filter": filter})) == expected, filter
    page = (await gql(LIST, {"first": 2}))["touchpoints"]
    assert page["pageInfo"]["hasNextPage"] and page["totalCount"] == 3
    rest = await gql(LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]})
    assert events(rest) == ["t2"]


async def test_a_partner_reads_its_own_partners_touchpoints(app, db, shop, issue_token):
    """Partner A sees the a1 scan, not ann's WeCom add at B's store, though ann is its member;
    the customer shows (ann is A's), HQ's scan of bob does not."""
    await touches(db, shop)
    call = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    body = (await call(LIST))["data"]
    assert events(body) == ["t0"]
    (node,) = body["touchpoints"]["nodes"]
    assert node["customer"] == {"id": gid("Customer", shop.ann)}
    assert node["store"] == {"id": gid("Store", shop.a1)}
    assert body["touchpoints"]["totalCount"] == 1

    b = caller(app, token_of(issue_token, partner_admin(shop.partner_b)))
    (node,) = (await b(LIST))["data"]["touchpoints"]["nodes"]
    assert node["eventId"] == "t1" and node["customer"] is None  # ann is not B's


async def test_the_node_of_another_partner_is_null(app, db, gql, shop, issue_token):
    await touches(db, shop)
    ids = [n["id"] for n in (await gql(LIST))["touchpoints"]["nodes"]]
    call = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    found = [(await call(NODE, {"id": i}))["data"]["node"] for i in ids]
    assert found == [{"id": ids[0], "step": "QR_SCAN"}, None, None]
    assert (await gql(NODE, {"id": ids[2]}))["node"] == {"id": ids[2], "step": "QR_SCAN"}


async def test_members_read_no_touchpoints(app, db, shop, issue_token):
    await touches(db, shop)
    call = caller(app, token_of(issue_token, member(shop.ann)))
    body = await call(LIST)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    ids = [gid("Touchpoint", i) for i in (1, 2, 3)]
    assert [(await call(NODE, {"id": i}))["data"]["node"] for i in ids] == [None] * 3


async def test_store_staff_read_no_touchpoints_by_node_either(app, db, gql, shop, issue_token):
    """Store staff record touchpoints (growth:write) but do not read them (analytics:read):
    the a1 scan, their own store's, is null by node as the connection refuses them."""
    await touches(db, shop)
    a1_scan = (await gql(LIST))["touchpoints"]["nodes"][0]["id"]
    call = caller(app, token_of(issue_token, store_staff(shop.partner_a, shop.a1)))
    assert (await call(LIST))["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await call(NODE, {"id": a1_scan}))["data"]["node"] is None
    # The same staff's partner admin reads it.
    admin = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    assert (await admin(NODE, {"id": a1_scan}))["data"]["node"]["id"] == a1_scan


async def test_a_page_costs_the_same_statements_for_3_and_12_touchpoints(
    gql, db, shop, count_queries
):
    """The page, then one statement each for customers, stores, partners and orders."""

    async def page_with_orders(count: int) -> int:
        for _ in range(count):
            await place(db, HQ, customer_id=shop.ann, store_id=shop.a1)
        with count_queries() as counter:
            body = await gql(LIST, {"first": 50})
        assert len(body["touchpoints"]["nodes"]) == total[0] + count
        total[0] += count
        assert all(n["order"] and n["customer"] for n in body["touchpoints"]["nodes"])
        return counter.count

    total = [0]
    few = await page_with_orders(3)
    many = await page_with_orders(9)
    assert few == many == 6  # the page, its count, customers, stores, partners, orders
