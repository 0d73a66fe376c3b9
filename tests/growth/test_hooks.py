"""The touchpoints Qudao records itself: orders (first order, repurchase, marketplace purchase)
through the order hook, and undone with them (cancelled, expired, wholly refunded); member
registrations through the membership hook; and merges."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select, update

from api.catalog.models import SalesChannel
from api.customers.membership import JoinRequest, join
from api.customers.merge import merge_customers
from api.growth.funnel import FunnelQuery, conversion_funnel
from api.growth.models import Touchpoint, TouchpointStep
from api.growth.system_touches import record_order_touchpoints
from api.orders.lifecycle import cancel as cancelling
from api.orders.lifecycle import expiry
from api.orders.lifecycle import refund as refunds
from api.orders.models import Fulfillment, Order, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from tests.growth.conftest import add_touches, all_touches
from tests.orders.conftest import HQ, NOW, line, lines_of, member, place, store_staff
from tests.orders.test_import import csv_text, row, run, split_file
from tests.wiring import CUSTOMERS, orders_wiring

DAY = timedelta(days=1)


def steps(touches: list[Touchpoint]) -> list[tuple[int | None, TouchpointStep]]:
    return [(t.order_id, t.step) for t in touches]


async def test_a_members_first_private_order_then_a_repurchase(db, shop):
    first = await place(db, member(shop.ann), now=NOW - DAY)
    second = await place(db, member(shop.ann))

    touches = await all_touches(db)
    assert steps(touches) == [
        (first.order.id, TouchpointStep.FIRST_ORDER),
        (second.order.id, TouchpointStep.REPURCHASE),
    ]
    touch = touches[0]
    assert (touch.recorded_scope, touch.event_id, touch.recorded_by) == (
        "system",
        f"order:{first.order.id}",
        "system",
    )
    assert (touch.customer_id, touch.source_channel, touch.occurred_at) == (
        shop.ann,
        "mini_program",
        first.order.placed_at,
    )
    assert (touch.partner_id, touch.store_id, touch.campaign_id) == (None, None, None)


async def test_a_store_sale_counts_for_the_store_and_its_partner(db, shop):
    result = await place(
        db,
        store_staff(shop.partner_a, shop.a1),
        channel=SalesChannel.STORE_POS,
        fulfillment=Fulfillment.IN_STORE,
        customer_id=shop.ann,
    )
    (touch,) = await all_touches(db)
    assert (touch.step, touch.store_id, touch.partner_id, touch.source_channel) == (
        TouchpointStep.FIRST_ORDER,
        shop.a1,
        shop.partner_a,
        "store_pos",
    )
    assert touch.order_id == result.order.id


async def test_a_marketplace_order_is_a_marketplace_purchase_not_a_first_order(db, shop):
    """cat buys on Tmall, then in the mini-program: the mini-program order is the first
    private-domain one."""
    bought = await place(db, HQ, channel=SalesChannel.TMALL, customer_id=shop.cat, now=NOW - DAY)
    private = await place(db, HQ, customer_id=shop.cat)
    assert steps(await all_touches(db)) == [
        (bought.order.id, TouchpointStep.MARKETPLACE_PURCHASE),
        (private.order.id, TouchpointStep.FIRST_ORDER),
    ]
    (touch, _) = await all_touches(db)
    assert touch.source_channel == "tmall"


async def test_a_pickup_order_counts_when_placed_and_a_cancelled_one_does_not(db, shop):
    """A pickup order is paid when placed: it is the first order. Cancelled, it no longer
    counts and takes its touch with it: ann never bought, and her next order is her first."""
    pickup = await place(
        db, member(shop.ann), fulfillment=Fulfillment.PICKUP, store_id=shop.a1, now=NOW - DAY
    )
    assert steps(await all_touches(db)) == [(pickup.order.id, TouchpointStep.FIRST_ORDER)]
    async with db.transaction() as session:
        await cancelling.cancel(
            session,
            member(shop.ann),
            pickup.order.id,
            reason="changed my mind",
            now=NOW - DAY,
            wiring=orders_wiring(),
        )
    assert await all_touches(db) == []
    assert (await funnel_of_orders(db)) == [0, 0]

    again = await place(db, member(shop.ann))
    assert steps(await all_touches(db)) == [(again.order.id, TouchpointStep.FIRST_ORDER)]
    assert (await funnel_of_orders(db)) == [1, 0]


async def funnel_of_orders(db) -> list[int]:
    """Customers of the [FIRST_ORDER, REPURCHASE] funnel over the last week, as HQ."""
    query = FunnelQuery(
        start=NOW - 7 * DAY,
        end=NOW + DAY,
        steps=(TouchpointStep.FIRST_ORDER, TouchpointStep.REPURCHASE),
    )
    async with db.read() as session:
        (group,) = (await conversion_funnel(session, HQ, query)).groups
    return [s.customers for s in group.steps]


async def test_an_expired_pickup_hands_first_order_to_the_next(db, shop):
    """ann orders for pickup, then for delivery while the pickup still counts (a
    repurchase); the pickup expires: the delivery was her first order after all."""
    pickup = await place(
        db, member(shop.ann), fulfillment=Fulfillment.PICKUP, store_id=shop.a1, now=NOW - 4 * DAY
    )
    delivery = await place(db, member(shop.ann), now=NOW - 3 * DAY)
    other = await place(db, HQ, customer_id=shop.bob, now=NOW - 4 * DAY)
    assert steps(await all_touches(db)) == [
        (pickup.order.id, TouchpointStep.FIRST_ORDER),
        (delivery.order.id, TouchpointStep.REPURCHASE),
        (other.order.id, TouchpointStep.FIRST_ORDER),
    ]
    async with db.transaction() as session:
        assert (
            await expiry.expire_pickup(session, pickup.order.id, now=NOW, wiring=orders_wiring())
            is not None
        )
    assert steps(await all_touches(db)) == [
        (delivery.order.id, TouchpointStep.FIRST_ORDER),
        (other.order.id, TouchpointStep.FIRST_ORDER),
    ]
    assert (await funnel_of_orders(db)) == [2, 0]


async def refund_of(db, order_id: int, key: str, lines=None) -> None:
    draft = refunds.RefundDraft(idempotency_key=key, reason="returned", lines=lines)
    async with db.transaction() as session:
        await refunds.refund(session, HQ, order_id, draft, now=NOW, wiring=orders_wiring())


async def test_a_partial_refund_keeps_the_touch_and_a_full_one_takes_it(db, shop):
    first = await place(db, member(shop.ann), lines=[line(quantity=2)], now=NOW - 2 * DAY)
    second = await place(db, member(shop.ann), now=NOW - DAY)
    (bought,) = await lines_of(db, first.order.id)
    await refund_of(db, first.order.id, "r1", (refunds.RefundLineDraft(bought.id, 1),))
    assert steps(await all_touches(db)) == [
        (first.order.id, TouchpointStep.FIRST_ORDER),
        (second.order.id, TouchpointStep.REPURCHASE),
    ]
    await refund_of(db, first.order.id, "r2")
    assert steps(await all_touches(db)) == [(second.order.id, TouchpointStep.FIRST_ORDER)]


async def test_touches_recorded_by_hand_are_left_alone(db, shop):
    """Only Qudao's own touch of the order goes; HQ's backfilled first order stays."""
    pickup = await place(
        db, member(shop.ann), fulfillment=Fulfillment.PICKUP, store_id=shop.a1, now=NOW - DAY
    )
    await add_touches(
        db, [{"customer_id": shop.ann, "step": TouchpointStep.FIRST_ORDER, "at": NOW - 9 * DAY}]
    )
    async with db.transaction() as session:
        await cancelling.cancel(
            session, HQ, pickup.order.id, reason="out of stock", now=NOW, wiring=orders_wiring()
        )
    assert [(t.recorded_scope, t.step) for t in await all_touches(db)] == [
        ("hq", TouchpointStep.FIRST_ORDER)
    ]


async def test_an_order_without_a_customer_is_nobodys_touch(db, shop):
    await place(db, HQ)
    assert await all_touches(db) == []


async def test_a_retried_order_records_one_touch(db, shop):
    first = await place(db, member(shop.ann), idempotency_key="k1")
    again = await place(db, member(shop.ann), idempotency_key="k1")
    assert not again.created
    assert steps(await all_touches(db)) == [(first.order.id, TouchpointStep.FIRST_ORDER)]


async def test_the_hook_is_one_statement_and_idempotent(db, shop, count_queries):
    orders = [
        (await place(db, HQ, customer_id=customer, now=NOW - i * DAY)).order
        for i, customer in enumerate([shop.ann, shop.bob, shop.cat, shop.ann])
    ]
    before = len(await all_touches(db))
    changed = OrdersChanged(
        OrderChange.CREATED,
        tuple(o.id for o in orders),
        (shop.ann, shop.bob, shop.cat),
        NOW,
    )
    with count_queries() as counter:
        async with db.transaction() as session:
            await record_order_touchpoints(session, changed)
    assert counter.count == 1
    assert len(await all_touches(db)) == before == 4
    # Orders that still count (a partial refund): one statement, which deletes nothing.
    with count_queries() as counter:
        async with db.transaction() as session:
            await record_order_touchpoints(
                session, OrdersChanged(OrderChange.REFUNDED, changed.order_ids, (), NOW)
            )
    assert counter.count == 1
    assert len(await all_touches(db)) == 4
    # Undone orders, however many: a DELETE, then one UPDATE of their customers' touches.
    async with db.transaction() as session:
        await session.execute(
            update(Order)
            .where(Order.id.in_(changed.order_ids))
            .values(status=OrderStatus.CANCELLED)
        )
    cancelled = replace(changed, change=OrderChange.CANCELLED)
    with count_queries() as counter:
        async with db.transaction() as session:
            await record_order_touchpoints(session, cancelled)
    assert counter.count == 2
    assert await all_touches(db) == []
    # Nothing left to undo: the DELETE alone.
    with count_queries() as counter:
        async with db.transaction() as session:
            await record_order_touchpoints(session, cancelled)
    assert counter.count == 1
    # Other changes record nothing (and read nothing).
    with count_queries() as counter:
        async with db.transaction() as session:
            await record_order_touchpoints(
                session, OrdersChanged(OrderChange.COMPLETED, changed.order_ids, (), NOW)
            )
    assert counter.count == 0


async def test_an_import_records_marketplace_purchases(db, shop):
    summary = await run(
        db,
        csv_text(
            row("T1", buyer="tb_1"),
            row("T2", buyer="tb_1", paid_at="2026-06-19T10:00:00+08:00"),
            row("J1", market="jd", buyer="jd_1"),
        ),
    )
    assert summary.orders_imported == 3
    async with db.read() as session:
        orders = {
            o.external_id: o
            for o in await session.scalars(select(Order).where(Order.external_id.is_not(None)))
        }
    touches = {t.order_id: t for t in await all_touches(db)}
    assert len(touches) == 3
    for order in orders.values():
        touch = touches[order.id]
        assert touch.step is TouchpointStep.MARKETPLACE_PURCHASE
        assert (touch.customer_id, touch.occurred_at) == (order.customer_id, order.placed_at)
        assert touch.source_channel == order.channel.value
    assert touches[orders["T1"].id].customer_id == touches[orders["T2"].id].customer_id

    # A re-run imports nothing and records nothing more.
    await run(db, csv_text(row("T1", buyer="tb_1")))
    assert len(await all_touches(db)) == 3


async def test_a_withdrawn_import_order_takes_its_touchpoint_with_it(db, shop):
    """Order A's rows are split across batches: its first batch imported it (and recorded its
    purchase), the next withdraws it; B stays."""
    summary = await run(db, split_file(), batch_size=1)
    assert (summary.orders_imported, summary.orders_withdrawn) == (1, 1)
    async with db.read() as session:
        (b,) = await session.scalars(select(Order))
    assert [t.order_id for t in await all_touches(db)] == [b.id]


async def test_an_import_batch_records_in_the_same_statements_for_10_and_60_orders(
    db, shop, count_queries
):
    def orders_of(prefix: str, n: int) -> str:
        return csv_text(*(row(f"{prefix}{i}", buyer=f"{prefix}_{i % (n // 2)}") for i in range(n)))

    with count_queries() as few:
        await run(db, orders_of("s", 10))
    with count_queries() as many:
        await run(db, orders_of("l", 60))
    assert few.count == many.count == 16, many.statements
    hook = [s for s in many.statements if s.lstrip().upper().startswith("INSERT INTO TOUCHPOINT")]
    assert len(hook) == 1
    assert len(await all_touches(db)) == 70


async def test_joining_records_member_registered_at_the_recruiting_store(db, shop, guides):
    async with db.transaction() as session:
        await join(
            session,
            HQ,
            JoinRequest(customer_id=shop.cat, store_id=shop.a1, guide_id=guides.a1),
            wiring=CUSTOMERS,
            now=NOW,
        )
    (touch,) = await all_touches(db)
    assert (touch.step, touch.customer_id, touch.event_id, touch.recorded_scope) == (
        TouchpointStep.MEMBER_REGISTERED,
        shop.cat,
        f"member:{shop.cat}",
        "system",
    )
    assert (touch.store_id, touch.partner_id, touch.guide_id, touch.occurred_at) == (
        shop.a1,
        shop.partner_a,
        guides.a1,
        NOW,
    )


async def test_a_merge_moves_touchpoints_to_the_survivor(db, shop):
    await place(db, HQ, customer_id=shop.cat, now=NOW - DAY)
    await place(db, HQ, customer_id=shop.bob)
    async with db.transaction() as session:
        preview = await merge_customers(
            session, HQ, shop.bob, [shop.cat], dry_run=True, wiring=CUSTOMERS
        )
    assert any(m.kind == "touchpoints" and m.count == 1 for m in preview.moves)
    async with db.transaction() as session:
        await merge_customers(session, HQ, shop.bob, [shop.cat], dry_run=False, wiring=CUSTOMERS)
    assert {t.customer_id for t in await all_touches(db)} == {shop.bob}
