"""Allocation when stock is short (分配): tier first, then submission; partial allocation with
back-orders filled when stock arrives; never more than the warehouse holds, under races."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from api.errors import DomainError
from api.partners.models import PartnerTier, PartnerType
from api.purchasing import allocation, service
from api.purchasing.errors import PurchasingErrorCode as Code
from api.purchasing.models import PurchaseOrder, PurchaseOrderLine
from api.purchasing.models import PurchaseOrderStatus as S
from api.purchasing.pricing import ItemDraft
from tests.inventory.conftest import level, new_store, stock
from tests.purchasing.conftest import (
    HQ,
    T0,
    create,
    credit,
    new_partner,
    partner_admin,
    price_list,
    step,
)


async def approved(db, partner_id: int, store_id: int, sku: int, quantity: int) -> int:
    me = partner_admin(partner_id)
    order = (await create(db, me, store_id, [(sku, quantity)])).order
    await step(db, service.submit, me, order.id)
    await step(db, service.approve, HQ, order.id)
    return order.id


async def run(db, warehouse: int, sku: int) -> list[allocation.Allocation]:
    async with db.transaction() as session:
        return await allocation.allocate(session, HQ, warehouse, sku, now=T0)


async def line_of(db, order_id: int) -> tuple[S, int]:
    async with db.read() as session:
        order = await session.get(PurchaseOrder, order_id)
        allocated = await session.scalar(
            select(PurchaseOrderLine.allocated).where(
                PurchaseOrderLine.purchase_order_id == order_id
            )
        )
    return order.status, allocated


@pytest.fixture
async def three(db, world):
    """Partners of tiers A, B and C, each with a store and ample credit; tea at 1.00 for all."""
    c = await new_partner(db, "pc", PartnerTier.C, PartnerType.AGENT)
    c1 = await new_store(db, c)
    await price_list(db, [ItemDraft(world.tea, 100)], partner_type=PartnerType.DISTRIBUTOR)
    await price_list(db, [ItemDraft(world.tea, 100)], partner_type=PartnerType.AGENT)
    for partner in (world.a, world.b, c):
        await credit(db, partner, 10**7)
    return world, c, c1


async def test_tier_before_submission_time_and_back_orders_fill_later(db, three):
    w, c, c1 = three
    await stock(db, w.wh, w.tea, 60)
    # Submitted in the order C, B, A: the tiers still go first.
    by_c = await approved(db, c, c1, w.tea, 30)
    by_b = await approved(db, w.b, w.b1, w.tea, 40)
    by_a = await approved(db, w.a, w.a1, w.tea, 50)
    first = await run(db, w.wh, w.tea)
    assert [(a.order_id, a.quantity, a.backordered) for a in first] == [
        (by_a, 50, 0),
        (by_b, 10, 30),
    ]
    assert await line_of(db, by_a) == (S.ALLOCATED, 50)
    assert await line_of(db, by_b) == (S.APPROVED, 10)
    assert await line_of(db, by_c) == (S.APPROVED, 0)
    assert await level(db, w.wh, w.tea) == (60, 60, 0)
    assert await run(db, w.wh, w.tea) == []  # nothing left to give
    # 40 units arrive: B's back-order fills first, then C gets what is left.
    await stock(db, w.wh, w.tea, 100)
    second = await run(db, w.wh, w.tea)
    assert [(a.order_id, a.quantity, a.backordered) for a in second] == [
        (by_b, 30, 0),
        (by_c, 10, 20),
    ]
    assert await line_of(db, by_b) == (S.ALLOCATED, 40)
    assert await level(db, w.wh, w.tea) == (100, 100, 0)


async def test_an_allocated_order_ships_from_its_reservation_and_a_cancel_releases_it(db, three):
    w, _, _ = three
    await stock(db, w.wh, w.tea, 30)
    shipped = await approved(db, w.a, w.a1, w.tea, 20)
    cancelled = await approved(db, w.b, w.b1, w.tea, 10)
    await run(db, w.wh, w.tea)
    assert await level(db, w.wh, w.tea) == (30, 30, 0)
    other = await new_store(db, None)
    ship = step(db, service.ship, HQ, shipped, warehouse_id=other, tracking_number="T")
    with pytest.raises(DomainError) as refused:
        await ship
    assert refused.value.problems[0].code is Code.INVALID  # allocated elsewhere
    await step(db, service.ship, HQ, shipped, warehouse_id=w.wh, tracking_number="T")
    assert await level(db, w.wh, w.tea) == (10, 10, 0)
    await step(db, service.cancel, partner_admin(w.b), cancelled)
    assert await level(db, w.wh, w.tea) == (10, 0, 0)
    await step(db, service.receive, partner_admin(w.a), shipped)
    assert await level(db, w.a1, w.tea) == (20, 0, 0)


async def test_only_hq_allocates_and_only_from_its_own_locations(db, three):
    w, _, _ = three
    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await allocation.allocate(session, partner_admin(w.a), w.wh, w.tea, now=T0)
    assert refused.value.problems[0].code is Code.FORBIDDEN
    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await allocation.allocate(session, HQ, w.a1, w.tea, now=T0)
    assert refused.value.problems[0].code is Code.NOT_FOUND


async def test_100_orders_racing_for_60_units_get_exactly_60_tier_a_first(db, three):
    w, _, _ = three
    await stock(db, w.wh, w.tea, 60)
    orders = {
        partner: [await approved(db, partner, store, w.tea, 1) for _ in range(50)]
        for partner, store in ((w.b, w.b1), (w.a, w.a1))
    }
    runs = await asyncio.gather(*(run(db, w.wh, w.tea) for _ in range(10)))
    assert sum(a.quantity for r in runs for a in r) == 60
    async with db.read() as session:
        allocated = dict(
            (
                await session.execute(
                    select(PurchaseOrder.partner_id, func.sum(PurchaseOrderLine.allocated))
                    .join(PurchaseOrderLine)
                    .group_by(PurchaseOrder.partner_id)
                )
            ).all()
        )
    assert allocated == {w.a: 50, w.b: 10}
    assert await level(db, w.wh, w.tea) == (60, 60, 0)
    statuses = [(await line_of(db, o))[0] for o in orders[w.a]]
    assert statuses == [S.ALLOCATED] * 50


async def test_allocation_and_shipping_race_without_overdrawing_the_warehouse(db, three):
    """Unallocated orders shipping from free stock while allocation runs: every unit is
    either reserved or gone, never both; the warehouse never goes below zero."""
    w, _, _ = three
    await stock(db, w.wh, w.tea, 30)
    waiting = [await approved(db, w.a, w.a1, w.tea, 5) for _ in range(6)]
    shipping = [await approved(db, w.b, w.b1, w.tea, 5) for _ in range(6)]

    async def ship(order_id: int) -> str:
        try:
            await step(db, service.ship, HQ, order_id, warehouse_id=w.wh, tracking_number="T")
        except DomainError as refused:
            return refused.problems[0].code.name
        return "ok"

    outcomes = await asyncio.gather(
        *(ship(o) for o in shipping), *(run(db, w.wh, w.tea) for _ in range(3))
    )
    shipped = outcomes[:6].count("ok")
    reserved = sum(a.quantity for r in outcomes[6:] for a in r)
    on_hand, held, _ = await level(db, w.wh, w.tea)
    assert on_hand == 30 - 5 * shipped and held == reserved <= on_hand
    # Only the orders that were not shipping could be allocated to, tier A's first.
    assert (
        sum([(await line_of(db, o))[1] for o in waiting])
        + sum([(await line_of(db, o))[1] for o in shipping])
        == reserved
    )


async def test_cancels_racing_allocation_leave_no_reservation_behind(db, three):
    w, _, _ = three
    await stock(db, w.wh, w.tea, 100)
    orders = [await approved(db, w.a, w.a1, w.tea, 5) for _ in range(10)]

    async def cancel(order_id: int) -> None:
        try:
            await step(db, service.cancel, partner_admin(w.a), order_id)
        except DomainError as refused:  # lost to an allocation pin: read again, try again
            assert refused.problems[0].code is Code.BAD_STATE
            await step(db, service.cancel, partner_admin(w.a), order_id)

    await asyncio.gather(
        *(cancel(o) for o in orders[:5]), *(run(db, w.wh, w.tea) for _ in range(3))
    )
    kept = [await line_of(db, o) for o in orders[5:]]
    assert [(await line_of(db, o))[0] for o in orders[:5]] == [S.CANCELLED] * 5
    # Every reserved unit belongs to an order still standing.
    assert await level(db, w.wh, w.tea) == (100, sum(a for _, a in kept), 0)
