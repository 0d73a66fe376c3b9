"""A purchase order's life, every step and every refusal, through the service."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from api.errors import DomainError
from api.inventory.models import MovementKind, StockMovement
from api.outbox.models import OutboxMessage
from api.partners.models import PartnerTier
from api.purchasing import credit_lines, service
from api.purchasing.errors import PurchasingErrorCode as Code
from api.purchasing.models import PurchaseOrderLine
from api.purchasing.models import PurchaseOrderStatus as S
from api.purchasing.pricing import BreakDraft, ItemDraft
from tests.inventory.conftest import level, stock
from tests.purchasing.conftest import HQ, create, credit, partner_admin, price_list, step, used


@pytest.fixture
async def priced(db, world):
    """Tier A: tea 10.00 (≥ 50: −3%), cup 6.00 in packs of 6 from 12; A has 5000.00 credit."""
    await price_list(
        db,
        [
            ItemDraft(world.tea, 1000, breaks=[BreakDraft(50, 300)]),
            ItemDraft(world.cup, 600, min_quantity=12, pack_size=6),
        ],
        tier=PartnerTier.A,
    )
    await credit(db, world.a, 500_000)
    return world


async def refused(coro) -> Code:
    with pytest.raises(DomainError) as error:
        await coro
    return error.value.problems[0].code


async def test_the_whole_life_moves_credit_and_stock(db, priced):
    w = priced
    me = partner_admin(w.a)
    await stock(db, w.wh, w.tea, 100)
    await stock(db, w.wh, w.cup, 100)
    order = (await create(db, me, w.a1, [(w.tea, 50), (w.cup, 18)])).order
    # 50 × 970 + 18 × 600 = 48500 + 10800
    assert (order.status, order.total_cents) == (S.DRAFT, 59_300)
    assert await used(db, w.a) == 0
    assert (await step(db, service.submit, me, order.id)).status is S.SUBMITTED
    assert await used(db, w.a) == 59_300
    assert (await step(db, service.approve, HQ, order.id)).status is S.APPROVED
    shipped = await step(db, service.ship, HQ, order.id, warehouse_id=w.wh, tracking_number="SF123")
    assert (shipped.status, shipped.tracking_number) == (S.SHIPPED, "SF123")
    assert await level(db, w.wh, w.tea) == (50, 0, 0)
    assert (await step(db, service.receive, me, order.id)).status is S.RECEIVED
    assert await level(db, w.a1, w.tea) == (50, 0, 0)
    assert await level(db, w.a1, w.cup) == (18, 0, 0)
    assert await used(db, w.a) == 59_300  # received, not yet paid
    assert (await step(db, service.record_payment, HQ, order.id)).status is S.CLOSED
    assert await used(db, w.a) == 0
    async with db.read() as session:
        kinds = {
            m.kind
            for m in await session.scalars(
                select(StockMovement).where(StockMovement.source_type == "purchase_order")
            )
        }
        topics = list(await session.scalars(select(OutboxMessage.topic).order_by(OutboxMessage.id)))
    assert kinds == {MovementKind.DISPATCH, MovementKind.RECEIPT}
    assert topics == [
        f"purchase_order.{s.value}"
        for s in (S.DRAFT, S.SUBMITTED, S.APPROVED, S.SHIPPED, S.RECEIVED, S.CLOSED)
    ]


async def test_a_line_keeps_its_price_when_the_list_changes(db, priced):
    w = priced
    order = (await create(db, partner_admin(w.a), w.a1, [(w.tea, 1)])).order
    await price_list(db, [ItemDraft(w.tea, 2000)], tier=PartnerTier.A, name="dearer")
    async with db.read() as session:
        line = await session.scalar(
            select(PurchaseOrderLine).where(PurchaseOrderLine.purchase_order_id == order.id)
        )
    assert (line.unit_price_cents, line.line_total_cents) == (1000, 1000)


async def test_quantities_below_minimum_or_out_of_pack_are_refused(db, priced):
    w = priced
    me = partner_admin(w.a)
    assert await refused(create(db, me, w.a1, [(w.cup, 6)])) is Code.BELOW_MINIMUM
    assert await refused(create(db, me, w.a1, [(w.cup, 13)])) is Code.WRONG_PACK_SIZE
    assert await refused(create(db, me, w.a1, [(w.pot, 1)])) is Code.NO_PRICE
    assert await refused(create(db, me, w.a1, [(w.tea, 0)])) is Code.INVALID
    assert await refused(create(db, me, w.a1, [(w.tea, 1), (w.tea, 2)])) is Code.INVALID
    assert await refused(create(db, me, w.a1, [(w.tea, 1)], key="has space")) is Code.INVALID


async def test_a_retry_returns_the_first_order_and_a_reused_key_is_refused(db, priced):
    w = priced
    me = partner_admin(w.a)
    first = await create(db, me, w.a1, [(w.tea, 2)], key="k-1")
    again = await create(db, me, w.a1, [(w.tea, 2)], key="k-1")
    assert (first.created, again.created, again.order.id) == (True, False, first.order.id)
    assert await refused(create(db, me, w.a1, [(w.tea, 3)], key="k-1")) is (
        Code.IDEMPOTENCY_KEY_REUSED
    )


async def test_credit_exceeded_leaves_the_draft_and_the_credit_as_they_were(db, priced):
    w = priced
    me = partner_admin(w.a)
    big = (await create(db, me, w.a1, [(w.tea, 600)])).order  # 600 × 970 = 582000 > 500000
    assert await refused(step(db, service.submit, me, big.id)) is Code.CREDIT_EXCEEDED
    assert await used(db, w.a) == 0
    async with db.read() as session:
        assert (await session.get(type(big), big.id)).status is S.DRAFT
    # Without a credit line at all:
    await price_list(db, [ItemDraft(w.tea, 100)], tier=PartnerTier.B)
    theirs = (await create(db, partner_admin(w.b), w.b1, [(w.tea, 1)])).order
    assert await refused(step(db, service.submit, partner_admin(w.b), theirs.id)) is (
        Code.NO_CREDIT
    )


async def test_reject_and_cancel_give_credit_back(db, priced):
    w = priced
    me = partner_admin(w.a)
    one = (await create(db, me, w.a1, [(w.tea, 10)])).order
    two = (await create(db, me, w.a1, [(w.tea, 20)])).order
    await step(db, service.submit, me, one.id)
    await step(db, service.submit, me, two.id)
    assert await used(db, w.a) == 30_000
    assert await refused(step(db, service.reject, HQ, one.id, reason=" ")) is Code.INVALID
    rejected = await step(db, service.reject, HQ, one.id, reason="duplicate")
    assert (rejected.status, rejected.rejection_reason) == (S.REJECTED, "duplicate")
    await step(db, service.approve, HQ, two.id)
    assert (await step(db, service.cancel, me, two.id)).status is S.CANCELLED
    assert await used(db, w.a) == 0
    draft = (await create(db, me, w.a1, [(w.tea, 1)])).order
    assert (await step(db, service.cancel, me, draft.id)).status is S.CANCELLED
    assert await used(db, w.a) == 0


@pytest.mark.parametrize(
    ("operation", "kwargs"),
    [
        (service.approve, {}),
        (service.reject, {"reason": "no"}),
        (service.receive, {}),
        (service.record_payment, {}),
    ],
)
async def test_steps_out_of_order_are_bad_state(db, priced, operation, kwargs):
    order = (await create(db, partner_admin(priced.a), priced.a1, [(priced.tea, 1)])).order
    assert await refused(step(db, operation, HQ, order.id, **kwargs)) is Code.BAD_STATE


async def test_a_shipped_order_cannot_be_cancelled_or_received_twice(db, priced):
    w = priced
    me = partner_admin(w.a)
    await stock(db, w.wh, w.tea, 5)
    order = (await create(db, me, w.a1, [(w.tea, 5)])).order
    await step(db, service.submit, me, order.id)
    await step(db, service.approve, HQ, order.id)
    await step(db, service.ship, HQ, order.id, warehouse_id=w.wh, tracking_number="T1")
    assert await refused(step(db, service.cancel, me, order.id)) is Code.BAD_STATE
    await step(db, service.receive, me, order.id)
    assert await refused(step(db, service.receive, me, order.id)) is Code.BAD_STATE
    assert await level(db, w.a1, w.tea) == (5, 0, 0)


async def test_shipping_more_than_the_warehouse_holds_changes_nothing(db, priced):
    w = priced
    me = partner_admin(w.a)
    await stock(db, w.wh, w.tea, 3)
    order = (await create(db, me, w.a1, [(w.tea, 5)])).order
    await step(db, service.submit, me, order.id)
    await step(db, service.approve, HQ, order.id)
    ship = step(db, service.ship, HQ, order.id, warehouse_id=w.wh, tracking_number="T1")
    assert await refused(ship) is Code.OUT_OF_STOCK
    assert await level(db, w.wh, w.tea) == (3, 0, 0)
    # A partner's store is no HQ warehouse.
    ship = step(db, service.ship, HQ, order.id, warehouse_id=w.a2, tracking_number="T1")
    assert await refused(ship) is Code.NOT_FOUND


async def test_another_partners_order_and_store_answer_like_missing_ones(db, priced):
    w = priced
    mine = (await create(db, partner_admin(w.a), w.a1, [(w.tea, 1)])).order
    other = partner_admin(w.b)
    for operation in (service.submit, service.cancel, service.receive):
        assert await refused(step(db, operation, other, mine.id)) is Code.NOT_FOUND
    assert await refused(create(db, other, w.a1, [(w.tea, 1)])) is Code.NOT_FOUND
    assert await refused(create(db, other, w.b1, [(w.tea, 1)], partner_id=w.a)) is (Code.NOT_FOUND)
    async with db.read() as session:
        assert await service.orders_by_id(session, other, [mine.id]) == {}
        assert await credit_lines.credit_of(session, other, w.a) is None


async def test_partners_cannot_do_hqs_steps(db, priced):
    w = priced
    me = partner_admin(w.a)
    order = (await create(db, me, w.a1, [(w.tea, 1)])).order
    await step(db, service.submit, me, order.id)
    assert await refused(step(db, service.approve, me, order.id)) is Code.FORBIDDEN
    assert await refused(step(db, service.record_payment, me, order.id)) is Code.FORBIDDEN
    async with db.transaction() as session:
        setting = credit_lines.set_credit(
            session, me, w.a, limit_cents=10**9, payment_terms_days=30, now=order.created_at
        )
        assert await refused(setting) is Code.FORBIDDEN


async def test_a_limit_cannot_go_below_what_is_used(db, priced):
    w = priced
    me = partner_admin(w.a)
    order = (await create(db, me, w.a1, [(w.tea, 10)])).order
    await step(db, service.submit, me, order.id)
    assert await refused(credit(db, w.a, 9_999)) is Code.LIMIT_BELOW_USED
    assert (await credit(db, w.a, 10_000)).available_cents == 0
    assert await refused(credit(db, w.a, -1)) is Code.INVALID
