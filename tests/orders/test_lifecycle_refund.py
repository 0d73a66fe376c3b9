"""Refunds of completed orders, whole or some lines: the money pro rata to the cent (a line's
refunds add up to its total exactly), the goods restocked, the points earned taken back and
the points spent given back in proportion (never below zero: a shortfall is debt), coupons
restored or voided on a refund in full. Idempotent by key; concurrent refunds never exceed
the order."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from api.catalog.models import SalesChannel
from api.coupons.models import CouponStatus
from api.customers.models import QualifyingSpend
from api.errors import DomainError
from api.inventory.models import MovementKind, StockLevel
from api.loyalty import jobs as loyalty_jobs
from api.loyalty import spending as loyalty_spending
from api.loyalty.models import EntryKind
from api.orders.models import Fulfillment, Order, OrderRefund, OrderRefundLine, OrderStatus
from tests.orders.conftest import (
    DAY,
    HQ,
    NOW,
    POINTS,
    STOCK,
    Policy,
    balance,
    coupon_row,
    line,
    lines_of,
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
    points_entries,
)


@pytest_asyncio.fixture
async def life(db, settings):
    return new_life(db, settings)


async def picked_up(db, shop, life, **overrides) -> Order:
    """Ann's pickup order (see ``pickup_order``), handed over at a1."""
    order = await pickup_order(db, shop, **overrides)
    return await life.pickup(store_staff(shop.partner_a, shop.a1), code=order.pickup_code)


def two_lines(shop) -> dict:
    """3 × TEA-1 at 99 and 1 × TEA-2 at 50 = 347; ¥10 coupon and 1,000 points (¥10): the
    ¥20 discount splits 17.12 / 2.88, so the lines cost 279.88 and 47.12, the order 327."""
    return {"lines": [line("TEA-1", 3), line("TEA-2", 1)]}


async def refunds_of(db, order_id: int) -> list[OrderRefund]:
    async with db.read() as session:
        stmt = select(OrderRefund).where(OrderRefund.order_id == order_id).order_by(OrderRefund.id)
        return list(await session.scalars(stmt))


async def spend_rows(db, customer_id: int) -> list[tuple[str, Decimal]]:
    async with db.read() as session:
        rows = await session.execute(
            select(QualifyingSpend.source_type, QualifyingSpend.amount)
            .where(QualifyingSpend.customer_id == customer_id)
            .order_by(QualifyingSpend.id)
        )
        return [(t, a) for t, a in rows]


def share(whole: int, part: Decimal, of: Decimal) -> int:
    return int(Decimal(whole) * part / of)


async def test_partial_refunds_add_up_to_the_order_exactly(db, shop, life):
    order = await picked_up(db, shop, life, **two_lines(shop))
    tea, tea2 = await lines_of(db, order.id)
    assert (tea.total, tea2.total, order.total) == (
        Decimal("279.88"),
        Decimal("47.12"),
        Decimal("327.00"),
    )
    earned = order.points_earned
    assert earned > 0
    staff = store_staff(shop.partner_a, shop.a1)

    first = await life.refund(staff, order.id, "r-1", [(tea.id, 1)])
    assert first.created and first.refund.amount == Decimal("93.29")  # 279.88 / 3, down
    assert first.order.status is OrderStatus.PARTIALLY_REFUNDED
    assert first.refund.points_reversed == share(earned, Decimal("93.29"), Decimal(327))
    assert first.refund.points_returned == share(1000, Decimal("93.29"), Decimal(327))
    assert [(x.quantity, x.amount, x.restocked) for x in first.lines] == [
        (1, Decimal("93.29"), True)
    ]
    # After a partial refund the coupon stays used.
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.REDEEMED

    second = await life.refund(staff, order.id, "r-2", [(tea.id, 1)])
    assert second.refund.amount == Decimal("93.29")  # 186.58 - 93.29
    last = await life.refund(HQ, order.id, "r-3", reason="the rest")  # lines omitted: the rest
    assert last.refund.amount == Decimal("93.30") + Decimal("47.12")  # the last unit's remainder
    assert [(x.order_line_id, x.quantity) for x in last.lines] == [(tea.id, 1), (tea2.id, 1)]
    final = await order_row(db, order.id)
    assert (final.status, final.refunded_amount) == (OrderStatus.REFUNDED, Decimal("327.00"))
    refunds = await refunds_of(db, order.id)
    assert sum(r.amount for r in refunds) == order.total
    assert sum(r.points_reversed for r in refunds) == earned
    assert sum(r.points_returned for r in refunds) == 1000
    assert [line.refunded_quantity for line in await lines_of(db, order.id)] == [3, 1]
    # Refunded in full: the coupon is restored (its template's policy), the goods are back.
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)
    assert await stock(db, shop.a1, shop.sku["TEA-2"]) == (STOCK, 0)
    # Ann is back where she started: her points, nothing pending from the order.
    after = await balance(db, shop.ann)
    assert (after.balance, after.pending, after.debt) == (POINTS, 0, 0)
    assert await books_balance(db)
    # Spend for levels: the sale, then each refund as negative spend.
    spend = await spend_rows(db, shop.ann)
    assert spend[0] == ("order", Decimal("327.00"))
    assert sum(amount for _, amount in spend) == 0
    messages = [m for m in await outbox(db) if m.topic == "order.refunded"]
    assert [m.payload["amount"] for m in messages] == ["93.29", "93.29", "140.42"]
    assert messages[-1].payload["status"] == "refunded"
    assert [status for status, _ in await history(db, order.id)][-3:] == [
        OrderStatus.PARTIALLY_REFUNDED,
        OrderStatus.PARTIALLY_REFUNDED,
        OrderStatus.REFUNDED,
    ]
    restocks = [m for m in await movements(db, "order_refund", str(refunds[0].id))]
    assert restocks == [(MovementKind.RESTOCK, shop.a1, shop.sku["TEA-1"], 1, 0)]


async def test_points_already_spent_become_debt_never_a_negative_balance(db, shop, life):
    order = await picked_up(db, shop, life, coupon_codes=[], points_to_use=0)
    assert order.points_earned == 198
    later = NOW + 8 * DAY  # past the return window: the 198 are spendable, and spent
    async with db.transaction() as session:
        await loyalty_jobs.release_due(session, later)
    async with db.transaction() as session:
        await loyalty_spending.redeem(
            session,
            shop.ann,
            POINTS + 198,
            source_type="test",
            source_id="spend-all",
            reason="spent",
            actor=None,
            now=later,
        )
    result = await life.refund(HQ, order.id, "r-1", now=later + DAY)
    assert result.refund.points_reversed == 198
    reversal = [e for e in await points_entries(db, shop.ann) if e.kind is EntryKind.REVERSE][-1]
    assert (reversal.amount, reversal.debt_delta) == (0, 198)
    owed = await balance(db, shop.ann)
    assert (owed.balance, owed.debt) == (0, 198)
    assert await books_balance(db)


async def test_a_refund_of_pending_points_cancels_them_in_proportion(db, shop, life):
    order = await picked_up(db, shop, life, coupon_codes=[], points_to_use=0)  # 2 × 99
    (tea,) = await lines_of(db, order.id)
    await life.refund(HQ, order.id, "r-1", [(tea.id, 1)])
    assert (await balance(db, shop.ann)).pending == 198 - 99


async def test_refunding_more_than_is_left_names_the_line_and_writes_nothing(
    db, shop, life, published
):
    order = await picked_up(db, shop, life, **two_lines(shop))
    tea, tea2 = await lines_of(db, order.id)
    staff = store_staff(shop.partner_a, shop.a1)
    await life.refund(staff, order.id, "r-1", [(tea.id, 2)])
    before = (await stock(db, shop.a1, shop.sku["TEA-1"]), len(await outbox(db)))
    published.events.clear()
    refused = await refusal(life.refund(staff, order.id, "r-2", [(tea2.id, 1), (tea.id, 2)]))
    assert refused == [("REFUND_EXCEEDS", ("lines", "1", "quantity"))]
    with pytest.raises(DomainError, match=r"Line 1 \(TEA-1\): 1 of 3 left to refund; 2 asked"):
        await life.refund(staff, order.id, "r-2", [(tea.id, 2)])
    assert [x.refunded_quantity for x in await lines_of(db, order.id)] == [2, 0]
    assert len(await refunds_of(db, order.id)) == 1
    assert (await stock(db, shop.a1, shop.sku["TEA-1"]), len(await outbox(db))) == before
    assert published.events == []
    await life.refund(staff, order.id, "r-3")
    nothing = await refusal(life.refund(staff, order.id, "r-4"))
    assert nothing == [("REFUND_EXCEEDS", ("lines",))]
    again = await refusal(life.refund(staff, order.id, "r-5", [(tea2.id, 1)]))
    assert again == [("REFUND_EXCEEDS", ("lines", "0", "quantity"))]


async def test_a_retried_refund_returns_the_first_and_a_reused_key_is_refused(db, shop, life):
    order = await picked_up(db, shop, life, **two_lines(shop))
    tea, _ = await lines_of(db, order.id)
    first = await life.refund(HQ, order.id, "k-1", [(tea.id, 1)])
    retry = await life.refund(HQ, order.id, "k-1", [(tea.id, 1)])
    assert (retry.created, retry.refund.id, retry.refund.amount) == (
        False,
        first.refund.id,
        first.refund.amount,
    )
    assert [(x.order_line_id, x.quantity) for x in retry.lines] == [(tea.id, 1)]
    assert (await order_row(db, order.id)).refunded_amount == first.refund.amount
    for other in (
        life.refund(HQ, order.id, "k-1", [(tea.id, 2)]),
        life.refund(HQ, order.id, "k-1", [(tea.id, 1)], reason="other"),
        life.refund(HQ, order.id, "k-1", [(tea.id, 1)], restock=False),
        life.refund(HQ, order.id, "k-1"),
    ):
        assert await refusal(other) == [("IDEMPOTENCY_KEY_REUSED", ("idempotencyKey",))]
    # The key is the order's: another order may use it.
    other_order = await picked_up(db, shop, life, coupon_codes=[], points_to_use=0)
    assert (await life.refund(HQ, other_order.id, "k-1")).created


async def test_refunds_are_refused_out_of_scope_status_or_shape(db, shop, life):
    order = await picked_up(db, shop, life, **two_lines(shop))
    tea, _ = await lines_of(db, order.id)
    for outsider in (
        store_staff(shop.partner_b, shop.b1),
        partner_admin(shop.partner_b),
        store_staff(shop.partner_a, shop.a2),
    ):
        assert await refusal(life.refund(outsider, order.id, "r")) == [("NOT_FOUND", ("orderId",))]
    assert code_of(await refusal(life.refund(member(shop.ann), order.id, "r"))) == ["FORBIDDEN"]
    assert await refusal(life.refund(HQ, 999_999, "r")) == [("NOT_FOUND", ("orderId",))]
    other = await pickup_order(db, shop, coupon_codes=[], points_to_use=0)
    (other_line,) = await lines_of(db, other.id)
    shapes = {
        "foreign line": (dict(key="r", lines=[(other_line.id, 1)]), ("NOT_FOUND", "lineId")),
        "twice": (dict(key="r", lines=[(tea.id, 1), (tea.id, 1)]), ("INVALID", "lineId")),
        "zero": (dict(key="r", lines=[(tea.id, 0)]), ("INVALID", "quantity")),
    }
    for name, (call, (code, leaf)) in shapes.items():
        refused = await refusal(life.refund(HQ, order.id, call["key"], call["lines"]))
        assert [(c, f[-1] if f else None) for c, f in refused] == [(code, leaf)], name
    assert await refusal(life.refund(HQ, order.id, "r", [])) == [("REQUIRED", ("lines",))]
    assert await refusal(life.refund(HQ, order.id, "")) == [("INVALID", ("idempotencyKey",))]
    assert await refusal(life.refund(HQ, order.id, "r", reason=" ")) == [("INVALID", ("reason",))]
    # Open or closed orders are not refunded.
    assert await refusal(life.refund(HQ, other.id, "r")) == [("INVALID_STATUS", ("orderId",))]
    await life.cancel(HQ, other.id)
    assert await refusal(life.refund(HQ, other.id, "r")) == [("INVALID_STATUS", ("orderId",))]
    assert await refunds_of(db, order.id) == []


async def test_without_restock_or_a_location_the_goods_stay_out(db, shop, life):
    order = await picked_up(db, shop, life, coupon_codes=[], points_to_use=0)
    result = await life.refund(HQ, order.id, "r-1", restock=False)
    assert [x.restocked for x in result.lines] == [False]
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 2, 0)
    assert await movements(db, "order_refund", str(result.refund.id)) == []
    # An online order shipped from no location: nothing to restock, coupons released
    # (redeemed without a store) on the refund in full.
    shipped = (
        await place(
            db,
            HQ,
            customer_id=shop.ann,
            coupon_codes=[shop.ann_coupon],
            lines=[line("TEA-1", 1)],
        )
    ).order
    assert (shipped.status, shipped.store_id) == (OrderStatus.COMPLETED, None)
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.REDEEMED
    full = await life.refund(HQ, shipped.id, "r-1")
    assert [x.restocked for x in full.lines] == [False]
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED


async def test_an_order_paid_wholly_in_points_gives_them_back_by_units(db, shop, life):
    policy = Policy(points_max_share_percent=100)
    order = (
        await place(
            db,
            member(shop.ann),
            policy,
            channel=SalesChannel.MINI_PROGRAM,
            fulfillment=Fulfillment.PICKUP,
            store_id=shop.a1,
            lines=[line("TEA-2", 2)],
            points_to_use=POINTS,
        )
    ).order
    assert (order.total, order.points_used) == (Decimal("0.00"), POINTS)
    await life.pickup(store_staff(shop.partner_a, shop.a1), code=order.pickup_code)
    (tea2,) = await lines_of(db, order.id)
    half = await life.refund(HQ, order.id, "r-1", [(tea2.id, 1)])
    assert (half.refund.amount, half.refund.points_returned) == (Decimal("0.00"), POINTS // 2)
    rest = await life.refund(HQ, order.id, "r-2")
    assert rest.refund.points_returned == POINTS // 2
    assert (await balance(db, shop.ann)).balance == POINTS
    assert await spend_rows(db, shop.ann) == [("order", Decimal("0.00"))]  # no refund spend


async def test_concurrent_refunds_never_exceed_the_order(db, shop, life):
    order = await picked_up(db, shop, life, **two_lines(shop))
    tea, tea2 = await lines_of(db, order.id)
    asks = [[(tea.id, 1)]] * 5 + [[(tea2.id, 1)]] * 3 + [None] * 2
    results = await asyncio.gather(
        *(refusal(life.refund(HQ, order.id, f"k-{i}", ask)) for i, ask in enumerate(asks))
    )
    outcomes = Counter(r[0][0] if r else "ok" for r in results)
    assert outcomes["ok"] >= 1 and set(outcomes) <= {"ok", "REFUND_EXCEEDS"}
    final = await order_row(db, order.id)
    refunds = await refunds_of(db, order.id)
    assert len(refunds) == outcomes["ok"]
    assert final.refunded_amount == sum(r.amount for r in refunds) <= final.total
    async with db.read() as session:
        units = dict(
            (
                await session.execute(
                    select(OrderRefundLine.order_line_id, func.sum(OrderRefundLine.quantity))
                    .where(OrderRefundLine.refund_id.in_([r.id for r in refunds]))
                    .group_by(OrderRefundLine.order_line_id)
                )
            ).all()
        )
    assert units.get(tea.id, 0) <= 3 and units.get(tea2.id, 0) <= 1
    assert [x.refunded_quantity for x in await lines_of(db, order.id)] == [
        units.get(tea.id, 0),
        units.get(tea2.id, 0),
    ]
    async with db.read() as session:
        on_hand = await session.scalar(
            select(StockLevel.on_hand).where(
                StockLevel.store_id == shop.a1, StockLevel.sku_id == shop.sku["TEA-1"]
            )
        )
    assert on_hand == STOCK - 3 + units.get(tea.id, 0)
    if final.status is OrderStatus.REFUNDED:
        assert final.refunded_amount == final.total
        assert sum(r.points_reversed for r in refunds) == order.points_earned
    assert await books_balance(db)


async def test_concurrent_retries_of_one_refund_make_one(db, shop, life):
    order = await picked_up(db, shop, life, **two_lines(shop))
    tea, _ = await lines_of(db, order.id)
    results = await asyncio.gather(
        *(life.refund(HQ, order.id, "same", [(tea.id, 1)]) for _ in range(8))
    )
    assert Counter(r.created for r in results) == {True: 1, False: 7}
    assert len({r.refund.id for r in results}) == 1
    assert (await order_row(db, order.id)).refunded_amount == Decimal("93.29")
