"""The omnichannel story end to end, against the app under a real server: a member orders for
pickup with a coupon and points over HTTP, the store marks it ready and the member hears of
it over a real websocket, the store hands it over against the code, the points arrive after
the return window; a refund and an unpicked order's expiry reach the member the same way.

The server and the websocket client are the subscription tests' (``tests/subscriptions``);
the shop is the orders tests' (coupons, points and an earning rule included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import select

from api.app import create_app
from api.auth.principal import Role
from api.events import customer_orders_channel
from api.graphql.ids import decode_id, encode_id
from api.loyalty import balances as loyalty_balances
from api.orders.lifecycle import expiry
from api.outbox.models import OutboxMessage
from tests.orders.conftest import DAY, NOW, POINTS, STOCK, gid, lines_of, stock
from tests.orders.test_lifecycle import WIRING, books_balance
from tests.subscriptions.conftest import Server, serve, watched_cache

CREATE = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
  order { id status pickupCode total { amount } couponDiscount { amount } pointsUsed }
  errors { code field message } } }"""
MARK_READY = """mutation($id: ID!) { orderMarkReady(input: {orderId: $id}) {
  order { status } errors { code } } }"""
PICKUP = """mutation($code: String!) { orderPickup(input: {code: $code}) {
  order { status pointsEarned } errors { code } } }"""
REFUND = """mutation($input: OrderRefundInput!) { orderRefund(input: $input) {
  order { status refundedAmount { amount } } refund { amount { amount } pointsReversed }
  errors { code } } }"""
UPDATES = """subscription { orderUpdates { id status } }"""


@pytest_asyncio.fixture(params=["memory", "redis"])
async def server(request, db, settings) -> AsyncIterator[Server]:
    async with watched_cache(request.param) as cache:
        app = create_app(settings, db=db, cache=cache)
        try:
            async with serve(app) as address:
                yield Server(address, app, settings, cache)
        finally:
            db.publisher = None  # the shared test database must not publish to a closed cache


async def ok(server: Server, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    (result,) = (await server.graphql(token, query, variables)).values()
    assert result["errors"] == [], result["errors"]
    return result


def tokens(server: Server, shop: Any) -> tuple[str, str]:
    member = server.token(Role.MEMBER, customer_id=shop.ann, subject=f"customer:{shop.ann}")
    staff = server.token(
        Role.STORE_STAFF, partner_id=shop.partner_a, store_id=shop.a1, subject="user:staff-a1"
    )
    return member, staff


def pickup_at_a1(shop: Any, **extra: Any) -> dict[str, Any]:
    return {
        "input": {
            "channel": "MINI_PROGRAM",
            "fulfillment": "PICKUP",
            "storeId": gid("Store", shop.a1),
            "lines": [{"sku": "TEA-1", "quantity": 2}],
            **extra,
        }
    }


async def test_order_ready_notice_pickup_points_and_a_refund(db, shop, server):
    member, staff = tokens(server, shop)
    async with server.signed_in(member) as ws:
        following = await ws.subscribe(UPDATES)
        await server.cache.until_subscribers(customer_orders_channel(shop.ann))

        placed = await ok(
            server,
            member,
            CREATE,
            pickup_at_a1(shop, couponCodes=[shop.ann_coupon], pointsToUse=1000),
        )
        order = placed["order"]
        assert (order["status"], order["total"], order["couponDiscount"], order["pointsUsed"]) == (
            "PLACED",
            {"amount": "178.00"},
            {"amount": "10.00"},
            1000,
        )
        assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 2)
        assert await ws.next(following) == {"orderUpdates": {"id": order["id"], "status": "PLACED"}}

        await ok(server, staff, MARK_READY, {"id": order["id"]})
        ready = await ws.next(following)
        assert ready == {"orderUpdates": {"id": order["id"], "status": "READY_FOR_PICKUP"}}
        async with db.read() as session:
            notice = (await session.scalars(select(OutboxMessage))).one()
        assert (notice.topic, notice.recipient) == (
            "order.ready_for_pickup",
            f"customer:{shop.ann}",
        )

        picked = await ok(server, staff, PICKUP, {"code": order["pickupCode"]})
        assert picked["order"] == {"status": "COMPLETED", "pointsEarned": 178}
        assert (await ws.next(following))["orderUpdates"]["status"] == "COMPLETED"
        assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 2, 0)

        # The points are pending for the return window, then spendable.
        async with db.read() as session:
            now = (await loyalty_balances.balances_of(session, [shop.ann], NOW))[shop.ann]
            later = (await loyalty_balances.balances_of(session, [shop.ann], NOW + 8 * DAY))[
                shop.ann
            ]
        assert (now.balance, now.pending) == (POINTS - 1000, 178)
        assert (later.balance, later.pending) == (POINTS - 1000 + 178, 0)

        (tea,) = await lines_of(db, decode_id(order["id"])[1])
        refund = {
            "orderId": order["id"],
            "reason": "a cup arrived chipped",
            "idempotencyKey": "ticket-1",
            "lines": [{"lineId": encode_id("OrderLine", tea.id), "quantity": 1}],
        }
        refunded = await ok(server, staff, REFUND, {"input": refund})
        assert refunded["order"] == {
            "status": "PARTIALLY_REFUNDED",
            "refundedAmount": {"amount": "89.00"},
        }
        assert refunded["refund"] == {"amount": {"amount": "89.00"}, "pointsReversed": 89}
        assert (await ws.next(following))["orderUpdates"]["status"] == "PARTIALLY_REFUNDED"
        await ws.nothing()
    assert await books_balance(db)


async def test_an_unpicked_order_expires_and_the_member_hears_of_it(db, shop, server):
    member, _ = tokens(server, shop)
    async with server.signed_in(member) as ws:
        following = await ws.subscribe(UPDATES)
        await server.cache.until_subscribers(customer_orders_channel(shop.ann))
        placed = await ok(server, member, CREATE, pickup_at_a1(shop, pointsToUse=1000))
        order = placed["order"]
        assert (await ws.next(following))["orderUpdates"]["status"] == "PLACED"
        run = await expiry.expire_pickups(db, now=NOW + 4 * DAY, wiring=WIRING)
        assert run.expired == 1
        expired = await ws.next(following)
        assert expired == {"orderUpdates": {"id": order["id"], "status": "EXPIRED"}}
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)
    async with db.read() as session:
        back = (await loyalty_balances.balances_of(session, [shop.ann], NOW))[shop.ann]
    assert back.balance == POINTS
