"""Expiring pickup orders past their window (``qudao orders expire-pickups``): each undone
like a cancel, in its own transaction."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.orders.lifecycle.common import SYSTEM_ACTOR, store_row
from api.orders.lifecycle.locking import claim_as_owner
from api.orders.lifecycle.undoing import unwind
from api.orders.models import OPEN_PICKUP, Fulfillment, Order, OrderStatus
from api.orders.notify import publish, recipient
from api.orders.reactions import OrderChange, OrdersWiring
from api.outbox.service import enqueue

if TYPE_CHECKING:
    from api.db import Database

log = logging.getLogger("qudao.orders")


async def expire_pickup(
    session: AsyncSession, order_id: int, *, now: datetime, wiring: OrdersWiring
) -> Order | None:
    """Expire one pickup order past its window (undoing it like a cancel); None when it is
    not due (picked up, cancelled or expired meanwhile: a racing pickup wins or loses on
    the same guarded update)."""
    order = await claim_as_owner(
        session,
        [
            Order.id == order_id,
            Order.fulfillment == Fulfillment.PICKUP,
            Order.status.in_(OPEN_PICKUP),
            Order.pickup_expires_at <= now,
        ],
        {"status": OrderStatus.EXPIRED, "closed_at": now, "updated_at": now},
    )
    if order is None:
        return None
    await unwind(
        session, order, "not picked up in time", SYSTEM_ACTOR, now, wiring.settings.points_policy
    )
    await wiring.changed(session, OrderChange.EXPIRED, [order.id], [order.customer_id], now)
    publish(session, order, "expired")
    store = await store_row(session, order.store_id)
    await enqueue(
        session,
        "order.expired",
        recipient(order),
        {
            "orderId": order.id,
            "storeId": order.store_id,
            "storeName": store.name if store else None,
            "pickupExpiresAt": order.pickup_expires_at.isoformat()
            if order.pickup_expires_at
            else None,
        },
        now=now,
    )
    return order


@dataclass(slots=True)
class ExpiryRun:
    expired: int = 0
    skipped: int = 0  # due when listed, but picked up or cancelled before their turn
    failed: list[int] = field(default_factory=list)  # ids of orders whose expiry raised
    by_store: Counter[int | None] = field(default_factory=Counter)


async def due_pickups(
    session: AsyncSession, *, now: datetime, after_id: int = 0, limit: int = 100
) -> list[int]:
    """Ids of pickup orders past their window, ascending, after ``after_id``."""
    stmt = (
        select(Order.id)
        .where(
            Order.status.in_(OPEN_PICKUP),
            Order.pickup_expires_at <= now,
            Order.fulfillment == Fulfillment.PICKUP,
            Order.id > after_id,
        )
        .order_by(Order.id)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def expire_pickups(
    database: Database,
    *,
    now: datetime,
    limit: int | None = None,
    batch: int = 100,
    wiring: OrdersWiring,
) -> ExpiryRun:
    """Expire every pickup order past its window (at most ``limit``), each in its own
    transaction: an order's locks (its customer, its row, its stock) are held only while it
    is undone, never across a batch, so the job cannot deadlock with the pickups and
    orders running meanwhile. Idempotent and safe to run concurrently with itself and with
    pickups: the guarded update decides each order once.

    An order whose expiry fails (its transaction rolled back) is logged with its id,
    counted in ``failed`` and left for the next run; the others still expire."""
    run = ExpiryRun()
    after = 0
    while limit is None or run.expired < limit:
        size = batch if limit is None else min(batch, limit - run.expired)
        async with database.read() as session:
            ids = await due_pickups(session, now=now, after_id=after, limit=size)
        for order_id in ids:
            try:
                async with database.transaction() as session:
                    order = await expire_pickup(session, order_id, now=now, wiring=wiring)
                    store_id = None if order is None else order.store_id
            except Exception:
                log.exception("expiring pickup order %d failed; it stays open", order_id)
                run.failed.append(order_id)
                continue
            if order is None:
                run.skipped += 1
            else:
                run.expired += 1
                run.by_store[store_id] += 1
        if len(ids) < size:
            break
        after = ids[-1]
    return run
