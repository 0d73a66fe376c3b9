"""Stock moved by orders at a location (HQ warehouses and stores): reserved, released, sold,
restocked; with the low-stock alerts (安全库存) the moves raise and resolve.

Plain async functions over a session; no GraphQL here. Invariant 3 (reserved never exceeds
on hand) is held by conditional writes, never by a read followed by a write:

* ``UPDATE stock_level SET reserved = reserved + :q WHERE ... AND on_hand - reserved >= :q
  RETURNING ...``: a returned row means the guard held and the change is made; none means
  nothing changed (``InsufficientStock``). The CHECK constraints back the guards up.
* SKUs are changed in ascending sku_id order, so two multi-SKU orders lock rows in the same
  order and cannot deadlock.
* Every change writes a movement with the level after it; ``(source_type, source_id, kind,
  store_id, sku_id)`` is unique, so a second change from the same source fails and rolls its
  transaction back instead of landing twice.
* An alert is raised when available stock (on hand - reserved) crosses below the safety
  level and resolved when it is back at or above it. The crossing is read off the guarded
  UPDATE's own returned row, which the row lock makes exact under concurrency; the partial
  unique index keeps one open alert per (location, SKU) anyway.

Setting or correcting stock by hand is ``adjusting`` (``stockAdjust``); reading it ``queries``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api import events
from api.db import update_returning
from api.inventory.models import MovementKind, StockAlert, StockLevel, StockMovement


class InsufficientStock(Exception):
    """Fewer units available (on hand - reserved) than asked for. Callers turn it into a
    UserError naming the line; the transaction it happened in must roll back."""

    def __init__(self, sku_id: int, requested: int, available: int) -> None:
        super().__init__(f"SKU {sku_id}: {requested} asked for, {available} available")
        self.sku_id = sku_id
        self.requested = requested
        self.available = available


class ReservationMismatch(Exception):
    """A release or pickup of more units than the location holds reserved: a caller's bug
    (every reservation is made by ``reserve``), never an expected outcome."""


MAX_REASON = 200  # StockMovement.reason


@dataclass(frozen=True, slots=True)
class _Change:
    kind: MovementKind
    on_hand: int  # the sign of the change to on hand
    reserved: int  # the sign of the change to reserved

    def guard(self, quantity: int) -> ColumnElement[bool] | None:
        if self.on_hand - self.reserved < 0:  # takes from what is available
            return StockLevel.on_hand - StockLevel.reserved >= quantity
        if self.reserved < 0:  # takes from what is reserved
            return StockLevel.reserved >= quantity
        return None


_RESERVE = _Change(MovementKind.RESERVE, 0, +1)
_RELEASE = _Change(MovementKind.RELEASE, 0, -1)
_COMMIT = _Change(MovementKind.SALE, -1, -1)
_DEDUCT = _Change(MovementKind.SALE, -1, 0)
_RESTOCK = _Change(MovementKind.RESTOCK, +1, 0)
_DISPATCH = _Change(MovementKind.DISPATCH, -1, 0)
_DISPATCH_RESERVED = _Change(MovementKind.DISPATCH, -1, -1)
_RECEIPT = _Change(MovementKind.RECEIPT, +1, 0)


def insert_into(session: AsyncSession, model: type) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


async def _available(session: AsyncSession, store_id: int, sku_id: int) -> int:
    found = await session.scalar(
        select(StockLevel.on_hand - StockLevel.reserved).where(
            StockLevel.store_id == store_id, StockLevel.sku_id == sku_id
        )
    )
    return found or 0


async def _apply(
    session: AsyncSession,
    store_id: int,
    sku_id: int,
    quantity: int,
    change: _Change,
    now: datetime,
) -> tuple[int, int, int]:
    """Make one change to one level; (on hand, reserved, safety level) after it."""
    if change.on_hand > 0:
        # Units coming in may land where the SKU was never stocked: create the level.
        stmt = (
            insert_into(session, StockLevel)
            .values(
                store_id=store_id,
                sku_id=sku_id,
                on_hand=quantity,
                reserved=0,
                safety_level=0,
                updated_at=now,
            )
            .on_conflict_do_update(
                index_elements=["store_id", "sku_id"],
                set_={"on_hand": StockLevel.on_hand + quantity, "updated_at": now},
            )
            .returning(StockLevel.on_hand, StockLevel.reserved, StockLevel.safety_level)
        )
        on_hand, reserved, safety = (await session.execute(stmt)).one()
        return on_hand, reserved, safety
    values: dict[str, Any] = {"updated_at": now}
    if change.on_hand:
        values["on_hand"] = StockLevel.on_hand + change.on_hand * quantity
    if change.reserved:
        values["reserved"] = StockLevel.reserved + change.reserved * quantity
    guard = change.guard(quantity)
    assert guard is not None
    row = await update_returning(
        session,
        update(StockLevel)
        .where(StockLevel.store_id == store_id, StockLevel.sku_id == sku_id, guard)
        .values(**values)
        .returning(StockLevel.on_hand, StockLevel.reserved, StockLevel.safety_level),
    )
    if row is not None:
        return row.on_hand, row.reserved, row.safety_level
    if change.on_hand - change.reserved < 0:
        raise InsufficientStock(sku_id, quantity, await _available(session, store_id, sku_id))
    raise ReservationMismatch(
        f"store {store_id}, SKU {sku_id}: {change.kind.value} of {quantity} units exceeds "
        "what is reserved"
    )


async def track_alert(
    session: AsyncSession,
    store_id: int,
    sku_id: int,
    *,
    before: tuple[int, int],
    after: tuple[int, int],
    now: datetime,
) -> None:
    """Raise or resolve the low-stock alert when (available, safety level) crosses the line
    between ``before`` and ``after``."""
    was_low = before[0] < before[1]
    is_low = after[0] < after[1]
    if is_low and not was_low:
        available, safety_level = after
        alert_id = await session.scalar(
            insert_into(session, StockAlert)
            .values(
                store_id=store_id,
                sku_id=sku_id,
                available=available,
                safety_level=safety_level,
                raised_at=now,
            )
            .on_conflict_do_nothing(
                index_elements=["store_id", "sku_id"],
                index_where=StockAlert.resolved_at.is_(None),
            )
            .returning(StockAlert.id)
        )
        if alert_id is not None:
            events.emit(
                session,
                events.stock_alerts_channel(store_id),
                {
                    "alertId": alert_id,
                    "storeId": store_id,
                    "skuId": sku_id,
                    "available": available,
                    "safetyLevel": safety_level,
                },
            )
    elif was_low and not is_low:
        await session.execute(
            update(StockAlert)
            .where(
                StockAlert.store_id == store_id,
                StockAlert.sku_id == sku_id,
                StockAlert.resolved_at.is_(None),
            )
            .values(resolved_at=now)
        )


def _is_count(quantity: object) -> bool:
    """A positive int (not a bool): callers outside the type checker pass what they read."""
    return isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0


async def _move(
    session: AsyncSession,
    store_id: int,
    items: Mapping[int, int],
    change: _Change,
    *,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    for sku_id, quantity in items.items():
        if not _is_count(quantity):
            raise ValueError(f"SKU {sku_id}: a quantity must be a positive int, not {quantity!r}")
    movements = []
    for sku_id in sorted(items):  # the lock order
        quantity = items[sku_id]
        on_hand, reserved, safety = await _apply(session, store_id, sku_id, quantity, change, now)
        on_hand_delta, reserved_delta = change.on_hand * quantity, change.reserved * quantity
        movements.append(
            {
                "store_id": store_id,
                "sku_id": sku_id,
                "kind": change.kind,
                "on_hand_delta": on_hand_delta,
                "reserved_delta": reserved_delta,
                "on_hand_after": on_hand,
                "reserved_after": reserved,
                "reason": reason[:MAX_REASON],
                "source_type": source_type,
                "source_id": source_id,
                "actor": actor,
                "created_at": now,
            }
        )
        available = on_hand - reserved
        await track_alert(
            session,
            store_id,
            sku_id,
            before=(available - on_hand_delta + reserved_delta, safety),
            after=(available, safety),
            now=now,
        )
    if movements:
        # One statement for every SKU's movement (Core: an executemany, no ORM unit of work).
        table = StockMovement.__table__
        assert isinstance(table, Table)  # a declarative class types it only as a FromClause
        await session.execute(table.insert(), movements)


async def reserve(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Hold units for a pickup order: reserved += q where at least q are available. A SKU
    short of stock (or never stocked here) raises InsufficientStock; roll back then."""
    await _move(
        session,
        store_id,
        items,
        _RESERVE,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def release_reservation(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Give held units back (a pickup order cancelled or expired): reserved -= q."""
    await _move(
        session,
        store_id,
        items,
        _RELEASE,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def commit_reservation(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Sell held units (a pickup order picked up): on hand -= q and reserved -= q."""
    await _move(
        session,
        store_id,
        items,
        _COMMIT,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def deduct(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Sell units straight from what is available (a counter sale, a delivery from this
    location): on hand -= q where at least q are available, else InsufficientStock."""
    await _move(
        session,
        store_id,
        items,
        _DEDUCT,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def dispatch(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Send units to another location (a purchase order shipped from a warehouse): on hand
    -= q where at least q are available, else InsufficientStock."""
    await _move(
        session,
        store_id,
        items,
        _DISPATCH,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def dispatch_reserved(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Send units held for this shipment (an allocated purchase order): on hand -= q and
    reserved -= q."""
    await _move(
        session,
        store_id,
        items,
        _DISPATCH_RESERVED,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def receive(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Take in units from elsewhere (a purchase order received): on hand += q. The
    movement's unique source key makes a second receipt of the same source fail."""
    await _move(
        session,
        store_id,
        items,
        _RECEIPT,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )


async def restock(
    session: AsyncSession,
    store_id: int,
    *,
    items: Mapping[int, int],
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> None:
    """Put units back (a refunded sale returned to the shelf): on hand += q."""
    await _move(
        session,
        store_id,
        items,
        _RESTOCK,
        source_type=source_type,
        source_id=source_id,
        reason=reason,
        actor=actor,
        now=now,
    )
