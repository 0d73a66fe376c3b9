"""Cancelling an order that is not completed gives back everything it took: the reserved units,
the points it paid with, its coupons (restored or voided per template). A member cancels
their own pickup order until the store has made it ready; completed orders are refunded."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import pytest_asyncio

from api.catalog.models import SalesChannel
from api.coupons.models import CancelPolicy, CouponStatus
from api.errors import DomainError
from api.events import customer_orders_channel, store_orders_channel
from api.inventory.models import MovementKind
from api.orders.models import Fulfillment, OrderStatus
from tests.orders.conftest import (
    HQ,
    NOW,
    POINTS,
    STOCK,
    balance,
    coupon_row,
    grant_coupon,
    member,
    partner_admin,
    place,
    refusal,
    stock,
    store_staff,
)
from tests.orders.test_lifecycle import (
    books_balance,
    code_of,
    history,
    movements,
    new_life,
    order_row,
    outbox,
    pickup_order,
)


@pytest_asyncio.fixture
async def life(db, settings):
    return new_life(db, settings)


async def test_a_member_cancels_their_pickup_order_and_gets_everything_back(
    db, shop, life, published
):
    order = await pickup_order(db, shop)
    tea = shop.sku["TEA-1"]
    assert (await balance(db, shop.ann)).balance == POINTS - 1000
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.REDEEMED
    published.events.clear()
    cancelled = await life.cancel(member(shop.ann), order.id, reason="  changed my mind ")
    assert (cancelled.status, cancelled.closed_at) == (OrderStatus.CANCELLED, NOW)
    assert await stock(db, shop.a1, tea) == (STOCK, 0)
    assert (MovementKind.RELEASE, shop.a1, tea, 0, -2) in await movements(
        db, "order", str(order.id)
    )
    assert (await balance(db, shop.ann)).balance == POINTS
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED
    assert published.channels() == [
        customer_orders_channel(shop.ann),
        store_orders_channel(shop.a1),
    ]
    assert '"event":"cancelled"' in published.events[0][1]
    (message,) = await outbox(db)
    assert (message.topic, message.recipient, message.payload) == (
        "order.cancelled",
        f"customer:{shop.ann}",
        {"orderId": order.id, "reason": "changed my mind", "cancelledBy": "member"},
    )
    assert (await history(db, order.id))[-1] == (OrderStatus.CANCELLED, "changed my mind")
    assert await books_balance(db)


async def test_a_void_policy_coupon_is_voided_not_restored(db, shop, life):
    code = await grant_coupon(db, shop.ann, name="一次性", cancel_policy=CancelPolicy.VOID)
    order = await pickup_order(db, shop, coupon_codes=[code], points_to_use=0)
    await life.cancel(store_staff(shop.partner_a, shop.a1), order.id, reason="out of stock")
    assert (await coupon_row(db, code)).status is CouponStatus.VOIDED
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED  # untouched


async def test_once_ready_only_the_store_cancels(db, shop, life):
    order = await pickup_order(db, shop)
    staff = store_staff(shop.partner_a, shop.a1)
    await life.ready(staff, order.id)
    refused = await refusal(life.cancel(member(shop.ann), order.id))
    assert refused == [("INVALID_STATUS", ("orderId",))]
    assert (await order_row(db, order.id)).status is OrderStatus.READY_FOR_PICKUP
    done = await life.cancel(staff, order.id, reason="member called")
    assert done.status is OrderStatus.CANCELLED
    _, cancelled = await outbox(db)
    assert cancelled.payload["cancelledBy"] == "staff"


async def test_cancelling_is_refused_out_of_scope_or_status(db, shop, life):
    order = await pickup_order(db, shop)
    for outsider in (
        member(shop.bob),
        store_staff(shop.partner_b, shop.b1),
        partner_admin(shop.partner_b),
        store_staff(shop.partner_a, shop.a2),
    ):
        assert await refusal(life.cancel(outsider, order.id)) == [("NOT_FOUND", ("orderId",))]
    assert await refusal(life.cancel(HQ, order.id, reason=" ")) == [("INVALID", ("reason",))]
    assert await refusal(life.cancel(HQ, order.id, reason="x" * 201)) == [("INVALID", ("reason",))]
    await life.cancel(HQ, order.id)
    again = await refusal(life.cancel(HQ, order.id))
    assert again == [("INVALID_STATUS", ("orderId",))]
    # Nothing was given back twice.
    assert (await balance(db, shop.ann)).balance == POINTS
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)


async def test_completed_orders_are_refunded_not_cancelled(db, shop, life):
    staff = store_staff(shop.partner_a, shop.a1)
    sold = await place(db, staff, channel=SalesChannel.STORE_POS, fulfillment=Fulfillment.IN_STORE)
    picked = await pickup_order(db, shop)
    await life.pickup(staff, code=picked.pickup_code)
    for order_id in (sold.order.id, picked.id):
        with pytest.raises(DomainError) as refused:
            await life.cancel(staff, order_id)
        (problem,) = refused.value.problems
        assert (problem.code.name, problem.field) == ("INVALID_STATUS", ("orderId",))
        assert "refund it instead" in problem.message
    # A member's own completed delivery order: the same answer.
    delivered = (await place(db, member(shop.ann))).order
    assert code_of(await refusal(life.cancel(member(shop.ann), delivered.id))) == ["INVALID_STATUS"]


async def test_a_cancel_racing_a_pickup_lets_exactly_one_through(db, shop, life):
    orders = [await pickup_order(db, shop, coupon_codes=[], points_to_use=0) for _ in range(4)]
    staff = store_staff(shop.partner_a, shop.a1)
    results = await asyncio.gather(
        *(
            call
            for order in orders
            for call in (
                refusal(life.cancel(member(shop.ann), order.id)),
                refusal(life.pickup(staff, code=order.pickup_code, order_id=order.id)),
            )
        )
    )
    for cancel_result, pickup_result in zip(results[::2], results[1::2], strict=True):
        assert [cancel_result, pickup_result].count([]) == 1
    statuses = Counter([(await order_row(db, o.id)).status for o in orders])
    assert sum(statuses.values()) == 4
    sold = statuses[OrderStatus.COMPLETED]
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 2 * sold, 0)
    assert await books_balance(db)
