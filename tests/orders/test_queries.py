"""Reading orders over HTTP: who sees which, filters, the Order fields and their secrets
(cost, pickup code), the pickup queue's index, and orderCreate's payload."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import insert, select, text

from api.auth.principal import Role
from api.catalog.models import SalesChannel
from api.coupons.models import Coupon
from api.orders import queries
from api.orders.models import Fulfillment, Order, OrderStatus
from api.orders.pickup_codes import parse_qr_payload, pickup_secret
from api.pagination import PageRequest, fetch_page
from tests.orders.conftest import (
    HQ,
    NOW,
    caller,
    gid,
    integration,
    line,
    member,
    partner_admin,
    place,
    store_staff,
    token_of,
)

COUNTER = {"channel": SalesChannel.STORE_POS, "fulfillment": Fulfillment.IN_STORE}

IDS = "query($f: OrderFilter) { orders(filter: $f) { totalCount nodes { id } } }"


@pytest.fixture
async def orders(db, shop):
    """o1: ann's pickup at a1 (partner A); o2: HQ's counter sale to bob at b1 (partner B);
    o3: HQ's delivery to cat from nowhere (HQ's own); o4: partner A's sale at a2."""
    o1 = await place(
        db,
        member(shop.ann),
        fulfillment=Fulfillment.PICKUP,
        store_id=shop.a1,
        coupon_codes=[shop.ann_coupon],
        lines=[line("TEA-1", 2), line("TEA-2")],
    )
    o2 = await place(db, HQ, **COUNTER, store_id=shop.b1, customer_id=shop.bob)
    o3 = await place(db, HQ, customer_id=shop.cat, channel=SalesChannel.WEB)
    o4 = await place(db, partner_admin(shop.partner_a), **COUNTER, store_id=shop.a2)
    return [r.order for r in (o1, o2, o3, o4)]


async def test_each_principal_sees_exactly_its_orders(app, issue_token, shop, orders):
    o1, o2, o3, o4 = (gid("Order", o.id) for o in orders)
    expected = {
        HQ: [o1, o2, o3, o4],
        partner_admin(shop.partner_a): [o1, o4],
        integration(shop.partner_a): [o1, o4],
        store_staff(shop.partner_a, shop.a1): [o1],
        store_staff(shop.partner_a, shop.a2): [o4],
        partner_admin(shop.partner_b): [o2],
        member(shop.ann): [o1],
        member(shop.bob): [o2],
        member(shop.cat): [o3],
    }
    for principal, visible in expected.items():
        call = caller(app, token_of(issue_token, principal))
        data = (await call(IDS))["data"]["orders"]
        assert [n["id"] for n in data["nodes"]] == visible, principal.subject
        assert data["totalCount"] == len(visible)
        # Someone else's order answers exactly like one that does not exist.
        for other in {o1, o2, o3, o4} - set(visible):
            query = "query($id: ID!) { order(id: $id) { id } node(id: $id) { id } }"
            seen = await call(query, {"id": other})
            missing = await call(query, {"id": gid("Order", 987654)})
            assert seen == missing
            assert seen["data"] == {"order": None, "node": None}


async def test_filters(app, issue_token, shop, orders):
    o1, o2, o3, o4 = (gid("Order", o.id) for o in orders)
    call = caller(app, token_of(issue_token, HQ))

    async def ids(**f) -> list[str]:
        return [n["id"] for n in (await call(IDS, {"f": f}))["data"]["orders"]["nodes"]]

    assert await ids(status=["PLACED", "READY_FOR_PICKUP"]) == [o1]
    assert await ids(status=["COMPLETED"], storeId=gid("Store", shop.b1)) == [o2]
    assert await ids(channel=["STORE_POS"]) == [o2, o4]
    assert await ids(channel=["WEB", "MINI_PROGRAM"], fulfillment=["DELIVERY"]) == [o3]
    assert await ids(customerId=gid("Customer", shop.bob)) == [o2]
    assert await ids(placedFrom=NOW.isoformat(), placedTo=NOW.isoformat()) == []
    assert await ids(placedFrom=NOW.isoformat()) == [o1, o2, o3, o4]
    reverse = await call("{ orders(reverse: true, first: 2) { nodes { id } } }")
    assert [n["id"] for n in reverse["data"]["orders"]["nodes"]] == [o4, o3]


ORDER = """query($id: ID!) { order(id: $id) {
  channel fulfillment status reportedByPartner takenBy
  subtotal { amount currency } couponDiscount { amount } pointsDiscount { amount }
  total { amount } costTotal { amount } grossMargin { amount } pointsUsed pointsEarned
  pickupCode pickupQr pickupExpiresAt
  customer { name } store { name } partner { code }
  lines { lineNo skuCode quantity unitPrice { amount } subtotal { amount }
          discount { amount } total { amount } refundedQuantity
          sku { code } product { name } }
  coupons { code discount { amount } coupon { id } }
  events { status note actor }
} }"""


async def test_an_order_as_its_member_sees_it(app, issue_token, shop, orders, settings):
    o1 = orders[0]
    body = await caller(app, token_of(issue_token, member(shop.ann)))(
        ORDER, {"id": gid("Order", o1.id)}
    )
    order = body["data"]["order"]
    assert order["subtotal"] == {"amount": "248.00", "currency": "CNY"}
    assert (order["couponDiscount"], order["total"]) == ({"amount": "10.00"}, {"amount": "238.00"})
    # The brand's cost is HQ's; the pickup code the member's.
    assert (order["costTotal"], order["grossMargin"]) == (None, None)
    assert order["pickupCode"] == o1.pickup_code
    assert parse_qr_payload(pickup_secret(settings.key_ring()), order["pickupQr"]) == (
        o1.id,
        o1.pickup_code,
    )
    assert (order["customer"], order["store"], order["partner"]) == (
        {"name": "王小丫"},
        {"name": "Store a1"},
        None,  # a member does not see partners
    )
    assert [(ln["skuCode"], ln["sku"], ln["product"]) for ln in order["lines"]] == [
        ("TEA-1", {"code": "TEA-1"}, {"name": "茶具"}),
        ("TEA-2", {"code": "TEA-2"}, {"name": "茶具"}),
    ]
    assert sum(Decimal(ln["total"]["amount"]) for ln in order["lines"]) == Decimal("238.00")
    assert order["coupons"] == [
        {
            "code": shop.ann_coupon,
            "discount": {"amount": "10.00"},
            "coupon": {"id": gid("Coupon", (await _coupon_id(app, shop)))},
        }
    ]
    # Who acted and their notes are the business's, not the member's.
    assert order["events"] == [{"status": "PLACED", "note": None, "actor": None}]


async def _coupon_id(app, shop) -> int:
    async with app.state.db.read() as session:
        return await session.scalar(select(Coupon.id).where(Coupon.code == shop.ann_coupon))


async def test_staff_never_read_the_pickup_code_and_only_hq_the_cost(
    app, issue_token, shop, orders
):
    o1 = gid("Order", orders[0].id)
    for principal in (store_staff(shop.partner_a, shop.a1), partner_admin(shop.partner_a), HQ):
        order = (await caller(app, token_of(issue_token, principal))(ORDER, {"id": o1}))["data"][
            "order"
        ]
        assert (order["pickupCode"], order["pickupQr"]) == (None, None)
        assert order["pickupExpiresAt"] is not None
        hq = principal is HQ
        assert order["grossMargin"] == ({"amount": "138.00"} if hq else None)
        assert order["costTotal"] == ({"amount": "100.00"} if hq else None)
        # Staff see the coupon's last four characters only.
        code = order["coupons"][0]["code"]
        assert code == shop.ann_coupon if hq else code == "*" * 12 + shop.ann_coupon[-4:]


LIST = """query($n: Int!) { orders(first: $n) { edges { node {
  lines { product { name } sku { code } } customer { name } store { name }
} } } }"""


async def test_a_page_of_orders_costs_the_same_for_5_and_50(db, shop, gql, count_queries):
    for index in range(50):
        await place(
            db,
            HQ,
            **COUNTER,
            store_id=(shop.a1, shop.b1, shop.hq)[index % 3],
            customer_id=(shop.ann, shop.bob, shop.cat)[index % 3],
            lines=[line("TEA-1"), line("TEA-2")],
        )
    with count_queries() as few:
        small = await gql(LIST, {"n": 5})
    with count_queries() as many:
        large = await gql(LIST, {"n": 50})
    assert len(small["orders"]["edges"]) == 5 and len(large["orders"]["edges"]) == 50
    assert all(len(e["node"]["lines"]) == 2 for e in large["orders"]["edges"])
    # The page, lines, SKUs, products, customers and stores: one statement each.
    assert few.count == many.count == 6


async def test_the_pickup_queue_is_read_through_its_index(db, shop):
    """Store staff's queue: their store's open pickups among many orders of their partner's
    (most of them long completed). The statement is the one ``orders`` runs."""
    base = {
        "channel": SalesChannel.STORE_POS,
        "partner_id": shop.partner_a,
        "currency": "CNY",
        "subtotal": Decimal(1),
        "total": Decimal(1),
        "cost_total": Decimal(1),
        "placed_at": NOW,
    }
    rows = [
        {
            **base,
            "store_id": (shop.a1, shop.a2)[i % 2],
            "fulfillment": Fulfillment.IN_STORE,
            "status": OrderStatus.COMPLETED,
        }
        for i in range(2000)
    ] + [
        {**base, "store_id": shop.a1, "fulfillment": Fulfillment.PICKUP, "status": status}
        for status in (OrderStatus.PLACED, OrderStatus.READY_FOR_PICKUP) * 3
    ]
    staff = store_staff(shop.partner_a, shop.a1)
    where = queries.OrderFilter(
        statuses=[OrderStatus.PLACED, OrderStatus.READY_FOR_PICKUP], store_ids=[shop.a1]
    )
    async with db.transaction() as session:
        await session.execute(insert(Order), rows)
        await session.execute(text("ANALYZE"))
    async with db.read() as session:
        queue = await fetch_page(
            session, queries.orders_query(staff, where), queries.ORDER_KEYSET, PageRequest(first=20)
        )
        assert len(queue.items) == 6
        stmt = queries.orders_query(staff, where).order_by(Order.id).limit(21)
        sql = str(
            stmt.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
        )
        explain = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
        plan = " ".join(str(row[-1]) for row in await session.execute(text(explain + sql)))
    # The (store, status, id) index, or on PostgreSQL the partial index of open pickup codes,
    # which holds exactly the open pickups of each store.
    assert "ix_order_store_id_status_id" in plan or "uq_order_open_pickup_code" in plan, plan
    assert "Seq Scan" not in plan and "SCAN customer_order" not in plan, plan


CREATE = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
  order { id status total { amount } store { name } } created errors { field message code }
} }"""


async def test_order_create_over_http(app, issue_token, shop):
    ann = caller(app, token_of(issue_token, member(shop.ann)))
    order_input = {
        "channel": "MINI_PROGRAM",
        "fulfillment": "PICKUP",
        "storeId": gid("Store", shop.a1),
        "lines": [
            {"sku": "TEA-1", "quantity": 1},
            {"skuId": gid("Sku", shop.sku["TEA-2"]), "quantity": 2},
        ],
        "couponCodes": [shop.ann_coupon],
        "pointsToUse": 1000,
        "idempotencyKey": "tap-1",
    }
    first = (await ann(CREATE, {"input": order_input}))["data"]["orderCreate"]
    assert first["errors"] == [] and first["created"]
    assert first["order"]["status"] == "PLACED"
    assert first["order"]["total"] == {"amount": "179.00"}  # 99 + 100 - 10 - 10
    again = (await ann(CREATE, {"input": order_input}))["data"]["orderCreate"]
    assert (again["order"]["id"], again["created"]) == (first["order"]["id"], False)

    refused = (
        await ann(
            CREATE,
            {
                "input": {
                    **order_input,
                    "idempotencyKey": "tap-2",
                    "storeId": gid("Store", shop.hq),
                    "lines": [{"sku": "TEA-1", "quantity": 1}, {"sku": "X", "quantity": 1}],
                }
            },
        )
    )["data"]["orderCreate"]
    assert refused["order"] is None
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("STORE_UNAVAILABLE", ["input", "storeId"])
    ]
    bad_id = (await ann(CREATE, {"input": {**order_input, "storeId": gid("Sku", 1)}}))["data"][
        "orderCreate"
    ]
    assert [(e["code"], e["field"]) for e in bad_id["errors"]] == [
        ("INVALID", ["input", "storeId"])
    ]
    hq = caller(app, token_of(issue_token, HQ))
    walk_in = {
        "channel": "STORE_POS",
        "fulfillment": "IN_STORE",
        "storeId": gid("Store", shop.hq),
        "lines": [{"sku": "TEA-1", "quantity": 1, "unitPrice": "95.50"}],
        "customer": {"identities": [{"kind": "PHONE", "value": "13912345678"}], "name": "新客"},
    }
    sold = (
        await hq(
            "mutation($input: OrderCreateInput!) { orderCreate(input: $input) { order { "
            "customer { name } total { amount } pointsEarned } errors { code } } }",
            {"input": walk_in},
        )
    )["data"]["orderCreate"]
    assert sold == {
        "order": {"customer": {"name": "新客"}, "total": {"amount": "95.50"}, "pointsEarned": 95},
        "errors": [],
    }
    marketer = caller(app, issue_token(Role.MARKETER))
    body = await marketer(CREATE, {"input": order_input})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
