"""Per-customer metrics kept in step with orders (api/analytics/metrics.py): after every order
change the customer's row holds what their counted orders say, worked out here by hand, and
equals what a rebuild writes. Also: what the order hook costs in statements.

Counted orders: placed, ready for pickup, completed, partially refunded (not cancelled,
expired or wholly refunded). Revenue = total - refunded; margin = revenue - (cost - cost of
the refunded units); the average is revenue / orders, to the cent, half up.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from api.analytics.metrics import METRIC_COLUMNS, metrics_differences, rebuild_customer_metrics
from api.analytics.models import CustomerMetrics
from api.analytics.rfm_scoring import score_rfm
from api.catalog.models import SalesChannel
from api.customers.merge import merge_customers
from api.customers.models import CustomerIdentity, IdentityKind
from api.orders.importer import running
from api.orders.importer.records import ImportFormat
from api.orders.importer.running import ImportOptions
from api.orders.models import Fulfillment, Order, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from tests.analytics.shop_metrics import (
    DAY,
    HQ,
    T0,
    attribution,
    cancel,
    configured,
    expire,
    line,
    metrics,
    metrics_reaction,
    new_customer,
    order,
    reacting_with,
    rebuild_agrees,
    refund,
    shop,
    table,
)
from tests.orders.conftest import lines_of
from tests.orders.test_import import csv_text, row
from tests.wiring import CUSTOMERS, orders_wiring

__all__ = ["shop"]  # a fixture: pytest finds it here

D = Decimal
HOUR = timedelta(hours=1)
NOW_MERGE = T0 + 10 * DAY


def expected(
    orders: int,
    spent: str,
    margin: str,
    average: str,
    first: object,
    second: object,
    last: object,
    channel: str | None,
) -> dict[str, object]:
    return {
        "orders_count": orders,
        "total_spent": D(spent),
        "gross_margin": D(margin),
        "avg_order_value": D(average),
        "first_order_at": first,
        "second_order_at": second,
        "last_order_at": last,
        "first_order_channel": channel,
    }


async def test_orders_refunds_a_cancel_and_an_expiry_keep_the_row_current(db, shop):
    cat = shop.cat
    assert await metrics(db, cat) is None

    # 1. Mini-program delivery at T0: 3 x TEA-1 at its listed 99 + 1 x TEA-2 at 50 = 347
    #    paid; cost 3 x 40 + 20 = 140; margin 207.
    o1 = await order(db, cat, line("TEA-1", 3), line("TEA-2", 1), at=T0)
    assert o1.total == D("347.00")
    assert await metrics(db, cat) == expected(1, "347", "207", "347", T0, None, T0, "mini_program")
    await rebuild_agrees(db)

    # 2. A POS sale at a1 a day later: 1 x TEA-1 at the SRP 100, cost 40 (margin 60).
    #    2 orders, 447 spent, margin 267, average 447 / 2 = 223.50.
    t2 = T0 + DAY
    o2 = await order(
        db,
        cat,
        line("TEA-1"),
        at=t2,
        channel=SalesChannel.STORE_POS,
        fulfillment=Fulfillment.IN_STORE,
        store_id=shop.a1,
    )
    assert o2.total == D("100.00")
    first_channel = "mini_program"  # of the earliest order, whatever came later
    assert await metrics(db, cat) == expected(2, "447", "267", "223.50", T0, t2, t2, first_channel)

    # 3. One TEA-1 of order 1 comes back: 99 refunded and its cost 40 given back, so order 1
    #    is 248 revenue and 248 - (140 - 40) = 148 margin. 2 orders, 348, 208, average 174.
    tea, _ = await lines_of(db, o1.id)
    await refund(db, o1.id, "r-1", [(tea.id, 1)], at=T0 + 5 * DAY)
    assert await metrics(db, cat) == expected(2, "348", "208", "174", T0, t2, t2, first_channel)
    await rebuild_agrees(db)

    # 4. A pickup order at a1 counts from payment: 2 x TEA-2 = 100, cost 40 (margin 60).
    #    3 orders, 448, 268, average 448 / 3 = 149.333.. -> 149.33.
    t3 = T0 + 6 * DAY
    o3 = await order(
        db, cat, line("TEA-2", 2), at=t3, fulfillment=Fulfillment.PICKUP, store_id=shop.a1
    )
    assert await metrics(db, cat) == expected(3, "448", "268", "149.33", T0, t2, t3, first_channel)
    # ... and no more once cancelled: back to step 3.
    await cancel(db, o3.id, at=t3 + HOUR)
    assert await metrics(db, cat) == expected(2, "348", "208", "174", T0, t2, t2, first_channel)
    await rebuild_agrees(db)

    # 5. Another pickup, 1 x NET-1 (listed? no band: its SRP 60, cost 25): counted until it
    #    expires after the 72-hour window, then gone again.
    t4 = T0 + 7 * DAY
    await order(db, cat, line("NET-1"), at=t4, fulfillment=Fulfillment.PICKUP, store_id=shop.a1)
    assert await metrics(db, cat) == expected(3, "408", "243", "136", T0, t2, t4, first_channel)
    run = await expire(db, t4 + 73 * HOUR)
    assert run.expired == 1
    assert await metrics(db, cat) == expected(2, "348", "208", "174", T0, t2, t2, first_channel)
    await rebuild_agrees(db)

    # 6. The POS sale refunded in full no longer counts: order 1 alone, no second order.
    await refund(db, o2.id, "r-2", at=T0 + 20 * DAY)
    assert await metrics(db, cat) == expected(1, "248", "148", "248", T0, None, T0, first_channel)
    # 7. The rest of order 1 too: no counted order left, no row.
    await refund(db, o1.id, "r-3", at=T0 + 21 * DAY)
    assert await metrics(db, cat) is None
    assert await rebuild_agrees(db) == []


async def test_sums_and_the_average_are_exact_to_the_cent_on_both_engines(db, shop):
    # Three POS sales of TEA-2 (no price band) at 0.10, 0.20 and 0.05: as floating point
    # 0.1 + 0.2 is 0.30000000000000004, which a segment's "total_spent = 0.35" would miss.
    ann = await new_customer(db, "ann")
    for n, price in enumerate(("0.10", "0.20", "0.05")):
        await order(
            db,
            ann,
            line("TEA-2", price=price),
            at=T0 + n * DAY,
            channel=SalesChannel.STORE_POS,
            fulfillment=Fulfillment.IN_STORE,
            store_id=shop.a1,
        )
    # 0.35 / 3 = 0.11666.. -> 0.12; margin 0.35 - 3 x 20 = -59.65.
    row_ = await metrics(db, ann)
    assert row_ is not None
    assert (row_["total_spent"], row_["avg_order_value"], row_["gross_margin"]) == (
        D("0.35"),
        D("0.12"),
        D("-59.65"),
    )
    # Half a cent rounds up: 10.00 and 10.01 average 10.005 -> 10.01 (a float 10.005 is
    # 10.00499.., and banker's rounding would say 10.00).
    bob = await new_customer(db, "bob")
    for n, price in enumerate(("10.00", "10.01")):
        await order(
            db,
            bob,
            line("TEA-2", price=price),
            at=T0 + n * DAY,
            channel=SalesChannel.STORE_POS,
            fulfillment=Fulfillment.IN_STORE,
            store_id=shop.a1,
        )
    assert (await metrics(db, bob) or {})["avg_order_value"] == D("10.01")
    # What the database holds compares equal to the exact amounts (SQLite: the same float
    # as the literal), which is what segments filter on.
    async with db.read() as session:
        found = await session.scalars(
            select(CustomerMetrics.customer_id)
            .where(
                CustomerMetrics.total_spent.in_([D("0.35"), D("20.01")]),
                CustomerMetrics.avg_order_value.in_([D("0.12"), D("10.01")]),
            )
            .order_by(CustomerMetrics.customer_id)
        )
        assert list(found) == [ann, bob]
        assert (
            await session.scalar(
                text("SELECT count(*) FROM customer_metrics WHERE total_spent = 0.35")
            )
            == 1
        )
    await rebuild_agrees(db)


async def test_an_import_batch_fills_the_rows_of_its_buyers(db, shop):
    # Two Tmall orders of a new buyer (a customer created by the import) and one JD order
    # found by ann's phone; each TEA-1 at 100, cost 40.
    paid = [(T0 + n * DAY).isoformat() for n in range(3)]
    data = csv_text(
        row("T1", buyer="tb_1", paid_at=paid[0]),
        row("T2", buyer="tb_1", paid_at=paid[1], paid="200.00", quantity="2"),
        row("J1", market="jd", buyer="jd_1", phone="13812341234", paid_at=paid[2]),
    )
    summary = await running.import_orders(
        db,
        io.BytesIO(data.encode()),
        ImportFormat.CSV,
        options=ImportOptions(),
        now=T0 + 9 * DAY,
        wiring=orders_wiring(),
    )
    assert summary.orders_imported == 3
    async with db.read() as session:
        buyer = await session.scalar(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == IdentityKind.MARKETPLACE_BUYER,
                CustomerIdentity.value == "tmall:tb_1",
            )
        )
    assert buyer is not None
    # The buyer: 2 orders, 300 spent, cost 40 + 80 so margin 180, average 150.
    assert await metrics(db, buyer) == expected(
        2, "300", "180", "150", T0, T0 + DAY, T0 + DAY, "tmall"
    )
    # Ann: 1 order, 100, margin 60.
    t = T0 + 2 * DAY
    assert await metrics(db, shop.ann) == expected(1, "100", "60", "100", t, None, t, "jd")
    await rebuild_agrees(db)


async def test_a_merge_moves_the_orders_metrics_and_attributions_to_the_survivor(db, shop):
    # Two records of one person: ann (recruited at a1 at T0) and ann2 (recruited at b1 at
    # T0 + 1d); each has an attributed order.
    with configured("first_touch"):
        ann = await new_customer(db, "ann", since=T0, store_id=shop.a1, partner_id=shop.partner_a)
        ann2 = await new_customer(
            db, "ann2", since=T0 + DAY, store_id=shop.b1, partner_id=shop.partner_b
        )
        o1 = await order(db, ann, line("TEA-1"), at=T0 + 2 * DAY)  # 99, cost 40
        o2 = await order(db, ann2, line("TEA-2", 2), at=T0 + 3 * DAY)  # 100, cost 40
        o3 = await order(db, ann2, line("NET-1"), at=T0 + 4 * DAY)  # 60, cost 25
    assert await metrics(db, ann2) == expected(
        2, "160", "95", "80", T0 + 3 * DAY, T0 + 4 * DAY, T0 + 4 * DAY, "mini_program"
    )
    async with db.transaction() as session:
        preview = await merge_customers(
            session, HQ, ann, [ann2], dry_run=True, wiring=CUSTOMERS, now=NOW_MERGE
        )
    assert [(m.kind, m.count) for m in preview.moves if m.kind == "attributions"] == [
        ("attributions", 2)
    ]
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, ann, [ann2], dry_run=False, wiring=CUSTOMERS, now=NOW_MERGE
        )
    # Ann now: 3 orders, 99 + 100 + 60 = 259, margin 59 + 60 + 35 = 154, average 86.33.
    assert await metrics(db, ann) == expected(
        3, "259", "154", "86.33", T0 + 2 * DAY, T0 + 3 * DAY, T0 + 4 * DAY, "mini_program"
    )
    assert await metrics(db, ann2) is None
    # The attributions are ann's now, and still count for whom they counted for.
    assert await attribution(db) == {
        o1.id: (ann, shop.partner_a, shop.a1, None, "first_touch", None),
        o2.id: (ann, shop.partner_b, shop.b1, None, "first_touch", None),
        o3.id: (ann, shop.partner_b, shop.b1, None, "first_touch", None),
    }
    await rebuild_agrees(db)


async def test_the_rfm_scores_stay_when_orders_refresh_the_row(db, shop):
    cat = shop.cat
    await order(db, cat, at=T0)
    async with db.transaction() as session:
        assert await score_rfm(session, T0 + DAY) == 1
    await order(db, cat, at=T0 + 2 * DAY)
    (only,) = await table(db)
    # Scored alone, she is in every first quintile; a new order does not rescore her.
    assert (only["rfm_recency"], only["rfm_frequency"], only["rfm_segment"]) == (1, 1, "lost")
    assert only["orders_count"] == 2
    await rebuild_agrees(db)


async def test_a_tampered_row_is_reported_and_a_rebuild_repairs_it(db, shop):
    ann, bob, cat = shop.ann, shop.bob, shop.cat
    await order(db, ann, at=T0)
    await order(db, bob, at=T0)
    async with db.transaction() as session:
        # Ann's spend is altered, bob's row lost, and cat (no order) given one.
        await session.execute(
            CustomerMetrics.__table__.update()
            .where(CustomerMetrics.customer_id == ann)
            .values(total_spent=D("1.00"))
        )
        await session.execute(
            CustomerMetrics.__table__.delete().where(CustomerMetrics.customer_id == bob)
        )
        await session.execute(
            CustomerMetrics.__table__.insert().values(
                customer_id=cat, orders_count=1, total_spent=0, gross_margin=0, avg_order_value=0
            )
        )
    async with db.read() as session:
        found = await metrics_differences(session)
    assert [(d.customer_id, d.columns()) for d in found] == [
        (ann, ["total_spent"]),
        (bob, list(METRIC_COLUMNS)),
        (cat, list(METRIC_COLUMNS)),
    ]
    assert found[0].stored and found[0].rebuilt
    assert (found[0].stored["total_spent"], found[0].rebuilt["total_spent"]) == (D(1), D(99))
    assert found[1].stored is None and found[2].rebuilt is None
    # A rebuild of one id range touches only it.
    async with db.transaction() as session:
        assert await rebuild_customer_metrics(session, range(ann, ann + 1)) == 1
    async with db.read() as session:
        assert [d.customer_id for d in await metrics_differences(session)] == [bob, cat]
    async with db.transaction() as session:
        assert await rebuild_customer_metrics(session) == 2
    assert [r["customer_id"] for r in await rebuild_agrees(db)] == [ann, bob]


async def test_concurrent_orders_of_one_customer_both_count(db, shop):
    # Each order's transaction recomputes the row after the customer's lock: the second
    # sees the first, whichever commits first (PostgreSQL runs them truly concurrently).
    cat = shop.cat
    await asyncio.gather(*(order(db, cat, at=T0 + n * HOUR) for n in range(4)))
    assert (await metrics(db, cat) or {})["orders_count"] == 4
    await rebuild_agrees(db)


async def test_imports_racing_each_other_and_orders_of_the_same_member_count_them_all(db, shop):
    # An import's orders only share-lock ann (their foreign key): two imports do not queue
    # behind each other that way. Their hook claims the buyers' metrics rows first, so each
    # recomputation waits for the other import and then sees its orders; an orderCreate
    # waits for both (its lock on ann), and neither deadlocks with it.
    async def imported(key: str) -> None:
        data = csv_text(
            row(key, market="jd", buyer=f"jd_{key}", phone="13812341234", paid_at=T0.isoformat())
        )
        await running.import_orders(
            db,
            io.BytesIO(data.encode()),
            ImportFormat.CSV,
            options=ImportOptions(),
            now=T0,
            wiring=orders_wiring(),
        )

    for n in range(3):
        await asyncio.gather(
            imported(f"J{n}a"), imported(f"J{n}b"), order(db, shop.ann, at=T0 + HOUR)
        )
    # 3 x (two imported orders at 100 + a mini-program TEA-1 at 99)
    assert (await metrics(db, shop.ann) or {})["orders_count"] == 9
    assert (await metrics(db, shop.ann) or {})["total_spent"] == D("897.00")
    await rebuild_agrees(db)


@pytest.mark.parametrize("later", ["import", "rebuild"])
async def test_a_batch_or_rebuild_after_an_uncommitted_batch_waits_and_sees_it(db, shop, later):
    """The interleaving that would lose an order, forced. Cat has an order of 30. Import
    batch A has written an order of 100 and cat's row and not committed when B (another
    batch, with an order of 50, or a rebuild) recomputes cat. B must wait for A and count
    A's order; without the claim it would compute from before A committed, wait on A's row
    only to write it, and overwrite it without A's order (PostgreSQL; SQLite serializes
    the two transactions at BEGIN)."""
    cat = shop.cat

    async def batch(session, total: str) -> None:
        placed = Order(
            channel=SalesChannel.TMALL,
            fulfillment=Fulfillment.DELIVERY,
            status=OrderStatus.COMPLETED,
            customer_id=cat,
            subtotal=D(total),
            total=D(total),
            cost_total=D("10.00"),
            placed_at=T0,
        )
        session.add(placed)
        await session.flush()
        await metrics_reaction()(
            session, OrdersChanged(OrderChange.IMPORTED, (placed.id,), (cat,), T0)
        )

    async def second() -> None:
        async with db.transaction() as session:
            if later == "import":
                await batch(session, "50.00")
            else:
                await rebuild_customer_metrics(session)

    async with db.transaction() as session:
        await batch(session, "30.00")
    async with db.transaction() as session:
        await batch(session, "100.00")
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.5)  # B is at its claim, waiting (SQLite: at its BEGIN)
        assert not waiting.done()
    await waiting
    row_ = await metrics(db, cat) or {}
    expected_row = (3, D("180.00")) if later == "import" else (2, D("130.00"))
    assert (row_["orders_count"], row_["total_spent"]) == expected_row


# --- what the hook costs ----------------------------------------------------------------------


async def hook_statements(db, count_queries, change: OrderChange, order_ids, customer_ids) -> int:
    """Statements the analytics hook alone runs for one change."""
    async with db.transaction() as session:
        with count_queries() as counter:
            await metrics_reaction()(
                session, OrdersChanged(change, tuple(order_ids), tuple(customer_ids), T0)
            )
    return counter.count


async def test_the_hook_runs_a_fixed_number_of_statements_per_change(db, shop, count_queries):
    ann = await new_customer(db, "ann", since=T0, store_id=shop.a1, partner_id=shop.partner_a)
    o = await order(db, ann, at=T0 + DAY)
    count = lambda change, ids=(o.id,), who=(ann,): hook_statements(  # noqa: E731
        db, count_queries, change, ids, who
    )
    with configured("first_touch"):
        # upsert; attribution (INSERT ... SELECT)
        assert await count(OrderChange.CREATED) == 2
    with configured("last_touch", 30):
        # upsert; the orders' recruitment times; attribution
        assert await count(OrderChange.CREATED) == 3
    # upsert only: a pickup completed adds nothing that could empty the row
    assert await count(OrderChange.COMPLETED) == 1
    for change in (OrderChange.CANCELLED, OrderChange.EXPIRED, OrderChange.REFUNDED):
        assert await count(change) == 2  # delete the emptied rows; upsert
    # An import batch: claim the buyers' rows; remove those left empty; upsert;
    # attribution (and the recruitment times with a window). See below: whatever its size.
    assert await count(OrderChange.IMPORTED) == 4
    with configured("first_touch", 30):
        assert await count(OrderChange.IMPORTED) == 5
    # An order without a customer costs nothing.
    assert await count(OrderChange.CREATED, who=()) == 0


async def test_an_import_batch_costs_the_hook_the_same_for_3_and_30_orders(
    db, shop, count_queries, monkeypatch
):
    def orders_of(prefix: str, n: int) -> str:
        return csv_text(
            *(
                row(f"{prefix}{i}", buyer=f"{prefix}_{i % 7}", paid_at=T0.isoformat())
                for i in range(n)
            )
        )

    async def cost(prefix: str, n: int, with_hook: bool) -> int:
        reactions = (metrics_reaction(),) if with_hook else ()
        with count_queries() as counter:
            summary = await running.import_orders(
                db,
                io.BytesIO(orders_of(prefix, n).encode()),
                ImportFormat.CSV,
                options=ImportOptions(),
                now=T0 + DAY,
                wiring=replace(orders_wiring(), reactions=reactions),
            )
        assert summary.orders_imported == n
        return counter.count

    with configured("first_touch"):
        added = [
            await cost("a", 3, True) - await cost("b", 3, False),
            await cost("c", 30, True) - await cost("d", 30, False),
        ]
    # claim the buyers' rows; remove those left empty; upsert them; attribution
    assert added == [4, 4]
    # The hook kept the rows of the batches it saw: 3 + 7 buyers.
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(CustomerMetrics)) == 10


@pytest.mark.parametrize("rule", ["first_touch", "last_touch"])
async def test_order_create_pays_two_or_three_statements_for_the_hook(
    db, shop, count_queries, monkeypatch, rule
):
    """End to end: orderCreate of a member with and without the analytics hook."""
    ann = await new_customer(db, "ann", since=T0, store_id=shop.a1, partner_id=shop.partner_a)
    await order(db, ann, at=T0)  # her first order creates her points account and level rows

    async def cost(with_hook: bool) -> int:
        with reacting_with(*((metrics_reaction(),) if with_hook else ())), count_queries() as c:
            await order(db, ann, at=T0 + DAY)
        return c.count

    with configured(rule):
        assert await cost(True) - await cost(False) == 2
    with configured(rule, 30):
        assert await cost(True) - await cost(False) == 3
