"""The pickup flow (门店自提): the store makes the order ready, then hands it over against
the member's code or QR payload, selling the reserved units and completing the sale."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.cache import Cache
from api.errors import DomainError
from api.inventory import movements
from api.orders.completion import complete_sale
from api.orders.errors import OrderErrorCode
from api.orders.lifecycle.common import (
    COMPLETED_STATUSES,
    history,
    invalid_status,
    order_lines,
    sku_items,
    staff_only,
    store_row,
)
from api.orders.lifecycle.locking import claim, claim_as_owner, explain, scoped_ids
from api.orders.models import OPEN_PICKUP, ORDER_SOURCE, Fulfillment, Order, OrderStatus
from api.orders.notify import publish, recipient
from api.orders.pickup_codes import is_pickup_code, parse_qr_payload
from api.orders.reactions import OrderChange, OrdersWiring
from api.outbox.service import enqueue
from api.partners.models import Store
from api.partners.service import stores_query

# Guessing a six-digit code: at most this many wrong codes per store per window. A store
# at the limit is told so until the window passes; the right code still has to be guessed
# among a million, so ten tries in fifteen minutes leave a guesser no real chance.
PICKUP_FAILURE_LIMIT = 10
PICKUP_FAILURE_WINDOW = 15 * 60.0


async def mark_ready(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> Order:
    """The store has the order ready: PLACED → READY_FOR_PICKUP; the member hears of it (a
    subscription event and an outbox message with the store and the pickup deadline, never
    the pickup code: it is the member's to show)."""
    staff_only(principal, "mark orders ready")
    # The order row alone (no customer lock first): making it ready moves no stock, points
    # or coupons, so it waits for no lock a merge holds.
    order = await claim(
        session,
        update(Order)
        .where(
            Order.id == order_id,
            Order.id.in_(scoped_ids(principal)),
            Order.fulfillment == Fulfillment.PICKUP,
            Order.status == OrderStatus.PLACED,
        )
        .values(status=OrderStatus.READY_FOR_PICKUP, ready_at=now, updated_at=now),
    )
    if order is None:
        found = await explain(session, principal, order_id)
        if found.fulfillment is not Fulfillment.PICKUP:
            raise invalid_status(found.status, "Only pickup orders are made ready.")
        if found.status is OrderStatus.READY_FOR_PICKUP:
            raise invalid_status(found.status, "The order is ready for pickup already.")
        raise invalid_status(found.status)
    history(session, order, "ready for pickup", principal.subject, now)
    publish(session, order, "ready_for_pickup")
    store = await store_row(session, order.store_id)
    await enqueue(
        session,
        "order.ready_for_pickup",
        recipient(order),
        {
            "orderId": order.id,
            "storeId": order.store_id,
            "storeName": store.name if store else None,
            "storeAddress": store.address if store else None,
            "pickupExpiresAt": order.pickup_expires_at.isoformat()
            if order.pickup_expires_at
            else None,
        },
        now=now,
    )
    return order


# --- pickup -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PickupProof:
    """What staff present at the counter: the six digits (with the order when known), or
    the member's signed QR payload."""

    code: str | None = None
    qr_payload: str | None = None
    order_id: int | None = None


def failures_key(store_id: int) -> str:
    return f"pickup-failures:{store_id}"


async def _pickup_store(session: AsyncSession, principal: Principal, store_id: int | None) -> int:
    """The store verifying: the given one (within the principal's reach) or the staff
    member's own."""
    store_id = store_id if store_id is not None else principal.store_id
    if store_id is None:
        raise DomainError.one(OrderErrorCode.REQUIRED, "Pick up at which store?", "storeId")
    found = (
        await session.execute(
            stores_query(principal).with_only_columns(Store.id).where(Store.id == store_id)
        )
    ).scalar_one_or_none()
    if found is None:
        raise DomainError.one(OrderErrorCode.NOT_FOUND, "No such store.", "storeId")
    return found


async def pickup(
    session: AsyncSession,
    cache: Cache,
    principal: Principal,
    proof: PickupProof,
    *,
    store_id: int | None,
    secret: bytes,
    now: datetime,
    wiring: OrdersWiring,
) -> Order:
    """Hand a pickup order over: verify the code at the pickup store, sell the reserved
    units, complete the order and earn its points (pending for the return window).

    A PLACED order may be picked up as well as a READY one: the goods are reserved at the
    store, so staff may hand them over at once rather than send the member away.

    A code that opens no open pickup order of this store is WRONG_PICKUP_CODE, whether no
    such order exists or it is another store's, and counts against the store's limit
    (TOO_MANY_ATTEMPTS after PICKUP_FAILURE_LIMIT in PICKUP_FAILURE_WINDOW). Only a right
    code (or an authentic QR payload) learns more: that the order is already picked up,
    cancelled, or past its window.
    """
    staff_only(principal, "hand orders over")
    store = await _pickup_store(session, principal, store_id)
    code, order_id = _read_proof(proof, secret)
    given = "code" if proof.qr_payload is None else "qrPayload"  # the field to blame
    failures = await cache.get(failures_key(store))
    if failures is not None and int(failures) >= PICKUP_FAILURE_LIMIT:
        _, reset = await cache.hit(failures_key(store), PICKUP_FAILURE_WINDOW)
        raise DomainError.one(
            OrderErrorCode.TOO_MANY_ATTEMPTS,
            f"Too many wrong pickup codes at this store; try again in {int(reset) + 1} s.",
            given,
        )
    if code is None:  # a forged or garbled QR payload: as wrong as a wrong code
        raise await _wrong_code(cache, store, given)
    guard = [
        Order.store_id == store,
        Order.pickup_code == code,
        Order.fulfillment == Fulfillment.PICKUP,
        Order.status.in_(OPEN_PICKUP),
        Order.pickup_expires_at > now,
    ]
    if order_id is not None:
        guard.append(Order.id == order_id)
    order = await claim_as_owner(
        session, guard, {"status": OrderStatus.COMPLETED, "completed_at": now, "updated_at": now}
    )
    if order is None:
        raise await _pickup_refused(session, cache, store, code, order_id, given)
    lines = await order_lines(session, order.id)
    await movements.commit_reservation(
        session,
        store,
        items=sku_items(lines),
        source_type=ORDER_SOURCE,
        source_id=str(order.id),
        reason=f"picked up, order {order.id}",
        actor=principal.subject,
        now=now,
    )
    await complete_sale(
        session,
        order,
        lines,
        actor=principal.subject,
        now=now,
        policy=wiring.settings.points_policy,
    )
    history(session, order, "picked up", principal.subject, now)
    await wiring.changed(session, OrderChange.COMPLETED, [order.id], [order.customer_id], now)
    publish(session, order, "picked_up")
    return order


def _read_proof(proof: PickupProof, secret: bytes) -> tuple[str | None, int | None]:
    """(code, order id) from the proof; code None for a QR payload that is not genuine."""
    if (proof.code is None) == (proof.qr_payload is None):
        raise DomainError.one(
            OrderErrorCode.REQUIRED, "Give the pickup code or the QR payload (one of them).", "code"
        )
    if proof.qr_payload is not None:
        parsed = parse_qr_payload(secret, proof.qr_payload)
        if parsed is None or (proof.order_id is not None and proof.order_id != parsed[0]):
            return None, None
        return parsed[1], parsed[0]
    code = proof.code.strip() if proof.code else ""
    if not is_pickup_code(code):
        raise DomainError.one(OrderErrorCode.INVALID, "A pickup code is 6 digits.", "code")
    return code, proof.order_id


async def _wrong_code(cache: Cache, store_id: int, given: str) -> DomainError:
    await cache.hit(failures_key(store_id), PICKUP_FAILURE_WINDOW)
    return DomainError.one(
        OrderErrorCode.WRONG_PICKUP_CODE, "This code opens no pickup order here.", given
    )


async def _pickup_refused(
    session: AsyncSession,
    cache: Cache,
    store_id: int,
    code: str,
    order_id: int | None,
    given: str,
) -> DomainError:
    """Why the pickup guard refused. With the order named (a QR, or staff who typed the
    order too) the right code proves the order: say what happened to it. Without, only an
    open order with this code at this store can be said to exist (its window has passed);
    anything else is a wrong code."""
    stmt = select(Order.status, Order.pickup_expires_at).where(
        Order.store_id == store_id,
        Order.pickup_code == code,
        Order.fulfillment == Fulfillment.PICKUP,
    )
    if order_id is not None:
        stmt = stmt.where(Order.id == order_id)
    else:
        stmt = stmt.where(Order.status.in_(OPEN_PICKUP))
    found = (await session.execute(stmt.limit(1))).first()
    if found is None:
        return await _wrong_code(cache, store_id, given)
    if found.status in OPEN_PICKUP:
        return invalid_status(found.status, "The pickup window has passed; the order expires.")
    if found.status in COMPLETED_STATUSES:
        return invalid_status(found.status, "The order was picked up already.")
    return invalid_status(found.status)
