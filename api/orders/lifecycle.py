"""What happens to an order after it is placed: ready for pickup, picked up, cancelled, expired,
refunded. Plain async functions over a session, like every service.

Every status change is one guarded ``UPDATE customer_order ... WHERE status IN (...)
RETURNING``: of a pickup, a cancel and the expiry job racing for one order exactly one
changes it, and only the winner goes on to move stock, points and coupons.

Locks are taken in one global order, the one customer merges and order creation use too:
the order's live customer first, then the order row, then stock rows, then coupons and
points. A merge (which locks customers, then moves coupons, points and orders) therefore
either runs entirely before an order's change or waits for it; taking the order row first
would deadlock with it. An order merged to another customer between reading its customer
and locking the row is retried with the new one (see ``_take_as_owner``).

Reversals (cancel, expiry, refund) undo what the order did, each under a source of its own
so retries land once: the stock reservation is released, or sold goods restocked; points the
order earned are taken back (never below zero: a shortfall is debt) and points it paid with
are given back; coupons are restored or voided per their template's policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.cache import Cache
from api.coupons import service as coupons
from api.customers.service import lock_customer, record_spend
from api.db import update_returning
from api.errors import DomainError, Problem
from api.inventory import service as inventory
from api.loyalty import service as loyalty
from api.loyalty.rules import PointsPolicy
from api.orders.completion import complete_sale
from api.orders.errors import OrderErrorCode
from api.orders.models import (
    OPEN_PICKUP,
    ORDER_SOURCE,
    Fulfillment,
    Order,
    OrderCoupon,
    OrderEvent,
    OrderLine,
    OrderRefund,
    OrderRefundLine,
    OrderStatus,
)
from api.orders.notify import publish
from api.orders.pickup_codes import is_pickup_code, parse_qr_payload
from api.orders.reactions import OrderChange, OrdersWiring
from api.outbox.service import enqueue
from api.partners.models import Store
from api.partners.service import stores_query

if TYPE_CHECKING:
    from api.db import Database

log = logging.getLogger("qudao.orders")

CLOSE_SOURCE = "order_close"  # points given back when an open order is cancelled or expires
REFUND_SOURCE = "order_refund"  # a refund's restock, points and spend, by refund id
SYSTEM_ACTOR = "system:orders"

# Guessing a six-digit code: at most this many wrong codes per store per window. A store
# at the limit is told so until the window passes; the right code still has to be guessed
# among a million, so ten tries in fifteen minutes leave a guesser no real chance.
PICKUP_FAILURE_LIMIT = 10
PICKUP_FAILURE_WINDOW = 15 * 60.0

# Rounds of "lock the order's customer, then the order" before giving up: each round that
# fails saw a merge move the order to another customer meanwhile.
OWNER_ROUNDS = 5

MAX_REASON = 200
MAX_KEY = 100
MAX_REFUND_LINES = 500
CENT = Decimal("0.01")

COMPLETED_STATUSES = (
    OrderStatus.COMPLETED,
    OrderStatus.PARTIALLY_REFUNDED,
    OrderStatus.REFUNDED,
)
REFUNDABLE = (OrderStatus.COMPLETED, OrderStatus.PARTIALLY_REFUNDED)

_STATUS_PROBLEM = {
    OrderStatus.PLACED: "The order is not completed yet: cancel it instead.",
    OrderStatus.READY_FOR_PICKUP: "The order is waiting for pickup: cancel it instead.",
    OrderStatus.COMPLETED: "The order is completed: refund it instead.",
    OrderStatus.PARTIALLY_REFUNDED: "The order is completed: refund it instead.",
    OrderStatus.REFUNDED: "The order is refunded in full.",
    OrderStatus.CANCELLED: "The order is cancelled.",
    OrderStatus.EXPIRED: "The order expired: it was not picked up in time.",
}


def _invalid_status(status: OrderStatus, message: str | None = None) -> DomainError:
    return DomainError.one(
        OrderErrorCode.INVALID_STATUS, message or _STATUS_PROBLEM[status], "orderId"
    )


def _not_found() -> DomainError:
    return DomainError.one(OrderErrorCode.NOT_FOUND, "No such order.", "orderId")


def _staff_only(principal: Principal, what: str) -> None:
    if principal.is_member or not principal.is_authenticated:
        raise DomainError.one(OrderErrorCode.FORBIDDEN, f"Members cannot {what}.")


def _check_reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON:
        raise DomainError.one(
            OrderErrorCode.INVALID, f"A reason of 1 to {MAX_REASON} characters.", "reason"
        )
    return text


def _scoped_ids(principal: Principal) -> Any:
    """The ids of the orders the principal may act on (another partner's are not found)."""
    return restrict(select(Order.id), Order, principal)


async def _claim(session: AsyncSession, stmt: Any) -> Order | None:
    """Run a guarded status UPDATE returning the order; None when the guard refused."""
    row = await update_returning(
        session, stmt.returning(Order).execution_options(populate_existing=True)
    )
    return row[0] if row is not None else None


async def _take_as_owner(
    session: AsyncSession,
    where: Sequence[Any],
    take: Callable[[Sequence[Any]], Awaitable[Order | None]],
) -> Order | None:
    """Lock the live customer of the order matching ``where``, then let ``take`` lock the
    order row (a guarded UPDATE or SELECT ... FOR UPDATE) under ``where`` plus "still that
    customer's"; the order ``take`` returned. None when no order matches ``where`` (or no
    longer does: a racing change of its status won).

    A merge may move the order to another customer between the read and the lock; then the
    row no longer matches and the next round locks the new owner. Merges are rare and each
    moves an order once, so a few rounds suffice.
    """
    for _ in range(OWNER_ROUNDS):
        found = (
            await session.execute(select(Order.id, Order.customer_id).where(*where).limit(1))
        ).first()
        if found is None:
            return None
        owners = {found.customer_id}
        if found.customer_id is not None:
            live = await lock_customer(session, found.customer_id)
            if live is not None:  # the survivor, if a merge moved the order before our lock
                owners.add(live.id)
        held = (
            Order.customer_id.is_(None)
            if found.customer_id is None
            else Order.customer_id.in_(owners)
        )
        order = await take([*where, Order.id == found.id, held])
        if order is not None:
            return order
    raise RuntimeError(f"order {found.id} kept moving between customers while being locked")


async def _claim_as_owner(
    session: AsyncSession, where: Sequence[Any], values: dict[str, Any]
) -> Order | None:
    """The guarded status UPDATE ``where`` → ``values``, its customer locked first."""

    async def claim(guard: Sequence[Any]) -> Order | None:
        return await _claim(session, update(Order).where(*guard).values(**values))

    return await _take_as_owner(session, where, claim)


async def _explain(session: AsyncSession, principal: Principal, order_id: int) -> Order:
    """Why a guarded update found nothing: the order as the principal may see it, or
    NOT_FOUND (a missing order and another partner's answer alike)."""
    order = (
        await session.scalars(
            select(Order)
            .where(Order.id == order_id, Order.id.in_(_scoped_ids(principal)))
            .execution_options(populate_existing=True)
        )
    ).first()
    if order is None:
        raise _not_found()
    return order


async def _lines(session: AsyncSession, order_id: int) -> list[OrderLine]:
    stmt = select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.line_no)
    return list((await session.scalars(stmt)).all())


def _items(lines: Sequence[OrderLine], quantities: dict[int, int] | None = None) -> dict[int, int]:
    """sku id → quantity, summed over lines (``quantities``: line id → units, else all)."""
    items: Counter[int] = Counter()
    for line in lines:
        units = line.quantity if quantities is None else quantities.get(line.id, 0)
        if units:
            items[line.sku_id] += units
    return dict(items)


def _history(
    session: AsyncSession, order: Order, note: str | None, actor: str | None, now: datetime
) -> None:
    session.add(
        OrderEvent(
            order_id=order.id,
            status=order.status,
            note=note[:MAX_REASON] if note else None,
            actor=actor,
            created_at=now,
        )
    )


def _recipient(order: Order) -> str | None:
    return f"customer:{order.customer_id}" if order.customer_id is not None else None


async def _store(session: AsyncSession, store_id: int | None) -> Any:
    if store_id is None:
        return None
    stmt = select(Store.id, Store.name, Store.address).where(Store.id == store_id)
    return (await session.execute(stmt)).first()


# --- ready for pickup -------------------------------------------------------------------------


async def mark_ready(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> Order:
    """The store has the order ready: PLACED → READY_FOR_PICKUP; the member hears of it (a
    subscription event and an outbox message with the store and the pickup deadline, never
    the pickup code: it is the member's to show)."""
    _staff_only(principal, "mark orders ready")
    # The order row alone (no customer lock first): making it ready moves no stock, points
    # or coupons, so it waits for no lock a merge holds.
    order = await _claim(
        session,
        update(Order)
        .where(
            Order.id == order_id,
            Order.id.in_(_scoped_ids(principal)),
            Order.fulfillment == Fulfillment.PICKUP,
            Order.status == OrderStatus.PLACED,
        )
        .values(status=OrderStatus.READY_FOR_PICKUP, ready_at=now, updated_at=now),
    )
    if order is None:
        found = await _explain(session, principal, order_id)
        if found.fulfillment is not Fulfillment.PICKUP:
            raise _invalid_status(found.status, "Only pickup orders are made ready.")
        if found.status is OrderStatus.READY_FOR_PICKUP:
            raise _invalid_status(found.status, "The order is ready for pickup already.")
        raise _invalid_status(found.status)
    _history(session, order, "ready for pickup", principal.subject, now)
    publish(session, order, "ready_for_pickup")
    store = await _store(session, order.store_id)
    await enqueue(
        session,
        "order.ready_for_pickup",
        _recipient(order),
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


def _failures_key(store_id: int) -> str:
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
    _staff_only(principal, "hand orders over")
    store = await _pickup_store(session, principal, store_id)
    code, order_id = _read_proof(proof, secret)
    given = "code" if proof.qr_payload is None else "qrPayload"  # the field to blame
    failures = await cache.get(_failures_key(store))
    if failures is not None and int(failures) >= PICKUP_FAILURE_LIMIT:
        _, reset = await cache.hit(_failures_key(store), PICKUP_FAILURE_WINDOW)
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
    order = await _claim_as_owner(
        session, guard, {"status": OrderStatus.COMPLETED, "completed_at": now, "updated_at": now}
    )
    if order is None:
        raise await _pickup_refused(session, cache, store, code, order_id, given)
    lines = await _lines(session, order.id)
    await inventory.commit_reservation(
        session,
        store,
        items=_items(lines),
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
    _history(session, order, "picked up", principal.subject, now)
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
    await cache.hit(_failures_key(store_id), PICKUP_FAILURE_WINDOW)
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
        return _invalid_status(found.status, "The pickup window has passed; the order expires.")
    if found.status in COMPLETED_STATUSES:
        return _invalid_status(found.status, "The order was picked up already.")
    return _invalid_status(found.status)


# --- cancel and expiry ------------------------------------------------------------------------


async def cancel(
    session: AsyncSession,
    principal: Principal,
    order_id: int,
    *,
    reason: str,
    now: datetime,
    wiring: OrdersWiring,
) -> Order:
    """Cancel an order that is not completed (a PLACED or READY pickup order: orders of the
    other fulfilments complete when they are placed) and undo what it did: release the
    reservation, give back the points it paid with, restore or void its coupons. A member
    cancels their own pickup order until the store has made it ready; staff and HQ any such
    order in their scope. Completed orders are refunded instead (INVALID_STATUS says so)."""
    note = _check_reason(reason)
    member = principal.is_member
    guard = [Order.id == order_id, Order.id.in_(_scoped_ids(principal))]
    if member:
        guard += [Order.fulfillment == Fulfillment.PICKUP, Order.status == OrderStatus.PLACED]
    else:
        guard.append(Order.status.in_(OPEN_PICKUP))
    order = await _claim_as_owner(
        session, guard, {"status": OrderStatus.CANCELLED, "closed_at": now, "updated_at": now}
    )
    if order is None:
        found = await _explain(session, principal, order_id)
        if member and found.status in OPEN_PICKUP:
            if found.fulfillment is not Fulfillment.PICKUP:
                raise DomainError.one(
                    OrderErrorCode.FORBIDDEN, "Ask the seller to cancel this order.", "orderId"
                )
            raise _invalid_status(
                found.status, "The store has your order ready: ask the store to cancel it."
            )
        raise _invalid_status(found.status)
    await _unwind(session, order, note, principal.subject, now, wiring.settings.points_policy)
    await wiring.changed(session, OrderChange.CANCELLED, [order.id], [order.customer_id], now)
    publish(session, order, "cancelled")
    await enqueue(
        session,
        "order.cancelled",
        _recipient(order),
        {"orderId": order.id, "reason": note, "cancelledBy": "member" if member else "staff"},
        now=now,
    )
    return order


async def expire_pickup(
    session: AsyncSession, order_id: int, *, now: datetime, wiring: OrdersWiring
) -> Order | None:
    """Expire one pickup order past its window (undoing it like a cancel); None when it is
    not due (picked up, cancelled or expired meanwhile: a racing pickup wins or loses on
    the same guarded update)."""
    order = await _claim_as_owner(
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
    await _unwind(
        session, order, "not picked up in time", SYSTEM_ACTOR, now, wiring.settings.points_policy
    )
    await wiring.changed(session, OrderChange.EXPIRED, [order.id], [order.customer_id], now)
    publish(session, order, "expired")
    store = await _store(session, order.store_id)
    await enqueue(
        session,
        "order.expired",
        _recipient(order),
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


async def _unwind(
    session: AsyncSession,
    order: Order,
    note: str,
    actor: str,
    now: datetime,
    policy: PointsPolicy,
) -> None:
    """Undo an open order: its reservation, the points it paid with, its coupons. (An open
    order has earned nothing yet: points are earned when it completes.)"""
    if order.fulfillment is Fulfillment.PICKUP and order.store_id is not None:
        await inventory.release_reservation(
            session,
            order.store_id,
            items=_items(await _lines(session, order.id)),
            source_type=ORDER_SOURCE,
            source_id=str(order.id),
            reason=f"{order.status.value}: {note}"[:MAX_REASON],
            actor=actor,
            now=now,
        )
    if order.points_used > 0 and order.customer_id is not None:
        await loyalty.return_spent(
            session,
            redemption_source_type=ORDER_SOURCE,
            redemption_source_id=str(order.id),
            points=order.points_used,
            source_type=CLOSE_SOURCE,
            source_id=str(order.id),
            reason=f"order {order.id} {order.status.value}"[:MAX_REASON],
            actor=actor,
            now=now,
            customer_id=order.customer_id,
            policy=policy,
        )
    await _release_coupons(session, order, now)
    _history(session, order, note, actor, now)


async def _release_coupons(session: AsyncSession, order: Order, now: datetime) -> None:
    """Restore or void the coupons the order used, per their templates: exactly those of
    its ``order_coupon`` rows (never a coupon redeemed elsewhere under a reference that
    reads like this order's id)."""
    used = await session.scalars(
        select(OrderCoupon.coupon_id).where(OrderCoupon.order_id == order.id)
    )
    await coupons.release_order_coupons(session, order.id, list(used), now=now)


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


# --- refund -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundLineDraft:
    line_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class RefundDraft:
    """``lines`` None: everything not refunded yet."""

    idempotency_key: str
    reason: str
    lines: tuple[RefundLineDraft, ...] | None = None
    restock: bool = True


@dataclass(frozen=True, slots=True)
class RefundResult:
    order: Order
    refund: OrderRefund
    lines: list[OrderRefundLine]
    created: bool  # False: a retry with the same key returned the first refund


def _digest(draft: RefundDraft) -> str:
    lines = None if draft.lines is None else sorted((x.line_id, x.quantity) for x in draft.lines)
    canonical = {"lines": lines, "reason": draft.reason.strip(), "restock": draft.restock}
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_refund(draft: RefundDraft) -> str:
    problems: list[Problem] = []
    key = draft.idempotency_key
    if not key or not key.strip() or len(key) > MAX_KEY:
        problems.append(
            Problem(
                OrderErrorCode.INVALID,
                f"An idempotency key of 1 to {MAX_KEY} characters.",
                ("idempotencyKey",),
            )
        )
    note = (draft.reason or "").strip()
    if not note or len(note) > MAX_REASON:
        problems.append(
            Problem(
                OrderErrorCode.INVALID, f"A reason of 1 to {MAX_REASON} characters.", ("reason",)
            )
        )
    if draft.lines is not None:
        if not draft.lines:
            problems.append(
                Problem(
                    OrderErrorCode.REQUIRED,
                    "Name the lines to refund, or omit them to refund the rest.",
                    ("lines",),
                )
            )
        if len(draft.lines) > MAX_REFUND_LINES:
            problems.append(
                Problem(OrderErrorCode.INVALID, f"At most {MAX_REFUND_LINES} lines.", ("lines",))
            )
        seen: set[int] = set()
        for index, line in enumerate(draft.lines):
            if line.line_id in seen:
                problems.append(
                    Problem(
                        OrderErrorCode.INVALID,
                        "This line is named twice.",
                        ("lines", str(index), "lineId"),
                    )
                )
            seen.add(line.line_id)
            if line.quantity <= 0:
                problems.append(
                    Problem(
                        OrderErrorCode.INVALID,
                        "Refund at least one unit.",
                        ("lines", str(index), "quantity"),
                    )
                )
    if problems:
        raise DomainError(problems)
    return note


def _down_to_cent(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_DOWN)


def _line_amount(line: OrderLine, already: int, units: int) -> Decimal:
    """What ``units`` more of a line give back: its paid total pro rata by quantity, each
    share rounded down to the cent, so the last unit takes the remainder and a line's
    refunds add up to exactly its total."""
    if already + units == line.quantity:
        after = line.total
    else:
        after = _down_to_cent(line.total * (already + units) / line.quantity)
    before = _down_to_cent(line.total * already / line.quantity)
    return after - before


def _share(whole: int, part: Decimal, of: Decimal) -> int:
    """``whole × part / of`` rounded down (points are whole)."""
    return int((Decimal(whole) * part / of).to_integral_value(rounding=ROUND_DOWN))


async def refund(
    session: AsyncSession,
    principal: Principal,
    order_id: int,
    draft: RefundDraft,
    *,
    now: datetime,
    wiring: OrdersWiring,
) -> RefundResult:
    """Refund some lines of a completed order (or all that is left).

    The money: each line's paid total pro rata by quantity, to the cent (see
    ``_line_amount``). The goods: restocked at the order's store when asked and the order
    had one. The points: the order's earning is taken back in the share of the order's
    paid total refunded so far (the refund that completes the order takes what is left, so
    the reversals add up to the earning), never below zero: a shortfall is debt; the points
    it paid with come back in the same share. Coupons: a refund in full restores or voids
    them per template; after a partial refund they stay used. Spend for member levels is
    recorded as negative, dated with the sale.

    Idempotent by ``draft.idempotency_key`` within the order (the same key for another
    request is IDEMPOTENCY_KEY_REUSED). The order's customer is locked first, then the
    order row (SELECT ... FOR UPDATE), so concurrent refunds of one order queue; each line's
    ``refunded_quantity`` and the order's ``refunded_amount`` then move by guarded UPDATEs
    that can never exceed them.
    """
    _staff_only(principal, "refund orders")
    note = _check_refund(draft)
    key = draft.idempotency_key

    # The order row's lock, whatever its status (SQLite: the transaction's BEGIN IMMEDIATE).
    async def lock(guard: Sequence[Any]) -> Order | None:
        stmt = select(Order).where(*guard).with_for_update()
        return (await session.scalars(stmt.execution_options(populate_existing=True))).first()

    order = await _take_as_owner(
        session, [Order.id == order_id, Order.id.in_(_scoped_ids(principal))], lock
    )
    if order is None:
        raise _not_found()
    digest = _digest(draft)
    existing = await session.scalar(
        select(OrderRefund).where(
            OrderRefund.order_id == order.id, OrderRefund.idempotency_key == key
        )
    )
    if existing is not None:
        if existing.request_digest != digest:
            raise DomainError.one(
                OrderErrorCode.IDEMPOTENCY_KEY_REUSED,
                "This idempotency key was used for a different refund of this order.",
                "idempotencyKey",
            )
        lines_of = select(OrderRefundLine).where(OrderRefundLine.refund_id == existing.id)
        return RefundResult(order, existing, list(await session.scalars(lines_of)), created=False)
    if order.status not in COMPLETED_STATUSES:
        raise _invalid_status(order.status)
    lines = await _lines(session, order.id)
    units = _refund_units(lines, draft)
    by_id = {line.id: line for line in lines}
    amount = Decimal(0)
    line_amounts: dict[int, Decimal] = {}
    for line_id, count in units.items():
        line = by_id[line_id]
        grown = await update_returning(
            session,
            update(OrderLine)
            .where(
                OrderLine.id == line_id,
                OrderLine.refunded_quantity + count <= OrderLine.quantity,
            )
            .values(refunded_quantity=OrderLine.refunded_quantity + count)
            .returning(OrderLine.refunded_quantity),
        )
        if grown is None:  # the order lock makes this impossible; never refund twice
            raise RuntimeError(f"order line {line_id} changed under the order lock")
        line_amounts[line_id] = _line_amount(line, grown.refunded_quantity - count, count)
        amount += line_amounts[line_id]
    whole = all(line.refunded_quantity + units.get(line.id, 0) == line.quantity for line in lines)
    status = OrderStatus.REFUNDED if whole else OrderStatus.PARTIALLY_REFUNDED
    order = await _claim(
        session,
        update(Order)
        .where(
            Order.id == order.id,
            Order.status.in_(REFUNDABLE),
            Order.refunded_amount + amount <= Order.total,
        )
        .values(refunded_amount=Order.refunded_amount + amount, status=status, updated_at=now),
    )
    if order is None:  # the lines' totals add up to the order's: impossible under the lock
        raise RuntimeError(f"order {order_id}: refund exceeds the order under its lock")
    record = OrderRefund(
        order_id=order.id,
        idempotency_key=key,
        request_digest=digest,
        amount=amount,
        points_reversed=0,
        points_returned=0,
        reason=note,
        actor=principal.subject,
        created_at=now,
    )
    session.add(record)
    await session.flush()
    restock = draft.restock and order.store_id is not None
    refund_lines = [
        OrderRefundLine(
            refund_id=record.id,
            order_line_id=line_id,
            quantity=count,
            amount=line_amounts[line_id],
            restocked=restock,
        )
        for line_id, count in units.items()
    ]
    session.add_all(refund_lines)
    source_id = str(record.id)
    if restock:
        assert order.store_id is not None
        await inventory.restock(
            session,
            order.store_id,
            items=_items(lines, units),
            source_type=REFUND_SOURCE,
            source_id=source_id,
            reason=f"refund of order {order.id}: {note}"[:MAX_REASON],
            actor=principal.subject,
            now=now,
        )
    await _refund_points(
        session, order, record, lines, units, whole, now, wiring.settings.points_policy
    )
    if whole:
        await _release_coupons(session, order, now)
    # Imported marketplace orders never counted toward levels, so their refunds do not either.
    if order.customer_id is not None and order.external_id is None and amount > 0:
        await record_spend(
            session,
            order.customer_id,
            -amount,
            source_type=REFUND_SOURCE,
            source_id=source_id,
            # Dated with the sale, so it nets the sale out of every window that counts it.
            at=order.placed_at,
            now=now,
        )
    _history(session, order, note, principal.subject, now)
    await wiring.changed(session, OrderChange.REFUNDED, [order.id], [order.customer_id], now)
    publish(session, order, "refunded")
    await enqueue(
        session,
        "order.refunded",
        _recipient(order),
        {
            "orderId": order.id,
            "refundId": record.id,
            "amount": str(amount),
            "currency": order.currency,
            "refundedAmount": str(order.refunded_amount),
            "status": order.status.value,
        },
        now=now,
    )
    return RefundResult(order, record, refund_lines, created=True)


def _refund_units(lines: Sequence[OrderLine], draft: RefundDraft) -> dict[int, int]:
    """line id → units to refund; REFUND_EXCEEDS naming each line asked beyond what is left
    (NOT_FOUND for a line of another order)."""
    left = {line.id: line.quantity - line.refunded_quantity for line in lines}
    if draft.lines is None:
        units = {line_id: n for line_id, n in left.items() if n > 0}
        if not units:
            raise DomainError.one(
                OrderErrorCode.REFUND_EXCEEDS, "Nothing is left to refund.", "lines"
            )
        return units
    by_id = {line.id: line for line in lines}
    problems: list[Problem] = []
    for index, asked in enumerate(draft.lines):
        line = by_id.get(asked.line_id)
        if line is None:
            problems.append(
                Problem(
                    OrderErrorCode.NOT_FOUND,
                    "No such line on this order.",
                    ("lines", str(index), "lineId"),
                )
            )
        elif asked.quantity > left[line.id]:
            problems.append(
                Problem(
                    OrderErrorCode.REFUND_EXCEEDS,
                    f"Line {line.line_no} ({line.sku_code}): {left[line.id]} of "
                    f"{line.quantity} left to refund; {asked.quantity} asked.",
                    ("lines", str(index), "quantity"),
                )
            )
    if problems:
        raise DomainError(problems)
    return {asked.line_id: asked.quantity for asked in draft.lines}


async def _refund_points(
    session: AsyncSession,
    order: Order,
    record: OrderRefund,
    lines: Sequence[OrderLine],
    units: dict[int, int],
    whole: bool,
    now: datetime,
    policy: PointsPolicy,
) -> None:
    """Take back the refund's share of the points the order earned and give back its share
    of the points it paid with. The share is cumulative (refunded so far ÷ paid, or units
    refunded so far ÷ units when nothing was paid) less what earlier refunds moved, so
    rounding never drifts and the refund in full moves exactly what is left."""
    if order.customer_id is None or (order.points_earned <= 0 and order.points_used <= 0):
        return
    earlier_reversed, earlier_returned = (
        await session.execute(
            select(
                func.coalesce(func.sum(OrderRefund.points_reversed), 0),
                func.coalesce(func.sum(OrderRefund.points_returned), 0),
            ).where(OrderRefund.order_id == order.id, OrderRefund.id != record.id)
        )
    ).one()
    if order.total > 0:
        part, of = order.refunded_amount, order.total
    else:  # ``lines`` as read before this refund's units were added
        part = Decimal(sum(line.refunded_quantity for line in lines) + sum(units.values()))
        of = Decimal(sum(line.quantity for line in lines))

    def due(points: int, moved: int) -> int:
        return (points if whole else _share(points, part, of)) - int(moved)

    reason = f"refund of order {order.id}"
    reversed_points = returned_points = 0
    if (take := due(order.points_earned, earlier_reversed)) > 0:
        entry = await loyalty.reverse_part(
            session,
            earning_source_type=ORDER_SOURCE,
            earning_source_id=str(order.id),
            points=take,
            source_type=REFUND_SOURCE,
            source_id=str(record.id),
            reason=reason,
            actor=record.actor,
            now=now,
            customer_id=order.customer_id,
        )
        if entry is not None:
            reversed_points = entry.debt_delta - entry.amount - entry.pending_delta
    if (give := due(order.points_used, earlier_returned)) > 0:
        entry = await loyalty.return_spent(
            session,
            redemption_source_type=ORDER_SOURCE,
            redemption_source_id=str(order.id),
            points=give,
            source_type=REFUND_SOURCE,
            source_id=str(record.id),
            reason=reason,
            actor=record.actor,
            now=now,
            customer_id=order.customer_id,
            policy=policy,
        )
        if entry is not None:
            returned_points = entry.amount - entry.debt_delta
    # Set together, after the ledger's reads: one UPDATE of the refund row.
    record.points_reversed, record.points_returned = reversed_points, returned_points
    await session.flush()
