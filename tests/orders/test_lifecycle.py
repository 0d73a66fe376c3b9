"""The pickup flow after an order is placed: the store marks it ready (the member hears of it),
then hands it over against the pickup code or the member's signed QR payload, which sells
the reserved units and earns the order's points. Wrong codes are limited per store.

The helpers here (``Life``, ``pickup_order``, ...) are shared by the other lifecycle tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from api.cache import Cache, InProcessCache, RedisCache
from api.catalog.models import SalesChannel
from api.db import Database
from api.events import customer_orders_channel, store_orders_channel
from api.inventory.models import MovementKind, StockLevel, StockMovement
from api.inventory.movements import ReservationMismatch
from api.loyalty import balances as loyalty_balances
from api.loyalty import jobs as loyalty_jobs
from api.loyalty.models import EntryKind, PointsEntry
from api.orders.lifecycle import cancel as cancelling
from api.orders.lifecycle import expiry
from api.orders.lifecycle import pickup as pickups
from api.orders.lifecycle import refund as refunds
from api.orders.models import Fulfillment, Order, OrderEvent, OrderStatus
from api.orders.pickup_codes import pickup_secret, qr_payload
from api.outbox.models import OutboxMessage
from api.settings import Settings
from tests.conftest import REDIS_URL, service_missing
from tests.orders.conftest import (
    DAY,
    HQ,
    NOW,
    POINTS,
    STOCK,
    Policy,
    Shop,
    balance,
    line,
    member,
    partner_admin,
    place,
    refusal,
    stock,
    store_staff,
)
from tests.wiring import orders_wiring

POLICY = Policy().points_policy  # earned points are pending for 7 days
WIRING = orders_wiring(Policy())


class Life:
    """The lifecycle service, each call in its own transaction, at ``NOW`` by default."""

    def __init__(self, db: Database, cache: Cache, secret: bytes) -> None:
        self.db = db
        self.cache = cache
        self.secret = secret

    async def ready(self, principal: Any, order_id: int, now: datetime = NOW) -> Order:
        async with self.db.transaction() as session:
            return await pickups.mark_ready(session, principal, order_id, now=now)

    async def pickup(
        self,
        principal: Any,
        *,
        code: str | None = None,
        qr: str | None = None,
        order_id: int | None = None,
        store_id: int | None = None,
        now: datetime = NOW,
    ) -> Order:
        proof = pickups.PickupProof(code=code, qr_payload=qr, order_id=order_id)
        async with self.db.transaction() as session:
            return await pickups.pickup(
                session,
                self.cache,
                principal,
                proof,
                store_id=store_id,
                secret=self.secret,
                now=now,
                wiring=WIRING,
            )

    async def cancel(
        self, principal: Any, order_id: int, reason: str = "changed my mind", now: datetime = NOW
    ) -> Order:
        async with self.db.transaction() as session:
            return await cancelling.cancel(
                session, principal, order_id, reason=reason, now=now, wiring=WIRING
            )

    async def refund(
        self,
        principal: Any,
        order_id: int,
        key: str,
        lines: list[tuple[int, int]] | None = None,
        *,
        reason: str = "returned",
        restock: bool = True,
        now: datetime = NOW,
    ) -> refunds.RefundResult:
        draft = refunds.RefundDraft(
            idempotency_key=key,
            reason=reason,
            lines=None
            if lines is None
            else tuple(refunds.RefundLineDraft(line_id, n) for line_id, n in lines),
            restock=restock,
        )
        async with self.db.transaction() as session:
            return await refunds.refund(session, principal, order_id, draft, now=now, wiring=WIRING)

    async def expire(self, now: datetime, limit: int | None = None) -> expiry.ExpiryRun:
        return await expiry.expire_pickups(self.db, now=now, limit=limit, wiring=WIRING)


def new_life(db: Database, settings: Settings) -> Life:
    """What each lifecycle test module's ``life`` fixture returns."""
    return Life(db, InProcessCache(), pickup_secret(settings.key_ring()))


@pytest_asyncio.fixture
async def life(db: Database, settings: Settings) -> Life:
    return new_life(db, settings)


async def pickup_order(db: Database, shop: Shop, **overrides: Any) -> Order:
    """Ann's mini-program pickup order at a1: 2 × TEA-1 at 99, her ¥10 coupon and 1,000
    points (¥10): 198 - 10 - 10 = 178 paid."""
    values: dict[str, Any] = {
        "channel": SalesChannel.MINI_PROGRAM,
        "fulfillment": Fulfillment.PICKUP,
        "store_id": shop.a1,
        "lines": [line("TEA-1", 2)],
        "coupon_codes": [shop.ann_coupon],
        "points_to_use": 1000,
    }
    values.update(overrides)
    principal = values.pop("principal", member(shop.ann))
    return (await place(db, principal, **values)).order


async def order_row(db: Database, order_id: int) -> Order:
    async with db.read() as session:
        return await session.get_one(Order, order_id)


async def outbox(db: Database) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def history(db: Database, order_id: int) -> list[tuple[OrderStatus, str | None]]:
    async with db.read() as session:
        rows = await session.scalars(
            select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
        )
        return [(e.status, e.note) for e in rows]


async def movements(db: Database, source_type: str, source_id: str) -> list[tuple[Any, ...]]:
    async with db.read() as session:
        rows = await session.scalars(
            select(StockMovement)
            .where(StockMovement.source_type == source_type, StockMovement.source_id == source_id)
            .order_by(StockMovement.id)
        )
        return [(m.kind, m.store_id, m.sku_id, m.on_hand_delta, m.reserved_delta) for m in rows]


async def points_entries(db: Database, customer_id: int) -> list[PointsEntry]:
    async with db.read() as session:
        rows = await session.scalars(
            select(PointsEntry)
            .where(PointsEntry.customer_id == customer_id)
            .order_by(PointsEntry.id)
        )
        return list(rows)


async def books_balance(db: Database) -> bool:
    async with db.read() as session:
        return await loyalty_jobs.check_balances(session) == []


def code_of(problems: list[tuple[str, Any]]) -> list[str]:
    return [code for code, _ in problems]


# --- mark ready -------------------------------------------------------------------------------


async def test_staff_mark_a_pickup_order_ready_and_the_member_is_told(db, shop, life, published):
    order = await pickup_order(db, shop)
    published.events.clear()
    ready = await life.ready(store_staff(shop.partner_a, shop.a1), order.id, now=NOW + DAY)
    assert (ready.status, ready.ready_at) == (OrderStatus.READY_FOR_PICKUP, NOW + DAY)
    assert published.channels() == [
        customer_orders_channel(shop.ann),
        store_orders_channel(shop.a1),
    ]
    assert '"event":"ready_for_pickup"' in published.events[0][1]
    (message,) = await outbox(db)
    assert (message.topic, message.recipient) == ("order.ready_for_pickup", f"customer:{shop.ann}")
    assert message.payload == {
        "orderId": order.id,
        "storeId": shop.a1,
        "storeName": "Store a1",
        "storeAddress": "上海市浦东新区世纪大道100号",
        "pickupExpiresAt": order.pickup_expires_at.isoformat(),
    }
    assert order.pickup_code not in str(message.payload)  # the code is the member's to show
    assert (await history(db, order.id))[-1] == (OrderStatus.READY_FOR_PICKUP, "ready for pickup")


async def test_the_partner_admin_and_hq_may_mark_ready_too(db, shop, life):
    first = await pickup_order(db, shop)
    second = await pickup_order(db, shop, coupon_codes=[], points_to_use=0)
    for principal, order in ((partner_admin(shop.partner_a), first), (HQ, second)):
        assert (await life.ready(principal, order.id)).status is OrderStatus.READY_FOR_PICKUP


async def test_marking_ready_is_refused_for_the_wrong_status_scope_or_caller(db, shop, life):
    order = await pickup_order(db, shop)
    staff_a1 = store_staff(shop.partner_a, shop.a1)
    # Another partner's order, or another store's for store staff: not found, like no order.
    for outsider in (
        store_staff(shop.partner_b, shop.b1),
        partner_admin(shop.partner_b),
        store_staff(shop.partner_a, shop.a2),
    ):
        assert await refusal(life.ready(outsider, order.id)) == [("NOT_FOUND", ("orderId",))]
    assert await refusal(life.ready(staff_a1, 999_999)) == [("NOT_FOUND", ("orderId",))]
    assert code_of(await refusal(life.ready(member(shop.ann), order.id))) == ["FORBIDDEN"]
    await life.ready(staff_a1, order.id)
    assert await refusal(life.ready(staff_a1, order.id)) == [("INVALID_STATUS", ("orderId",))]
    counter_sale = (
        await place(
            db,
            staff_a1,
            channel=SalesChannel.STORE_POS,
            fulfillment=Fulfillment.IN_STORE,
            store_id=shop.a1,
        )
    ).order
    assert code_of(await refusal(life.ready(staff_a1, counter_sale.id))) == ["INVALID_STATUS"]
    assert len(await outbox(db)) == 1  # only the one that went through


# --- pickup -----------------------------------------------------------------------------------


async def test_a_pickup_with_the_code_sells_the_reservation_and_earns_points(db, shop, life):
    order = await pickup_order(db, shop)
    tea = shop.sku["TEA-1"]
    assert await stock(db, shop.a1, tea) == (STOCK, 2)
    staff = store_staff(shop.partner_a, shop.a1)
    await life.ready(staff, order.id)
    done = await life.pickup(staff, code=order.pickup_code, now=NOW + DAY)
    assert (done.status, done.completed_at, done.points_earned) == (
        OrderStatus.COMPLETED,
        NOW + DAY,
        178,  # 1 point per yuan paid
    )
    assert await stock(db, shop.a1, tea) == (STOCK - 2, 0)
    assert (MovementKind.SALE, shop.a1, tea, -2, -2) in await movements(db, "order", str(order.id))
    # Pending for the return window, then spendable.
    assert (await balance(db, shop.ann)).pending == 178
    earned = [e for e in await points_entries(db, shop.ann) if e.kind is EntryKind.EARN][-1]
    assert (earned.source_id, earned.pending_delta) == (str(order.id), 178)
    async with db.read() as session:
        later = (await loyalty_balances.balances_of(session, [shop.ann], NOW + 9 * DAY))[shop.ann]
    assert (later.balance, later.pending) == (POINTS - 1000 + 178, 0)
    assert (await history(db, order.id))[-1] == (OrderStatus.COMPLETED, "picked up")


async def test_a_placed_order_may_be_handed_over_at_once(db, shop, life):
    order = await pickup_order(db, shop)
    done = await life.pickup(store_staff(shop.partner_a, shop.a1), code=order.pickup_code)
    assert (done.status, done.ready_at) == (OrderStatus.COMPLETED, None)


async def test_the_signed_qr_payload_opens_its_order(db, shop, life):
    order = await pickup_order(db, shop)
    payload = qr_payload(life.secret, order.id, order.pickup_code)
    done = await life.pickup(partner_admin(shop.partner_a), qr=payload, store_id=shop.a1)
    assert done.status is OrderStatus.COMPLETED
    # Once picked up, the same QR says so (an authentic payload proves the order).
    again = await refusal(life.pickup(partner_admin(shop.partner_a), qr=payload, store_id=shop.a1))
    assert again == [("INVALID_STATUS", ("orderId",))]


async def test_forged_wrong_or_foreign_codes_all_read_as_a_wrong_code(db, shop, life):
    order = await pickup_order(db, shop)
    bobs = await pickup_order(
        db, shop, principal=member(shop.bob), store_id=shop.b1, coupon_codes=[], points_to_use=0
    )
    staff = store_staff(shop.partner_a, shop.a1)
    wrong = f"{(int(order.pickup_code) + 1) % 10**6:06d}"
    forged = qr_payload(b"not the key", order.id, order.pickup_code)
    for attempt, field in (
        (life.pickup(staff, code=wrong), "code"),
        (life.pickup(staff, code=bobs.pickup_code), "code"),  # another store's order
        (life.pickup(staff, code=order.pickup_code, order_id=bobs.id), "code"),  # another order
        (life.pickup(staff, qr=forged), "qrPayload"),
        (life.pickup(staff, qr=qr_payload(life.secret, bobs.id, bobs.pickup_code)), "qrPayload"),
    ):
        assert await refusal(attempt) == [("WRONG_PICKUP_CODE", (field,))]
    assert (await order_row(db, order.id)).status is OrderStatus.PLACED
    assert (await order_row(db, bobs.id)).status is OrderStatus.PLACED


async def test_a_pickup_needs_one_proof_a_store_and_staff(db, shop, life):
    order = await pickup_order(db, shop)
    staff = store_staff(shop.partner_a, shop.a1)
    assert await refusal(life.pickup(staff)) == [("REQUIRED", ("code",))]
    both = life.pickup(staff, code=order.pickup_code, qr="qdp1.1.123456.x")
    assert await refusal(both) == [("REQUIRED", ("code",))]
    assert await refusal(life.pickup(staff, code="12345")) == [("INVALID", ("code",))]
    assert await refusal(life.pickup(staff, code="12a456")) == [("INVALID", ("code",))]
    admin = partner_admin(shop.partner_a)
    assert await refusal(life.pickup(admin, code=order.pickup_code)) == [("REQUIRED", ("storeId",))]
    foreign = life.pickup(admin, code=order.pickup_code, store_id=shop.b1)
    assert await refusal(foreign) == [("NOT_FOUND", ("storeId",))]
    mine = life.pickup(member(shop.ann), code=order.pickup_code, store_id=shop.a1)
    assert code_of(await refusal(mine)) == ["FORBIDDEN"]
    assert (await order_row(db, order.id)).status is OrderStatus.PLACED


async def test_after_the_window_the_right_code_says_so_and_hands_nothing_over(db, shop, life):
    order = await pickup_order(db, shop)
    late = order.pickup_expires_at + DAY
    staff = store_staff(shop.partner_a, shop.a1)
    refused = await refusal(life.pickup(staff, code=order.pickup_code, now=late))
    assert refused == [("INVALID_STATUS", ("orderId",))]
    assert (await order_row(db, order.id)).status is OrderStatus.PLACED
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 2)


async def test_ten_wrong_codes_in_fifteen_minutes_lock_the_stores_pickups(db, shop, life):
    order = await pickup_order(db, shop)
    staff = store_staff(shop.partner_a, shop.a1)
    wrong = f"{(int(order.pickup_code) + 1) % 10**6:06d}"
    for _ in range(pickups.PICKUP_FAILURE_LIMIT):
        assert code_of(await refusal(life.pickup(staff, code=wrong))) == ["WRONG_PICKUP_CODE"]
    # Locked: even the right code waits for the window to pass ...
    locked = await refusal(life.pickup(staff, code=order.pickup_code))
    assert locked == [("TOO_MANY_ATTEMPTS", ("code",))]
    # ... at this store only.
    other = await pickup_order(db, shop, store_id=shop.a2, coupon_codes=[], points_to_use=0)
    a2_staff = store_staff(shop.partner_a, shop.a2)
    assert (await life.pickup(a2_staff, code=other.pickup_code)).status is OrderStatus.COMPLETED
    await life.cache.delete(pickups.failures_key(shop.a1))  # the window passes
    assert (await life.pickup(staff, code=order.pickup_code)).status is OrderStatus.COMPLETED


async def test_the_limit_holds_across_api_processes_sharing_redis(db, shop, settings):
    if not REDIS_URL:
        service_missing("Redis", "set QUDAO_TEST_REDIS_URL to count wrong codes in Redis")
    prefix = f"qudao-test:{uuid.uuid4().hex}:"
    first, second = RedisCache(REDIS_URL, prefix), RedisCache(REDIS_URL, prefix)
    secret = pickup_secret(settings.key_ring())
    try:
        processes = [Life(db, first, secret), Life(db, second, secret)]
        order = await pickup_order(db, shop)
        staff = store_staff(shop.partner_a, shop.a1)
        wrong = f"{(int(order.pickup_code) + 1) % 10**6:06d}"
        for attempt in range(pickups.PICKUP_FAILURE_LIMIT):
            refused = await refusal(processes[attempt % 2].pickup(staff, code=wrong))
            assert code_of(refused) == ["WRONG_PICKUP_CODE"]
        for process in processes:
            refused = await refusal(process.pickup(staff, code=order.pickup_code))
            assert code_of(refused) == ["TOO_MANY_ATTEMPTS"]
    finally:
        await first.delete(pickups.failures_key(shop.a1))
        await first.close()
        await second.close()


async def test_two_staff_scanning_one_order_at_once_hand_it_over_once(db, shop, life):
    order = await pickup_order(db, shop)
    staff = store_staff(shop.partner_a, shop.a1)
    payload = qr_payload(life.secret, order.id, order.pickup_code)
    results = await asyncio.gather(
        *(refusal(life.pickup(staff, qr=payload)) for _ in range(6)),
        *(refusal(life.pickup(staff, code=order.pickup_code)) for _ in range(6)),
    )
    outcomes = Counter(r[0][0] if r else "ok" for r in results)
    assert outcomes["ok"] == 1
    assert set(outcomes) <= {"ok", "INVALID_STATUS", "WRONG_PICKUP_CODE"}
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 2, 0)
    sales = [m for m in await movements(db, "order", str(order.id)) if m[0] is MovementKind.SALE]
    assert len(sales) == 1
    earnings = [e for e in await points_entries(db, shop.ann) if e.kind is EntryKind.EARN]
    assert [e.source_id for e in earnings].count(str(order.id)) == 1
    assert await books_balance(db)


async def test_a_failed_pickup_leaves_nothing_behind(db, shop, life, published):
    order = await pickup_order(db, shop)
    published.events.clear()
    staff = store_staff(shop.partner_a, shop.a1)
    # Break the reservation under the order (a bug elsewhere): the sale must fail whole.
    async with db.transaction() as session:
        await session.execute(
            update(StockLevel)
            .where(StockLevel.store_id == shop.a1, StockLevel.sku_id == shop.sku["TEA-1"])
            .values(reserved=0)
        )
    with pytest.raises(ReservationMismatch):
        await life.pickup(staff, code=order.pickup_code)
    assert (await order_row(db, order.id)).status is OrderStatus.PLACED
    assert published.events == []
    assert [e.kind for e in await points_entries(db, shop.ann)].count(EntryKind.EARN) == 1
    assert (await history(db, order.id))[-1][0] is OrderStatus.PLACED


async def test_a_pickup_order_without_points_or_coupons_earns_on_what_was_paid(db, shop, life):
    order = await pickup_order(db, shop, coupon_codes=[], points_to_use=0, lines=[line("TEA-2")])
    done = await life.pickup(store_staff(shop.partner_a, shop.a1), code=order.pickup_code)
    assert (done.total, done.points_earned) == (Decimal("50.00"), 50)
