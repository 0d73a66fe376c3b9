"""Purchase orders (采购单) a partner places with the brand, against its credit line (授信).

The life of an order::

    DRAFT ─submit─▶ SUBMITTED ─approve─▶ APPROVED ─ship─▶ SHIPPED ─receive─▶ RECEIVED ─pay─▶ CLOSED
      │                 │ reject ▶ REJECTED  │
      └────cancel───────┴────────────────────┴──▶ CANCELLED

Credit: submitting takes the order's total from the partner's available credit, in one
conditional ``UPDATE partner_credit SET used = used + :t WHERE used + :t <= limit
RETURNING`` (``db.update_returning``); no returned row means it does not fit (CREDIT_EXCEEDED)
and the whole submission rolls back. Rejecting, cancelling and paying give it back the same
way. The CHECK ``0 <= used <= limit`` backs the guard, so no interleaving overdraws a line.

Each step is a conditional UPDATE of the order's status from the state it must be in; a step
that lost a race to another (two receipts of one shipment) finds no row and is BAD_STATE,
so its stock move never happens. Lock order: the order's row, then the credit row, then the
stock rows (ascending SKU, in the inventory service).

Stock moves go through the inventory service: shipping dispatches from an HQ warehouse,
receiving takes the units in at the partner's location, each with its movement.

Each state change is written to the outbox (``purchase_order.<status>`` for the partner);
the mutation's audit entry is the runner's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.db import insert_or_get, update_returning
from api.errors import DomainError, Problem
from api.inventory import movements as inventory
from api.outbox.service import enqueue
from api.partners.models import Partner, Store, StoreStatus
from api.purchasing import allocation, credit_lines
from api.purchasing.errors import PurchasingErrorCode, require_hq
from api.purchasing.models import (
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
)
from api.purchasing.pricing import MAX_QUANTITY, Quote, quote_lines

Status = PurchaseOrderStatus
Code = PurchasingErrorCode

MAX_LINES = 200
MAX_KEY = 100
MAX_NOTE = 500
MAX_TRACKING = 64
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: keys are machine-made

PURCHASE_ORDER_KEYSET = (PurchaseOrder.id,)
# Steps that give credit back: the order held it in these states.
_HOLDS_CREDIT = (Status.SUBMITTED, Status.APPROVED, Status.ALLOCATED)
_CANCELLABLE = (Status.DRAFT, *_HOLDS_CREDIT)


# --- creating -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderDraft:
    store_id: int
    lines: Sequence[tuple[int, int]]  # (sku id, quantity), in the client's order
    idempotency_key: str
    partner_id: int | None = None  # HQ names the partner; a partner's own is implied
    note: str | None = None


def _check_draft(draft: OrderDraft) -> None:
    problems: list[Problem] = []
    if not 0 < len(draft.lines) <= MAX_LINES:
        problems.append(Problem(Code.INVALID, f"An order has 1 to {MAX_LINES} lines.", ("lines",)))
    seen: set[int] = set()
    for index, (sku_id, quantity) in enumerate(draft.lines):
        if sku_id in seen:
            problems.append(
                Problem(Code.INVALID, "A SKU appears on one line.", ("lines", str(index), "skuId"))
            )
        seen.add(sku_id)
        if not 0 < quantity <= MAX_QUANTITY:
            problems.append(
                Problem(
                    Code.INVALID,
                    f"A quantity is 1 to {MAX_QUANTITY}.",
                    ("lines", str(index), "quantity"),
                )
            )
    if not 0 < len(draft.idempotency_key) <= MAX_KEY or not _KEY.fullmatch(draft.idempotency_key):
        problems.append(
            Problem(
                Code.INVALID,
                f"An idempotency key is 1 to {MAX_KEY} printable ASCII characters, no spaces.",
                ("idempotencyKey",),
            )
        )
    if draft.note is not None and len(draft.note) > MAX_NOTE:
        problems.append(
            Problem(Code.INVALID, f"A note is at most {MAX_NOTE} characters.", ("note",))
        )
    if problems:
        raise DomainError(problems)


def _check_quantities(draft: OrderDraft, quotes: Mapping[int, Quote]) -> None:
    problems = []
    for index, (sku_id, quantity) in enumerate(draft.lines):
        quote = quotes[sku_id]
        path = ("lines", str(index), "quantity")
        if quantity < quote.min_quantity:
            problems.append(
                Problem(
                    Code.BELOW_MINIMUM,
                    f"SKU {sku_id}: at least {quote.min_quantity} units an order.",
                    path,
                )
            )
        elif quantity % quote.pack_size:
            problems.append(
                Problem(
                    Code.WRONG_PACK_SIZE,
                    f"SKU {sku_id}: whole packs of {quote.pack_size} units.",
                    path,
                )
            )
    currencies = {q.currency for q in quotes.values()}
    if len(currencies) > 1:
        problems.append(
            Problem(Code.INVALID, "The lines are priced in more than one currency.", ("lines",))
        )
    if problems:
        raise DomainError(problems)


async def _ordering_partner(
    session: AsyncSession, principal: Principal, draft: OrderDraft
) -> Partner:
    if principal.is_hq:
        if draft.partner_id is None:
            raise DomainError.one(Code.REQUIRED, "HQ names the partner it orders for.", "partnerId")
        partner_id = draft.partner_id
    elif principal.partner_id is None or draft.partner_id not in (None, principal.partner_id):
        # Another partner's id answers like a missing one.
        raise DomainError.one(Code.NOT_FOUND, "No such partner.", "partnerId")
    else:
        partner_id = principal.partner_id
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise DomainError.one(Code.NOT_FOUND, "No such partner.", "partnerId")
    store = await session.get(Store, draft.store_id)
    if store is None or store.partner_id != partner.id:
        raise DomainError.one(Code.NOT_FOUND, "No such location of the partner.", "storeId")
    if store.status is not StoreStatus.OPEN:
        raise DomainError.one(Code.INVALID, "The location is closed.", "storeId")
    return partner


@dataclass(frozen=True, slots=True)
class Created:
    order: PurchaseOrder
    created: bool  # False: a retry with the same key, the first order


async def create_order(
    session: AsyncSession, principal: Principal, draft: OrderDraft, *, now: datetime
) -> Created:
    """A DRAFT purchase order priced now; a retry with the same key returns the first."""
    _check_draft(draft)
    partner = await _ordering_partner(session, principal, draft)
    quotes = await quote_lines(session, partner, dict(draft.lines), now)
    _check_quantities(draft, quotes)
    order, created = await insert_or_get(
        session,
        PurchaseOrder,
        {
            "partner_id": partner.id,
            "store_id": draft.store_id,
            "status": Status.DRAFT,
            "currency": next(iter(quotes.values())).currency,
            "total_cents": sum(q.line_total_cents for q in quotes.values()),
            "idempotency_key": draft.idempotency_key,
            "note": draft.note,
            "created_by": principal.subject,
            "created_at": now,
            "updated_at": now,
        },
        ["partner_id", "idempotency_key"],
    )
    if not created:
        lines = (await lines_of(session, [order.id]))[order.id]
        same = order.store_id == draft.store_id and sorted(
            (line.sku_id, line.quantity) for line in lines
        ) == sorted(draft.lines)
        if not same:
            raise DomainError.one(
                Code.IDEMPOTENCY_KEY_REUSED,
                "This key was used for another order; use a new key for a new order.",
                "idempotencyKey",
            )
        return Created(order, False)
    await session.execute(
        insert(PurchaseOrderLine),
        [
            {
                "purchase_order_id": order.id,
                "sku_id": q.sku_id,
                "quantity": q.quantity,
                "price_list_id": q.price_list_id,
                "list_price_cents": q.list_price_cents,
                "discount_bp": q.discount_bp,
                "unit_price_cents": q.unit_price_cents,
                "line_total_cents": q.line_total_cents,
            }
            for q in (quotes[sku_id] for sku_id, _ in draft.lines)
        ],
    )
    await _announce(session, order, now)
    return Created(order, True)


# --- the steps --------------------------------------------------------------------------------


async def _scoped_order(
    session: AsyncSession, principal: Principal, order_id: int
) -> PurchaseOrder:
    order = await session.scalar(
        restrict(
            select(PurchaseOrder).where(PurchaseOrder.id == order_id), PurchaseOrder, principal
        )
    )
    if order is None:
        raise DomainError.one(Code.NOT_FOUND, "No such purchase order.", "id")
    return order


async def _move_status(
    session: AsyncSession,
    order: PurchaseOrder,
    to: Status,
    now: datetime,
    **values: Any,
) -> PurchaseOrder:
    """``order.status → to``, only if it is still what was read; BAD_STATE otherwise.

    "What was read" includes the warehouse: an allocation run that pinned the order (and
    reserved for it) since it was read makes a cancel or a shipment read it again, or the
    reservation would be missed."""
    read_from = order.ship_from_store_id
    same_warehouse = (
        PurchaseOrder.ship_from_store_id.is_(None)
        if read_from is None
        else PurchaseOrder.ship_from_store_id == read_from
    )
    row = await update_returning(
        session,
        update(PurchaseOrder)
        .where(PurchaseOrder.id == order.id, PurchaseOrder.status == order.status, same_warehouse)
        .values(status=to, updated_at=now, **values)
        .returning(PurchaseOrder)
        # The order was read into this session: refresh it from the returned row.
        .execution_options(populate_existing=True),
    )
    if row is None:
        raise DomainError.one(Code.BAD_STATE, "The order changed meanwhile; read it again.", "id")
    moved: PurchaseOrder = row[0]
    await _announce(session, moved, now)
    return moved


def _require_state(order: PurchaseOrder, *allowed: Status) -> None:
    if order.status not in allowed:
        names = " or ".join(s.name for s in allowed)
        raise DomainError.one(
            Code.BAD_STATE, f"The order is {order.status.name}; this step needs {names}.", "id"
        )


async def _announce(session: AsyncSession, order: PurchaseOrder, now: datetime) -> None:
    await enqueue(
        session,
        f"purchase_order.{order.status.value}",
        f"partner:{order.partner_id}",
        {"purchaseOrderId": order.id, "status": order.status.value, "total": order.total_cents},
        now=now,
    )


async def submit(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> PurchaseOrder:
    """Send a draft to HQ, taking its total from the partner's credit (or refusing)."""
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, Status.DRAFT)
    moved = await _move_status(session, order, Status.SUBMITTED, now, submitted_at=now)
    await credit_lines.take_credit(session, moved, now)
    return moved


async def approve(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> PurchaseOrder:
    require_hq(principal, "Only HQ approves purchase orders.")
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, Status.SUBMITTED)
    return await _move_status(
        session, order, Status.APPROVED, now, decided_at=now, decided_by=principal.subject
    )


async def reject(
    session: AsyncSession, principal: Principal, order_id: int, reason: str, *, now: datetime
) -> PurchaseOrder:
    require_hq(principal, "Only HQ rejects purchase orders.")
    if not reason.strip() or len(reason) > MAX_NOTE:
        raise DomainError.one(Code.INVALID, "Say why, in 1 to 500 characters.", "reason")
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, Status.SUBMITTED)
    moved = await _move_status(
        session,
        order,
        Status.REJECTED,
        now,
        decided_at=now,
        decided_by=principal.subject,
        rejection_reason=reason.strip(),
    )
    await credit_lines.give_back_credit(session, moved, now)
    return moved


async def cancel(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> PurchaseOrder:
    """Withdraw an order before it ships (the partner or HQ); held credit comes back."""
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, *_CANCELLABLE)
    held = order.status in _HOLDS_CREDIT
    moved = await _move_status(session, order, Status.CANCELLED, now, cancelled_at=now)
    if held:
        await credit_lines.give_back_credit(session, moved, now)
    reserved = await allocation.allocated_items(session, order.id)
    if reserved and order.ship_from_store_id is not None:
        await inventory.release_reservation(
            session,
            order.ship_from_store_id,
            items=reserved,
            source_type=allocation.SOURCE,
            source_id=f"{order.id}:cancel",
            reason=f"purchase order {order.id} cancelled",
            actor=principal.subject,
            now=now,
        )
    return moved


async def ship(
    session: AsyncSession,
    principal: Principal,
    order_id: int,
    *,
    warehouse_id: int,
    tracking_number: str,
    now: datetime,
) -> PurchaseOrder:
    """HQ ships an approved order from one of its own locations: the units leave there."""
    require_hq(principal, "Only HQ ships purchase orders.")
    if not tracking_number.strip() or len(tracking_number) > MAX_TRACKING:
        raise DomainError.one(
            Code.INVALID, f"A tracking number is 1 to {MAX_TRACKING} characters.", "trackingNumber"
        )
    warehouse = await session.get(Store, warehouse_id)
    if warehouse is None or warehouse.partner_id is not None:
        raise DomainError.one(Code.NOT_FOUND, "No such HQ location.", "warehouseId")
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, Status.APPROVED, Status.ALLOCATED)
    if order.ship_from_store_id not in (None, warehouse_id):
        raise DomainError.one(
            Code.INVALID,
            "Its units are allocated at another warehouse; ship it from there.",
            "warehouseId",
        )
    moved = await _move_status(
        session,
        order,
        Status.SHIPPED,
        now,
        shipped_at=now,
        ship_from_store_id=warehouse_id,
        tracking_number=tracking_number.strip(),
    )
    reserved = await allocation.allocated_items(session, order.id)
    if reserved:
        await inventory.dispatch_reserved(
            session,
            warehouse_id,
            items=reserved,
            source_type=allocation.SOURCE,
            source_id=f"{order.id}:ship",
            reason=f"purchase order {order.id} shipped",
            actor=principal.subject,
            now=now,
        )
    # What was not allocated (back-ordered) leaves from what the warehouse has free.
    rest = {
        sku: quantity - reserved.get(sku, 0)
        for sku, quantity in (await _items(session, order.id)).items()
        if quantity > reserved.get(sku, 0)
    }
    try:
        await inventory.dispatch(
            session,
            warehouse_id,
            items=rest,
            source_type="purchase_order",
            source_id=str(order.id),
            reason=f"purchase order {order.id} shipped",
            actor=principal.subject,
            now=now,
        )
    except inventory.InsufficientStock as short:
        raise DomainError.one(
            Code.OUT_OF_STOCK,
            f"SKU {short.sku_id}: {short.requested} to ship, {short.available} available "
            "at the warehouse.",
            "warehouseId",
        ) from None
    return moved


async def receive(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> PurchaseOrder:
    """The partner (or HQ for it) takes a shipped order in: stock moves in at its location,
    once, however many receipts race."""
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, Status.SHIPPED)
    moved = await _move_status(session, order, Status.RECEIVED, now, received_at=now)
    await inventory.receive(
        session,
        order.store_id,
        items=await _items(session, order.id),
        source_type="purchase_order",
        source_id=str(order.id),
        reason=f"purchase order {order.id} received",
        actor=principal.subject,
        now=now,
    )
    return moved


async def record_payment(
    session: AsyncSession, principal: Principal, order_id: int, *, now: datetime
) -> PurchaseOrder:
    """HQ finance records a received order paid: it closes and its credit comes back."""
    require_hq(principal, "Only HQ records payments.")
    order = await _scoped_order(session, principal, order_id)
    _require_state(order, Status.RECEIVED)
    moved = await _move_status(session, order, Status.CLOSED, now, paid_at=now)
    await credit_lines.give_back_credit(session, moved, now)
    return moved


async def _items(session: AsyncSession, order_id: int) -> dict[int, int]:
    rows = await session.execute(
        select(PurchaseOrderLine.sku_id, PurchaseOrderLine.quantity).where(
            PurchaseOrderLine.purchase_order_id == order_id
        )
    )
    return {sku_id: quantity for sku_id, quantity in rows}


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderFilter:
    statuses: Sequence[Status] = ()
    partner_ids: Sequence[int] = ()


def orders_query(principal: Principal, where: OrderFilter | None = None) -> Select[Any]:
    stmt = restrict(select(PurchaseOrder), PurchaseOrder, principal)
    if where is not None and where.statuses:
        stmt = stmt.where(PurchaseOrder.status.in_(where.statuses))
    if where is not None and where.partner_ids:
        stmt = stmt.where(PurchaseOrder.partner_id.in_(where.partner_ids))
    return stmt


async def orders_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, PurchaseOrder]:
    if not ids:
        return {}
    rows = await session.scalars(orders_query(principal).where(PurchaseOrder.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def lines_of(
    session: AsyncSession, order_ids: Sequence[int]
) -> dict[int, list[PurchaseOrderLine]]:
    """Each order's lines in line order: one statement for all of them. The orders were
    read through ``restrict``; their lines are theirs."""
    found: dict[int, list[PurchaseOrderLine]] = {k: [] for k in order_ids}
    if not order_ids:
        return found
    rows = await session.scalars(
        select(PurchaseOrderLine)
        .where(PurchaseOrderLine.purchase_order_id.in_(set(order_ids)))
        .order_by(PurchaseOrderLine.id)
    )
    for row in rows:
        found[row.purchase_order_id].append(row)
    return found
