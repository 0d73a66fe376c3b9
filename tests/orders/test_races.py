"""Races through the API, each request its own transaction, on both engines. The outcomes are
exact: never more reserved than on hand, one order per idempotency key, one use per coupon."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import func, insert, select, update

from api.auth.principal import Role
from api.customers.models import Customer
from api.inventory.models import StockLevel
from api.orders.models import Order
from tests.orders.conftest import (
    STOCK,
    caller,
    gid,
    member,
    stock,
    token_of,
)

CREATE = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
  order { id } created errors { code field }
} }"""


def outcome(body: dict) -> str:
    assert "errors" not in body, body["errors"]
    payload = body["data"]["orderCreate"]
    return payload["errors"][0]["code"] if payload["errors"] else "ok"


def pickup(shop, **extra) -> dict:
    return {
        "input": {
            "channel": "MINI_PROGRAM",
            "fulfillment": "PICKUP",
            "storeId": gid("Store", shop.a1),
            "lines": [{"sku": "TEA-1", "quantity": 1}],
            **extra,
        }
    }


async def test_300_members_ordering_the_last_100_for_pickup_get_exactly_100(
    db, shop, app, issue_token
):
    async with db.transaction() as session:
        await session.execute(
            update(StockLevel)
            .where(StockLevel.store_id == shop.a1, StockLevel.sku_id == shop.sku["TEA-1"])
            .values(on_hand=100)
        )
        first = await session.scalar(insert(Customer).values(name="buyer").returning(Customer.id))
        await session.execute(insert(Customer), [{"name": f"buyer {i}"} for i in range(299)])
    buyers = range(first, first + 300)
    calls = [
        caller(app, issue_token(Role.MEMBER, customer_id=c, subject=f"customer:{c}"))
        for c in buyers
    ]
    bodies = await asyncio.gather(*(call(CREATE, pickup(shop)) for call in calls))
    assert Counter(outcome(b) for b in bodies) == {"ok": 100, "INSUFFICIENT_STOCK": 200}
    refused = next(b for b in bodies if outcome(b) != "ok")
    assert refused["data"]["orderCreate"]["errors"][0]["field"] == ["input", "lines", "0"]
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (100, 100)
    async with db.read() as session:
        placed = (
            await session.execute(
                select(
                    func.count(),
                    func.count(func.distinct(Order.customer_id)),
                    func.count(func.distinct(Order.pickup_code)),
                )
            )
        ).one()
    assert tuple(placed) == (100, 100, 100)


async def test_concurrent_retries_of_one_order_place_it_once(db, shop, app, issue_token):
    call = caller(app, token_of(issue_token, member(shop.ann)))
    request = pickup(shop, idempotencyKey="checkout-7", couponCodes=[shop.ann_coupon])
    bodies = await asyncio.gather(*(call(CREATE, request) for _ in range(30)))
    assert {outcome(b) for b in bodies} == {"ok"}
    payloads = [b["data"]["orderCreate"] for b in bodies]
    assert len({p["order"]["id"] for p in payloads}) == 1
    assert sorted(p["created"] for p in payloads) == [False] * 29 + [True]
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 1)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1


async def test_one_coupon_in_concurrent_orders_pays_for_one(db, shop, app, issue_token):
    call = caller(app, token_of(issue_token, member(shop.ann)))
    bodies = await asyncio.gather(
        *(
            call(CREATE, pickup(shop, idempotencyKey=f"try-{i}", couponCodes=[shop.ann_coupon]))
            for i in range(20)
        )
    )
    assert Counter(outcome(b) for b in bodies) == {"ok": 1, "COUPON_INVALID": 19}
    # The refused orders' reservations were rolled back with them.
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 1)
