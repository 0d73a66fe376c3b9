"""Races on both engines, each step its own transaction: the credit line never overdraws,
a shipment's stock moves in once."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import func, select

from api.errors import DomainError
from api.inventory.models import MovementKind, StockMovement
from api.partners.models import PartnerTier
from api.purchasing import service
from api.purchasing.models import PurchaseOrder
from api.purchasing.models import PurchaseOrderStatus as S
from api.purchasing.pricing import ItemDraft
from tests.inventory.conftest import level, stock
from tests.purchasing.conftest import HQ, create, credit, partner_admin, price_list, step, used


async def attempt(db, operation, principal, order_id: int, **kwargs) -> str:
    try:
        await step(db, operation, principal, order_id, **kwargs)
    except DomainError as refused:
        return refused.problems[0].code.name
    return "ok"


async def test_50_submissions_against_credit_for_10_approve_exactly_10(db, world):
    me = partner_admin(world.a)
    await price_list(db, [ItemDraft(world.tea, 1000)], tier=PartnerTier.A)
    await credit(db, world.a, 10 * 5000)  # ten orders of 5 × 10.00
    orders = [(await create(db, me, world.a1, [(world.tea, 5)])).order for _ in range(50)]
    outcomes = await asyncio.gather(*(attempt(db, service.submit, me, o.id) for o in orders))
    assert Counter(outcomes) == {"ok": 10, "CREDIT_EXCEEDED": 40}
    assert await used(db, world.a) == 50_000
    async with db.read() as session:
        statuses = Counter(
            await session.scalars(
                select(PurchaseOrder.status).where(PurchaseOrder.partner_id == world.a)
            )
        )
    assert statuses == {S.SUBMITTED: 10, S.DRAFT: 40}


async def test_submissions_and_cancellations_racing_keep_the_ledger_exact(db, world):
    me = partner_admin(world.a)
    await price_list(db, [ItemDraft(world.tea, 1000)], tier=PartnerTier.A)
    await credit(db, world.a, 20 * 1000)
    held = [(await create(db, me, world.a1, [(world.tea, 1)])).order for _ in range(20)]
    for order in held:
        await step(db, service.submit, me, order.id)
    fresh = [(await create(db, me, world.a1, [(world.tea, 1)])).order for _ in range(20)]
    outcomes = await asyncio.gather(
        *(attempt(db, service.cancel, me, o.id) for o in held),
        *(attempt(db, service.submit, me, o.id) for o in fresh),
    )
    cancelled = outcomes[:20].count("ok")
    submitted = outcomes[20:].count("ok")
    assert cancelled == 20
    # Whatever interleaving: used equals the orders holding credit, within the limit.
    assert await used(db, world.a) == 1000 * submitted <= 20_000


async def test_concurrent_receipts_of_one_shipment_move_stock_in_once(db, world):
    me = partner_admin(world.a)
    await price_list(db, [ItemDraft(world.tea, 1000)], tier=PartnerTier.A)
    await credit(db, world.a, 10**6)
    await stock(db, world.wh, world.tea, 40)
    order = (await create(db, me, world.a1, [(world.tea, 40)])).order
    await step(db, service.submit, me, order.id)
    await step(db, service.approve, HQ, order.id)
    await step(db, service.ship, HQ, order.id, warehouse_id=world.wh, tracking_number="T")
    outcomes = await asyncio.gather(
        *(attempt(db, service.receive, me, order.id) for _ in range(20))
    )
    assert Counter(outcomes) == {"ok": 1, "BAD_STATE": 19}
    assert await level(db, world.a1, world.tea) == (40, 0, 0)
    async with db.read() as session:
        receipts = await session.scalar(
            select(func.count()).where(StockMovement.kind == MovementKind.RECEIPT)
        )
    assert receipts == 1
