"""Purchasing over HTTP: the partner story end to end, payload errors with their codes,
another partner's ids, and the statement count of a page of orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.auth.principal import Role
from api.graphql.ids import encode_id
from tests.inventory.conftest import level, stock

PRICE_LIST = """mutation($input: PriceListCreateInput!) { priceListCreate(input: $input) {
  priceList { id name items { unitPrice { amount } packSize breaks { minQuantity } } }
  errors { code field message } } }"""
CREDIT = """mutation($p: ID!, $limit: Decimal!) {
  partnerCreditSet(input: {partnerId: $p, limit: $limit}) {
  credit { limit { amount } used { amount } available { amount } } errors { code field } } }"""
CREATE = """mutation($input: PurchaseOrderCreateInput!) { purchaseOrderCreate(input: $input) {
  purchaseOrder { id status total { amount currency } lines { quantity unitPrice { amount }
  lineTotal { amount } discountBasisPoints sku { code } } }
  created errors { code field message } } }"""
STEP = """mutation($id: ID!) { %s(input: {id: $id}) {
  purchaseOrder { id status } errors { code message } } }"""
SHIP = """mutation($id: ID!, $wh: ID!) { purchaseOrderShip(input: {id: $id, warehouseId: $wh,
  trackingNumber: "SF1001"}) { purchaseOrder { status trackingNumber } errors { code } } }"""


def gid(type_name: str, pk: int) -> str:
    return encode_id(type_name, pk)


class Partner:
    """A partner admin's HTTP client."""

    def __init__(self, app, token: str) -> None:
        self.app, self.headers = app, {"Authorization": f"Bearer {token}"}

    async def raw(self, query: str, variables: dict | None = None) -> dict:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t", headers=self.headers
        ) as http:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
        return response.json()

    async def __call__(self, query: str, variables: dict | None = None) -> dict:
        body = await self.raw(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture
async def shop(app, issue_token, gql, world):
    """Tier A: tea 19.99 (≥ 50: −3%) in packs of 10; A has 2000.00 of credit."""
    added = await gql(
        PRICE_LIST,
        {
            "input": {
                "name": "A 级经销价",
                "tier": "A",
                "validFrom": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                "items": [
                    {
                        "skuId": gid("Sku", world.tea),
                        "unitPrice": "19.99",
                        "packSize": 10,
                        "breaks": [{"minQuantity": 50, "discountBasisPoints": 300}],
                    }
                ],
            }
        },
    )
    assert added["priceListCreate"]["errors"] == []
    await gql(CREDIT, {"p": gid("Partner", world.a), "limit": "2000"})
    a = Partner(app, issue_token(Role.PARTNER_ADMIN, partner_id=world.a, subject="user:a"))
    b = Partner(app, issue_token(Role.PARTNER_ADMIN, partner_id=world.b, subject="user:b"))
    return world, a, b


def order_input(world, quantity: int, key: str, *, submit: bool = True) -> dict:
    return {
        "input": {
            "storeId": gid("Store", world.a1),
            "lines": [{"skuId": gid("Sku", world.tea), "quantity": quantity}],
            "idempotencyKey": key,
            "submit": submit,
        }
    }


async def test_the_partner_story_end_to_end(db, gql, shop):
    world, a, _ = shop
    await stock(db, world.wh, world.tea, 100)
    quote = await a(
        "query($sku: ID!) { purchasePrice(skuId: $sku, quantity: 50) { unitPrice { amount } "
        "lineTotal { amount } basis priceListName breakMinQuantity explanation } }",
        {"sku": gid("Sku", world.tea)},
    )
    # 19.99 × 0.97 = 19.3903 → 19.39 (half-up to the cent); × 50 = 969.50
    assert quote["purchasePrice"] | {"explanation": None} == {
        "unitPrice": {"amount": "19.39"},
        "lineTotal": {"amount": "969.50"},
        "basis": "TIER",
        "priceListName": "A 级经销价",
        "breakMinQuantity": 50,
        "explanation": None,
    }
    assert "3% off from 50 units" in quote["purchasePrice"]["explanation"]
    created = (await a(CREATE, order_input(world, 50, "erp-1")))["purchaseOrderCreate"]
    order = created["purchaseOrder"]
    assert (created["errors"], order["status"], order["total"]) == (
        [],
        "SUBMITTED",
        {"amount": "969.50", "currency": "CNY"},
    )
    assert order["lines"] == [
        {
            "quantity": 50,
            "unitPrice": {"amount": "19.39"},
            "lineTotal": {"amount": "969.50"},
            "discountBasisPoints": 300,
            "sku": {"code": "PTEA-0"},
        }
    ]
    credit = "{ partnerCredit { used { amount } available { amount } } }"
    assert (await a(credit))["partnerCredit"] == {
        "used": {"amount": "969.50"},
        "available": {"amount": "1030.50"},
    }
    approved = await gql(STEP % "purchaseOrderApprove", {"id": order["id"]})
    assert approved["purchaseOrderApprove"]["purchaseOrder"]["status"] == "APPROVED"
    shipped = await gql(SHIP, {"id": order["id"], "wh": gid("Store", world.wh)})
    assert shipped["purchaseOrderShip"]["purchaseOrder"] == {
        "status": "SHIPPED",
        "trackingNumber": "SF1001",
    }
    received = await a(STEP % "purchaseOrderReceive", {"id": order["id"]})
    assert received["purchaseOrderReceive"]["purchaseOrder"]["status"] == "RECEIVED"
    assert await level(db, world.a1, world.tea) == (50, 0, 0)
    assert await level(db, world.wh, world.tea) == (50, 0, 0)
    paid = await gql(STEP % "purchaseOrderPaymentRecord", {"id": order["id"]})
    assert paid["purchaseOrderPaymentRecord"]["purchaseOrder"]["status"] == "CLOSED"
    assert (await a(credit))["partnerCredit"]["used"] == {"amount": "0.00"}


async def test_refusals_come_back_as_coded_payload_errors(gql, shop):
    world, a, _ = shop
    over = (await a(CREATE, order_input(world, 110, "big")))["purchaseOrderCreate"]
    # 110 × 19.39 = 2132.90 > 2000.00: nothing is created.
    assert over["purchaseOrder"] is None
    (error,) = over["errors"]
    assert (
        error["code"] == "CREDIT_EXCEEDED"
        and "available credit of 200000 cents" in (error["message"])
    )
    assert (await a("{ purchaseOrders { totalCount } }"))["purchaseOrders"]["totalCount"] == 0
    packs = (await a(CREATE, order_input(world, 15, "odd")))["purchaseOrderCreate"]["errors"]
    assert [(e["code"], e["field"]) for e in packs] == [
        ("WRONG_PACK_SIZE", ["input", "lines", "0", "quantity"])
    ]
    cents = await gql(CREDIT, {"p": gid("Partner", world.a), "limit": "1.005"})
    assert cents["partnerCreditSet"]["errors"] == [{"code": "INVALID", "field": ["input", "limit"]}]
    # A partner cannot raise its own line: the scope is HQ's.
    refused = await a.raw(CREDIT, {"p": gid("Partner", world.a), "limit": "9999"})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_another_partners_order_is_not_found(gql, shop):
    world, a, b = shop
    order = (await a(CREATE, order_input(world, 10, "mine", submit=False)))["purchaseOrderCreate"]
    order_id = order["purchaseOrder"]["id"]
    seen = await b(
        "query($id: ID!, $a: ID!, $sku: ID!) { purchaseOrder(id: $id) { id } node(id: $id) { id } "
        "purchaseOrders { totalCount } partnerCredit(partnerId: $a) { used { amount } } "
        "purchasePrice(skuId: $sku, quantity: 10, partnerId: $a) { unitPrice { amount } } }",
        {"id": order_id, "a": gid("Partner", world.a), "sku": gid("Sku", world.tea)},
    )
    assert seen == {
        "purchaseOrder": None,
        "node": None,
        "purchaseOrders": {"totalCount": 0},
        "partnerCredit": None,
        "purchasePrice": None,
    }
    for mutation in ("purchaseOrderSubmit", "purchaseOrderCancel", "purchaseOrderReceive"):
        answer = (await b(STEP % mutation, {"id": order_id}))[mutation]
        assert [e["code"] for e in answer["errors"]] == ["NOT_FOUND"]
    # B orders for A's store: not a location of B's.
    answer = (await b(CREATE, order_input(world, 10, "x")))["purchaseOrderCreate"]
    assert [e["code"] for e in answer["errors"]] == ["NOT_FOUND"]


async def test_a_page_of_orders_costs_the_same_statements_whatever_its_size(
    gql, shop, count_queries
):
    world, a, _ = shop
    page = "{ purchaseOrders(first: 50) { nodes { status lines { quantity sku { code } } } } }"
    for i in range(3):
        await a(CREATE, order_input(world, 10, f"k{i}", submit=False))
    with count_queries() as few:
        assert len((await gql(page))["purchaseOrders"]["nodes"]) == 3
    for i in range(3, 12):
        await a(CREATE, order_input(world, 10, f"k{i}", submit=False))
    with count_queries() as many:
        assert len((await gql(page))["purchaseOrders"]["nodes"]) == 12
    # The page, the lines of every order, the SKUs of every line.
    assert few.count == many.count == 3
