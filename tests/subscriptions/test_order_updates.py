"""``orderUpdates`` over a real websocket: an order's status changes reach its member, its
store's staff, its partner and HQ, and nobody else; each reads only what it may."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import select

from api import events
from api.auth.models import AuditEvent
from api.auth.principal import Role
from api.db import count_statements
from api.graphql.ids import encode_id
from tests.subscriptions.conftest import ORDER_CREATE, WAIT, ok, pk

MARK_READY = """mutation($input: OrderMarkReadyInput!) {
  orderMarkReady(input: $input) { order { status } errors { code message } } }"""
ORDER_UPDATES = """subscription($order: ID, $store: ID) {
  orderUpdates(orderId: $order, storeId: $store) {
    id status pickupCode costTotal { amount } store { code } customer { id }
    lines { quantity sku { code } }
  }
}"""


async def place_pickup(server, shop, member: str, store: str) -> str:
    """The member places a mini-program order for pickup at ``store``; its global id."""
    values = {
        "channel": "MINI_PROGRAM",
        "fulfillment": "PICKUP",
        "storeId": store,
        "lines": [{"skuId": shop.sku, "quantity": 1}],
    }
    payload = await ok(server, shop.member(server, member), ORDER_CREATE, values)
    return payload["order"]["id"]


async def mark_ready(server, shop, order: str) -> None:
    """The store's staff make the order ready over HTTP: a status change."""
    staff = shop.staff(server, shop.partner_a, shop.a1)
    await ok(server, staff, MARK_READY, {"orderId": order})


async def test_a_status_change_reaches_who_may_see_the_order_and_nobody_else(server, shop):
    followers: dict[str, tuple[str, dict[str, Any]]] = {
        "ann": (shop.member(server, shop.ann), {}),  # her own orders
        "a1 staff": (shop.staff(server, shop.partner_a, shop.a1), {}),  # their store's
        "partner A": (shop.admin(server, shop.partner_a), {"store": shop.a1}),
        "hq": (shop.hq(server), {"store": shop.a1}),
        "bob": (shop.member(server, shop.bob), {}),
        "partner B": (shop.admin(server, shop.partner_b), {"store": shop.b1}),
        "a2 staff": (shop.staff(server, shop.partner_a, shop.a2), {}),
    }
    async with contextlib.AsyncExitStack() as stack:
        following = {}
        for who, (token, variables) in followers.items():
            ws = await stack.enter_async_context(server.signed_in(token))
            following[who] = (ws, await ws.subscribe(ORDER_UPDATES, variables))
        for channel, count in [
            (events.customer_orders_channel(pk(shop.ann)), 1),
            (events.customer_orders_channel(pk(shop.bob)), 1),
            (events.store_orders_channel(pk(shop.a1)), 3),
            (events.store_orders_channel(pk(shop.a2)), 1),
            (events.store_orders_channel(pk(shop.b1)), 1),
        ]:
            await server.cache.until_subscribers(channel, count)

        order = await place_pickup(server, shop, shop.ann, shop.a1)
        placed = {
            who: await following[who][0].next(following[who][1])
            for who in followers
            if who in ("ann", "a1 staff", "partner A", "hq")
        }
        await mark_ready(server, shop, order)
        ready = {who: await following[who][0].next(following[who][1]) for who in placed}
        # The others' first message is a later order of their own: a1's, published before,
        # did not reach them (a channel delivers in order).
        at_b1 = await place_pickup(server, shop, shop.bob, shop.b1)
        at_a2 = await place_pickup(server, shop, shop.bob, shop.a2)
        for who, first in (("bob", at_b1), ("partner B", at_b1), ("a2 staff", at_a2)):
            ws, operation = following[who]
            assert (await ws.next(operation))["orderUpdates"]["id"] == first

    def seen(message: dict[str, Any]) -> dict[str, Any]:
        return message["orderUpdates"]

    code = seen(placed["ann"])["pickupCode"]
    assert code is not None and len(code) == 6 and code.isdigit()
    common = {
        "id": order,
        "store": {"code": "A1"},
        "customer": {"id": shop.ann},
        "lines": [{"quantity": 1, "sku": {"code": "TEA-1"}}],
    }
    # The member sees her pickup code (nobody else does); only HQ sees the cost.
    assert seen(placed["ann"]) == {
        **common,
        "status": "PLACED",
        "pickupCode": code,
        "costTotal": None,
    }
    for who in ("a1 staff", "partner A"):
        assert seen(placed[who]) == {
            **common,
            "status": "PLACED",
            "pickupCode": None,
            "costTotal": None,
        }
    assert seen(placed["hq"]) == {
        **common,
        "status": "PLACED",
        "pickupCode": None,
        "costTotal": {"amount": "40.00"},
    }
    assert {who: seen(message)["status"] for who, message in ready.items()} == {
        "ann": "READY_FOR_PICKUP",
        "a1 staff": "READY_FOR_PICKUP",
        "partner A": "READY_FOR_PICKUP",
        "hq": "READY_FOR_PICKUP",
    }
    assert seen(ready["ann"])["pickupCode"] == code


async def test_following_one_order(server, shop):
    first = await place_pickup(server, shop, shop.ann, shop.a1)
    second = await place_pickup(server, shop, shop.ann, shop.a1)
    async with (
        server.signed_in(shop.member(server, shop.ann)) as ann,
        server.signed_in(shop.staff(server, shop.partner_a, shop.a1)) as staff,
    ):
        ann_op = await ann.subscribe(ORDER_UPDATES, {"order": second})
        staff_op = await staff.subscribe(ORDER_UPDATES, {"order": second, "store": shop.a1})
        await server.cache.until_subscribers(events.customer_orders_channel(pk(shop.ann)))
        await server.cache.until_subscribers(events.store_orders_channel(pk(shop.a1)))
        await mark_ready(server, shop, first)  # another order: not followed
        await mark_ready(server, shop, second)
        assert (await ann.next(ann_op))["orderUpdates"]["id"] == second
        assert (await staff.next(staff_op))["orderUpdates"]["id"] == second
        await ann.nothing()
        await staff.nothing()


@pytest.mark.parametrize(
    ("who", "variables"),
    [
        ("bob", {"order": "ann's"}),  # another member's order
        ("partner B", {"order": "ann's"}),  # another partner's order
        ("a2 staff", {"order": "ann's"}),  # another store's order
        ("partner B", {"order": "ann's", "store": "b1"}),
        ("partner A", {"order": "ann's", "store": "a2"}),  # an order of another store
        ("partner B", {"store": "a1"}),  # another partner's store
        ("a2 staff", {"store": "a1"}),
        ("ann", {"store": "a1"}),  # members follow their own orders, never a store's
    ],
)
async def test_what_one_may_not_see_is_refused_like_what_does_not_exist(
    server, shop, who, variables
):
    order = await place_pickup(server, shop, shop.ann, shop.a1)
    token = {
        "bob": shop.member(server, shop.bob),
        "ann": shop.member(server, shop.ann),
        "partner A": shop.admin(server, shop.partner_a),
        "partner B": shop.admin(server, shop.partner_b),
        "a2 staff": shop.staff(server, shop.partner_a, shop.a2),
    }[who]
    stores = {"a1": shop.a1, "a2": shop.a2, "b1": shop.b1}
    named = {key: order if value == "ann's" else stores[value] for key, value in variables.items()}
    missing = {key: encode_id("Order" if key == "order" else "Store", 987654) for key in variables}
    async with server.signed_in(token) as ws:
        refused = await ws.error(await ws.subscribe(ORDER_UPDATES, named))
        absent = await ws.error(await ws.subscribe(ORDER_UPDATES, missing))
    assert refused == absent
    kind = "Order" if "order" in variables else "Store"
    assert [(e["message"], e["extensions"]) for e in refused] == [
        (f"No {kind} with this ID to follow.", {"code": "NOT_FOUND"})
    ]


async def test_unmasked_reads_are_audited_message_by_message(server, shop, db):
    phones = """subscription($store: ID) {
      orderUpdates(storeId: $store) { id customer { identities { value } } }
    }"""

    async def audited() -> list[tuple[str, str, str | None]]:
        async with db.read() as session:
            rows = await session.execute(
                select(AuditEvent.actor, AuditEvent.action, AuditEvent.object_id).where(
                    AuditEvent.action == "pii.read"
                )
            )
        return [tuple(row) for row in rows]

    ann_read = ("user:hq", "pii.read", str(pk(shop.ann)))
    async with (
        server.signed_in(shop.hq(server)) as hq,  # pii:read
        server.signed_in(shop.staff(server, shop.partner_a, shop.a1)) as staff,
    ):
        hq_op = await hq.subscribe(phones, {"store": shop.a1})
        staff_op = await staff.subscribe(phones, {})
        await server.cache.until_subscribers(events.store_orders_channel(pk(shop.a1)), 2)
        order = await place_pickup(server, shop, shop.ann, shop.a1)
        unmasked = (await hq.next(hq_op))["orderUpdates"]["customer"]["identities"]
        masked = (await staff.next(staff_op))["orderUpdates"]["customer"]["identities"]
        assert (unmasked, masked) == ([{"value": "13700000001"}], [{"value": "137****0001"}])
        await mark_ready(server, shop, order)
        await hq.next(hq_op)
        await staff.next(staff_op)
        # The first message's read is on record while the subscription runs.
        assert await audited() == [ann_read]
    # The last one's once it ends (the server notices the client left, then writes).
    async with asyncio.timeout(WAIT):
        while len(await audited()) < 2:  # noqa: ASYNC110  (the write has no event to await)
            await asyncio.sleep(0.05)
    assert await audited() == [ann_read, ann_read]


async def test_a_partner_names_what_it_follows(server, shop):
    async with server.signed_in(shop.admin(server, shop.partner_a)) as ws:
        (error,) = await ws.error(await ws.subscribe(ORDER_UPDATES, {}))
    assert error["message"] == "Name the order (orderId) or the store (storeId) to follow."
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}


async def test_an_order_nobody_is_told_of_cannot_be_followed(server, shop):
    # HQ ships an order to nobody in particular from no store: no event names it.
    values = {
        "channel": "WEB",
        "fulfillment": "DELIVERY",
        "lines": [{"skuId": shop.sku, "quantity": 1}],
        "deliveryRegionCode": "310115",
    }
    order = (await ok(server, shop.hq(server), ORDER_CREATE, values))["order"]["id"]
    async with server.signed_in(shop.hq(server)) as ws:
        (error,) = await ws.error(await ws.subscribe(ORDER_UPDATES, {"order": order}))
    assert error["message"] == (
        "This order has no updates to follow: it has no customer and no store."
    )
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}


async def test_following_orders_needs_orders_read(server, shop):
    marketer = server.token(Role.MARKETER)  # HQ, but not orders:read
    async with server.signed_in(marketer) as ws:
        (error,) = await ws.error(await ws.subscribe(ORDER_UPDATES, {"store": shop.a1}))
    assert error["extensions"] == {"code": "FORBIDDEN"}


async def test_statements_per_order_message(server, shop, db):
    order = await place_pickup(server, shop, shop.ann, shop.a1)
    async with server.signed_in(shop.staff(server, shop.partner_a, shop.a1)) as ws:
        operation = await ws.subscribe(ORDER_UPDATES, {})
        await server.cache.until_subscribers(events.store_orders_channel(pk(shop.a1)))
        counts = []
        for _ in range(3):
            # The order's event again, from a transaction that runs no statement itself.
            with count_statements(db) as counter:
                async with db.transaction() as session:
                    events.emit(
                        session,
                        events.store_orders_channel(pk(shop.a1)),
                        {"orderId": pk(order), "status": "placed", "event": "created"},
                    )
                assert (await ws.next(operation))["orderUpdates"]["id"] == order
            counts.append(counter.count)
    # The order through the scope; then, each through a loader: its store, its customer,
    # its lines and their SKUs.
    assert counts == [5, 5, 5]
