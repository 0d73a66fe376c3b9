"""A customer merge racing a cancel, a pickup or a refund of the merged customer's order.

Both sides lock the customer before the order row (a merge: customers, then coupons and
points, then orders; the lifecycle: the order's live customer, then the order, its stock,
coupons and points), so whichever starts first finishes first and the other waits: no
deadlock on PostgreSQL, whichever way round. The end state is the same either way: the
order, points and coupons on the survivor, the order's coupon restored once.

Each test holds one side inside its transaction (after its locks) until the other has
started; on SQLite writers serialize on BEGIN IMMEDIATE, so the same tests just queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from api.coupons.models import CouponStatus
from api.customers import merge
from api.customers.merge import merge_customers
from api.inventory import movements
from api.orders.models import OrderStatus
from tests.orders.conftest import (
    HQ,
    NOW,
    POINTS,
    STOCK,
    balance,
    coupon_row,
    member,
    stock,
    store_staff,
)
from tests.orders.test_lifecycle import books_balance, new_life, order_row, pickup_order
from tests.wiring import CUSTOMERS

HOLD = 0.5  # seconds the first side stays in its transaction once the second has started


def hold(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> tuple[asyncio.Event, Any]:
    """Make ``owner.name`` stop (inside its caller's transaction) until released; returns
    (reached, release)."""
    reached, go = asyncio.Event(), asyncio.Event()
    real = getattr(owner, name)

    async def held(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        await go.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return reached, go


async def race(
    first: Callable[[], Awaitable[Any]],
    second: Callable[[], Awaitable[Any]],
    reached: asyncio.Event,
    go: asyncio.Event,
) -> list[Any]:
    """Start ``first`` until it holds its locks, start ``second`` against them, then let
    ``first`` go on; both must succeed."""
    one = asyncio.create_task(first())
    await asyncio.wait_for(reached.wait(), 10)
    two = asyncio.create_task(second())
    await asyncio.sleep(HOLD)  # ``second`` is now waiting for a lock ``first`` holds
    go.set()
    results = await asyncio.wait_for(asyncio.gather(one, two, return_exceptions=True), 30)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    return results


def merge_ann_into_cat(db: Any, shop: Any) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        async with db.transaction() as session:
            return await merge_customers(
                session, HQ, shop.cat, [shop.ann], dry_run=False, wiring=CUSTOMERS, now=NOW
            )

    return run


def held_point(
    monkeypatch: pytest.MonkeyPatch, merge_first: bool, lifecycle_step: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the merge right after it locked the customers, or the lifecycle at
    ``lifecycle_step`` (a stock move: after its customer and order locks)."""
    if merge_first:
        return hold(monkeypatch, merge, "move_customer_data")
    return hold(monkeypatch, movements, lifecycle_step)


async def assert_on_the_survivor(db: Any, shop: Any, order_id: int) -> None:
    order = await order_row(db, order_id)
    assert order.customer_id == shop.cat
    coupon = await coupon_row(db, shop.ann_coupon)
    assert coupon.customer_id == shop.cat
    assert await books_balance(db)
    assert (await balance(db, shop.ann)).balance == 0


@pytest.mark.parametrize("merge_first", [False, True], ids=["cancel-first", "merge-first"])
async def test_a_merge_racing_a_cancel(db, shop, settings, monkeypatch, merge_first):
    life = new_life(db, settings)
    order = await pickup_order(db, shop)
    # The member cancels their own order; once merged, their id is the survivor's: staff then.
    canceller = store_staff(shop.partner_a, shop.a1) if merge_first else member(shop.ann)
    reached, go = held_point(monkeypatch, merge_first, "release_reservation")

    async def cancel() -> Any:
        return await life.cancel(canceller, order.id)

    merging = merge_ann_into_cat(db, shop)
    await (
        race(merging, cancel, reached, go) if merge_first else race(cancel, merging, reached, go)
    )

    assert (await order_row(db, order.id)).status is OrderStatus.CANCELLED
    await assert_on_the_survivor(db, shop, order.id)
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED
    assert (await balance(db, shop.cat)).balance == POINTS  # the 1,000 spent came back once
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)


@pytest.mark.parametrize("merge_first", [False, True], ids=["pickup-first", "merge-first"])
async def test_a_merge_racing_a_pickup(db, shop, settings, monkeypatch, merge_first):
    life = new_life(db, settings)
    order = await pickup_order(db, shop)
    reached, go = held_point(monkeypatch, merge_first, "commit_reservation")

    async def hand_over() -> Any:
        return await life.pickup(store_staff(shop.partner_a, shop.a1), code=order.pickup_code)

    merging = merge_ann_into_cat(db, shop)
    if merge_first:
        await race(merging, hand_over, reached, go)
    else:
        await race(hand_over, merging, reached, go)

    done = await order_row(db, order.id)
    assert done.status is OrderStatus.COMPLETED and done.points_earned > 0
    await assert_on_the_survivor(db, shop, order.id)
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.REDEEMED
    survivor = await balance(db, shop.cat)
    assert (survivor.balance, survivor.pending) == (POINTS - 1000, done.points_earned)
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 2, 0)


@pytest.mark.parametrize("merge_first", [False, True], ids=["refund-first", "merge-first"])
async def test_a_merge_racing_a_refund(db, shop, settings, monkeypatch, merge_first):
    life = new_life(db, settings)
    staff = store_staff(shop.partner_a, shop.a1)
    order = await pickup_order(db, shop)
    await life.pickup(staff, code=order.pickup_code)
    reached, go = held_point(monkeypatch, merge_first, "restock")

    async def refund() -> Any:
        return await life.refund(staff, order.id, "R-1")

    merging = merge_ann_into_cat(db, shop)
    if merge_first:
        await race(merging, refund, reached, go)
    else:
        await race(refund, merging, reached, go)

    assert (await order_row(db, order.id)).status is OrderStatus.REFUNDED
    await assert_on_the_survivor(db, shop, order.id)
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED
    survivor = await balance(db, shop.cat)
    assert (survivor.balance, survivor.pending, survivor.debt) == (POINTS, 0, 0)
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)
