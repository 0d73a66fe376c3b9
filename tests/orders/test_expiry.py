"""Pickup orders not picked up in time expire (`qudao orders expire-pickups`): the reservation
is released and the points and coupons given back, like a cancel. The job is idempotent, runs
in batches, and races a late pickup or another run of itself with exactly one winner per
order."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest_asyncio
from click.testing import Result
from typer.testing import CliRunner

from api.cli import app
from api.coupons.models import CouponStatus
from api.events import customer_orders_channel, store_orders_channel
from api.inventory.models import MovementKind
from api.orders.lifecycle import expiry
from api.orders.models import OrderStatus
from tests.orders.conftest import (
    DAY,
    NOW,
    POINTS,
    STOCK,
    balance,
    coupon_row,
    member,
    refusal,
    stock,
    store_staff,
)
from tests.orders.test_lifecycle import (
    books_balance,
    history,
    movements,
    new_life,
    order_row,
    outbox,
    pickup_order,
)
from tests.wiring import orders_wiring

runner = CliRunner()
WINDOW = 72  # hours, the default pickup window


@pytest_asyncio.fixture
async def life(db, settings):
    return new_life(db, settings)


async def qudao(settings, *args: str) -> Result:
    """The CLI in a worker thread (it runs its own event loop), as cron would start it."""
    env = {"DATABASE_URL": settings.database_url, "QUDAO_LOG_PLAIN": "1"}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def bare_order(db, shop, **overrides):
    return await pickup_order(db, shop, coupon_codes=[], points_to_use=0, **overrides)


async def test_a_lapsed_pickup_expires_and_gives_everything_back(db, shop, life, published):
    order = await pickup_order(db, shop)
    fresh = await bare_order(db, shop, now=NOW + DAY)  # due a day later
    due = order.pickup_expires_at
    published.events.clear()
    run = await life.expire(now=due)
    assert (run.expired, run.skipped) == (1, 0)
    expired = await order_row(db, order.id)
    assert (expired.status, expired.closed_at) == (OrderStatus.EXPIRED, due)
    assert (await order_row(db, fresh.id)).status is OrderStatus.PLACED
    assert (MovementKind.RELEASE, shop.a1, shop.sku["TEA-1"], 0, -2) in await movements(
        db, "order", str(order.id)
    )
    assert (await balance(db, shop.ann)).balance == POINTS
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED
    assert published.channels() == [
        customer_orders_channel(shop.ann),
        store_orders_channel(shop.a1),
    ]
    assert '"event":"expired"' in published.events[0][1]
    (message,) = await outbox(db)
    assert (message.topic, message.recipient) == ("order.expired", f"customer:{shop.ann}")
    assert message.payload == {
        "orderId": order.id,
        "storeId": shop.a1,
        "storeName": "Store a1",
        "pickupExpiresAt": due.isoformat(),
    }
    assert (await history(db, order.id))[-1] == (OrderStatus.EXPIRED, "not picked up in time")
    assert await books_balance(db)
    # Idempotent: nothing more is due.
    assert (await life.expire(now=due + DAY)).expired == 1  # only ``fresh``, due by then
    assert (await life.expire(now=due + DAY)).expired == 0
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)


async def test_ready_orders_expire_too_and_completed_ones_never(db, shop, life):
    staff = store_staff(shop.partner_a, shop.a1)
    ready = await bare_order(db, shop)
    await life.ready(staff, ready.id)
    picked = await bare_order(db, shop)
    await life.pickup(staff, code=picked.pickup_code)
    cancelled = await bare_order(db, shop)
    await life.cancel(member(shop.ann), cancelled.id)
    run = await life.expire(now=NOW + 4 * DAY)
    assert run.expired == 1
    assert [(await order_row(db, o.id)).status for o in (ready, picked, cancelled)] == [
        OrderStatus.EXPIRED,
        OrderStatus.COMPLETED,
        OrderStatus.CANCELLED,
    ]


async def test_the_job_works_in_batches_up_to_a_limit(db, shop, life):
    orders = [await bare_order(db, shop) for _ in range(5)]
    later = NOW + 4 * DAY
    first = await life.expire(now=later, limit=2)
    assert (first.expired, dict(first.by_store)) == (2, {shop.a1: 2})
    rest = await expiry.expire_pickups(db, now=later, batch=2, wiring=orders_wiring())
    assert rest.expired == 3
    assert {(await order_row(db, o.id)).status for o in orders} == {OrderStatus.EXPIRED}


async def test_a_late_pickup_racing_the_job_has_one_winner_per_order(db, shop, life):
    orders = [await bare_order(db, shop) for _ in range(6)]
    staff = store_staff(shop.partner_a, shop.a1)
    due = orders[0].pickup_expires_at
    # The counter's clock a minute behind the job's: both think they are right.
    outcomes = await asyncio.gather(
        life.expire(now=due + DAY),
        *(
            refusal(life.pickup(staff, code=o.pickup_code, order_id=o.id, now=due - DAY / 1440))
            for o in orders
        ),
    )
    run, pickups = outcomes[0], outcomes[1:]
    picked = sum(1 for p in pickups if p == [])
    assert run.expired + picked == len(orders)
    statuses = Counter([(await order_row(db, o.id)).status for o in orders])
    assert statuses == Counter({OrderStatus.EXPIRED: run.expired, OrderStatus.COMPLETED: picked})
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 2 * picked, 0)
    assert await books_balance(db)


async def test_two_runs_at_once_expire_each_order_once(db, shop, life):
    orders = [await pickup_order(db, shop, coupon_codes=[], points_to_use=100) for _ in range(4)]
    later = NOW + 4 * DAY
    first, second = await asyncio.gather(life.expire(now=later), life.expire(now=later))
    assert first.expired + second.expired == 4
    releases = [
        m
        for o in orders
        for m in await movements(db, "order", str(o.id))
        if m[0] is MovementKind.RELEASE
    ]
    assert len(releases) == 4
    assert (await balance(db, shop.ann)).balance == POINTS  # 4 × 100 given back once each
    assert await books_balance(db)


async def test_the_command_expires_due_pickups_and_reports(db, shop, settings):
    orders = [await bare_order(db, shop) for _ in range(3)]
    at = (NOW + 4 * DAY).isoformat()
    result = await qudao(settings, "orders", "expire-pickups", "--now", at, "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "Expired 2 pickup orders as of" in result.output
    assert "Expired by store" in result.output
    again = await qudao(settings, "orders", "expire-pickups", "--now", at)
    assert "Expired 1 pickup orders" in again.output
    done = await qudao(settings, "orders", "expire-pickups", "--now", at)
    assert "Expired 0 pickup orders" in done.output and "by store" not in done.output
    assert {(await order_row(db, o.id)).status for o in orders} == {OrderStatus.EXPIRED}
    bad = await qudao(settings, "orders", "expire-pickups", "--now", "soon")
    assert bad.exit_code == 2 and "not an ISO-8601 time" in bad.output


def failing_for(monkeypatch, order_id: int) -> None:
    """Make expiring ``order_id`` raise after it has written (its release, its status)."""
    real = expiry.expire_pickup

    async def expire(session, due_id, **kwargs):
        order = await real(session, due_id, **kwargs)
        if due_id == order_id:
            raise RuntimeError("the books are on fire")
        return order

    monkeypatch.setattr(expiry, "expire_pickup", expire)


async def test_an_order_that_fails_to_expire_is_logged_and_the_others_still_expire(
    db, shop, life, monkeypatch, caplog
):
    first, bad, last = [await bare_order(db, shop) for _ in range(3)]
    failing_for(monkeypatch, bad.id)
    with caplog.at_level(logging.ERROR, logger="qudao.orders"):
        run = await life.expire(now=NOW + 4 * DAY)
    assert (run.expired, run.skipped, run.failed) == (2, 0, [bad.id])
    assert f"expiring pickup order {bad.id} failed" in caplog.text
    assert "the books are on fire" in caplog.text  # with the traceback
    statuses = [(await order_row(db, o.id)).status for o in (first, bad, last)]
    assert statuses == [OrderStatus.EXPIRED, OrderStatus.PLACED, OrderStatus.EXPIRED]
    # Its transaction rolled back whole: its units are still reserved, nothing was released.
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 2)
    assert not [
        m for m in await movements(db, "order", str(bad.id)) if m[0] is MovementKind.RELEASE
    ]
    monkeypatch.undo()  # fixed: the next run expires it
    again = await life.expire(now=NOW + 4 * DAY)
    assert (again.expired, again.failed) == (1, [])


async def test_the_command_reports_failed_orders_and_exits_non_zero(
    db, shop, settings, monkeypatch
):
    ok, bad = [await bare_order(db, shop) for _ in range(2)]
    failing_for(monkeypatch, bad.id)
    at = (NOW + 4 * DAY).isoformat()
    result = await qudao(settings, "orders", "expire-pickups", "--now", at)
    assert result.exit_code == 1, result.output
    assert "Expired 1 pickup orders" in result.output
    assert f"1 could not be expired (see the log): {bad.id}" in result.output
    assert (await order_row(db, ok.id)).status is OrderStatus.EXPIRED
    assert (await order_row(db, bad.id)).status is OrderStatus.PLACED
