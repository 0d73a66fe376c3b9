"""Stock per location (HQ warehouses and stores): on hand, reserved, safety level (安全库存).

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

``adjust`` is ``stockAdjust``: staff and partner systems set or correct stock, idempotent by
a key scoped to the caller's partner (or HQ).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api import events
from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog.models import Sku
from api.db import advisory_lock, update_returning
from api.errors import DomainError, Problem
from api.inventory.models import MovementKind, StockAlert, StockLevel, StockMovement
from api.partners.models import Store, StoreKind, StoreStatus
from api.partners.service import stores_query


class StockErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    # The change would leave on hand below what pickup orders hold reserved (or below 0).
    BELOW_RESERVED = "below_reserved"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


class AdjustMode(enum.Enum):
    SET = "set"  # a count: on hand is now `quantity`
    DELTA = "delta"  # a correction: on hand changes by `quantity` (may be negative)


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


MAX_QUANTITY = 10**9  # fits GraphQL Int (32-bit) with room; no location holds more
MAX_REASON = 200  # StockMovement.reason
MAX_KEY = 100  # the scoped key must fit StockMovement.source_id (160)
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: keys are machine-made
ADJUST_SOURCES = {AdjustMode.SET: "adjust.set", AdjustMode.DELTA: "adjust.delta"}

LEVEL_KEYSET = (StockLevel.id,)
MOVEMENT_KEYSET = (StockMovement.id,)
ALERT_KEYSET = (StockAlert.id,)


# --- the changes orders make ------------------------------------------------------------------


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


def _insert(session: AsyncSession, model: type) -> Any:
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
            _insert(session, StockLevel)
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


async def _track_alert(
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
            _insert(session, StockAlert)
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
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
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
        await _track_alert(
            session,
            store_id,
            sku_id,
            before=(available - on_hand_delta + reserved_delta, safety),
            after=(available, safety),
            now=now,
        )
    if movements:
        # One statement for every SKU's movement.
        await session.execute(StockMovement.__table__.insert(), movements)


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


# --- stockAdjust --------------------------------------------------------------------------------


@dataclass(slots=True)
class AdjustDraft:
    store_id: int
    sku_id: int
    mode: AdjustMode
    quantity: int
    reason: str
    idempotency_key: str
    safety_level: int | None = None  # None: keep it


@dataclass(frozen=True, slots=True)
class AdjustResult:
    movement: StockMovement
    level: StockLevel
    replayed: bool  # a retry with the same key: the first adjustment's movement


def key_scope(principal: Principal) -> str:
    """Whose idempotency keys these are: one partner's key never meets another's (or HQ's).
    Staff of an HQ-run store are the brand's own, and share HQ's."""
    return "hq" if principal.partner_id is None else f"partner:{principal.partner_id}"


def _check_adjust(draft: AdjustDraft) -> None:
    problems: list[Problem] = []
    quantity = draft.quantity
    if draft.mode is AdjustMode.SET and not 0 <= quantity <= MAX_QUANTITY:
        problems.append(
            Problem(
                StockErrorCode.INVALID,
                f"A count is from 0 to {MAX_QUANTITY} units.",
                ("quantity",),
            )
        )
    if draft.mode is AdjustMode.DELTA and not 0 < abs(quantity) <= MAX_QUANTITY:
        if quantity or draft.safety_level is None:
            problems.append(
                Problem(
                    StockErrorCode.INVALID,
                    f"A correction is 1 to {MAX_QUANTITY} units either way (0 only to set "
                    "the safety level alone).",
                    ("quantity",),
                )
            )
    if draft.safety_level is not None and not 0 <= draft.safety_level <= MAX_QUANTITY:
        problems.append(
            Problem(
                StockErrorCode.INVALID,
                f"A safety level is from 0 to {MAX_QUANTITY} units.",
                ("safetyLevel",),
            )
        )
    if not draft.reason.strip():
        problems.append(Problem(StockErrorCode.REQUIRED, "Say why stock changes.", ("reason",)))
    elif len(draft.reason) > MAX_REASON:
        problems.append(
            Problem(
                StockErrorCode.INVALID,
                f"A reason is at most {MAX_REASON} characters.",
                ("reason",),
            )
        )
    if not _KEY.fullmatch(draft.idempotency_key) or len(draft.idempotency_key) > MAX_KEY:
        problems.append(
            Problem(
                StockErrorCode.INVALID,
                f"An idempotency key is 1 to {MAX_KEY} printable ASCII characters, no spaces.",
                ("idempotencyKey",),
            )
        )
    if problems:
        raise DomainError(problems)


async def _check_target(session: AsyncSession, principal: Principal, draft: AdjustDraft) -> None:
    """The location must be one the caller may see (another partner's answers like a
    missing one); the SKU must exist (the catalog is brand-wide)."""
    store_seen, sku_known = (
        await session.execute(
            select(
                stores_query(principal).where(Store.id == draft.store_id).exists(),
                exists().where(Sku.id == draft.sku_id),
            )
        )
    ).one()
    problems = []
    if not store_seen:
        problems.append(Problem(StockErrorCode.NOT_FOUND, "No such location.", ("storeId",)))
    if not sku_known:
        problems.append(Problem(StockErrorCode.NOT_FOUND, "No such SKU.", ("skuId",)))
    if problems:
        raise DomainError(problems)


def _same_request(movement: StockMovement, draft: AdjustDraft) -> bool:
    if (movement.store_id, movement.sku_id, movement.reason) != (
        draft.store_id,
        draft.sku_id,
        draft.reason.strip(),
    ):
        return False
    if movement.source_type != ADJUST_SOURCES[draft.mode]:
        return False
    if movement.safety_level_set != draft.safety_level:
        return False
    if draft.mode is AdjustMode.SET:
        return movement.on_hand_after == draft.quantity
    return movement.on_hand_delta == draft.quantity


async def adjust(
    session: AsyncSession, principal: Principal, draft: AdjustDraft, *, now: datetime
) -> AdjustResult:
    """Set (a count) or correct (a delta) a location's stock of a SKU, and optionally its
    safety level. On hand never goes below what is reserved (BELOW_RESERVED).

    Idempotent by the key within the caller's scope (``key_scope``): a retry returns the
    first adjustment's movement; the same key with another location, SKU, mode, quantity,
    safety level or reason is IDEMPOTENCY_KEY_REUSED.
    """
    _check_adjust(draft)
    await _check_target(session, principal, draft)
    source_id = f"{key_scope(principal)}:{draft.idempotency_key}"
    # Concurrent retries queue here (PostgreSQL; SQLite writers are serialized already), so
    # the second finds the first's movement instead of adjusting again.
    await advisory_lock(session, f"stock-adjust:{source_id}")
    first = await session.scalar(
        select(StockMovement)
        .where(
            StockMovement.source_type.in_(ADJUST_SOURCES.values()),
            StockMovement.source_id == source_id,
        )
        .limit(1)
    )
    if first is not None:
        if not _same_request(first, draft):
            raise DomainError.one(
                StockErrorCode.IDEMPOTENCY_KEY_REUSED,
                "This idempotency key was used for a different adjustment.",
                "idempotencyKey",
            )
        level = await session.scalar(
            select(StockLevel).where(
                StockLevel.store_id == first.store_id, StockLevel.sku_id == first.sku_id
            )
        )
        assert level is not None
        return AdjustResult(first, level, replayed=True)

    # Get the level, creating it if the SKU was never stocked here, and lock it (a no-op
    # update of a conflicting row locks it on PostgreSQL): the delta of a count needs the
    # on hand it replaces, and no reservation may slip in between.
    level_id, on_hand, reserved, safety = (
        await session.execute(
            _insert(session, StockLevel)
            .values(
                store_id=draft.store_id,
                sku_id=draft.sku_id,
                on_hand=0,
                reserved=0,
                safety_level=0,
                updated_at=now,
            )
            .on_conflict_do_update(
                index_elements=["store_id", "sku_id"], set_={"on_hand": StockLevel.on_hand}
            )
            .returning(
                StockLevel.id, StockLevel.on_hand, StockLevel.reserved, StockLevel.safety_level
            )
        )
    ).one()
    target = draft.quantity if draft.mode is AdjustMode.SET else on_hand + draft.quantity
    if target < reserved:
        held = f"the {reserved} units reserved for pickup orders" if reserved else "0"
        raise DomainError.one(
            StockErrorCode.BELOW_RESERVED,
            f"On hand would be {target}: it cannot go below {held}.",
            "quantity",
        )
    if target > MAX_QUANTITY:
        raise DomainError.one(
            StockErrorCode.INVALID, f"On hand would be over {MAX_QUANTITY} units.", "quantity"
        )
    new_safety = safety if draft.safety_level is None else draft.safety_level
    level = (
        await session.execute(
            update(StockLevel)
            .where(StockLevel.id == level_id, StockLevel.reserved <= target)
            .values(on_hand=target, safety_level=new_safety, updated_at=now)
            .returning(StockLevel),
            execution_options={"synchronize_session": False, "populate_existing": True},
        )
    ).scalar_one()
    movement = StockMovement(
        store_id=draft.store_id,
        sku_id=draft.sku_id,
        kind=MovementKind.ADJUST,
        on_hand_delta=target - on_hand,
        reserved_delta=0,
        on_hand_after=target,
        reserved_after=level.reserved,
        safety_level_set=draft.safety_level,
        reason=draft.reason.strip(),
        source_type=ADJUST_SOURCES[draft.mode],
        source_id=source_id,
        actor=principal.subject,
        created_at=now,
    )
    session.add(movement)
    await session.flush()
    await _track_alert(
        session,
        draft.store_id,
        draft.sku_id,
        before=(on_hand - reserved, safety),
        after=(target - level.reserved, new_safety),
        now=now,
    )
    return AdjustResult(movement, level, replayed=False)


# --- reads --------------------------------------------------------------------------------------


@dataclass(slots=True)
class LevelFilter:
    store_ids: Sequence[int] = ()
    sku_ids: Sequence[int] = ()
    below_safety: bool | None = None  # True: available < safety level


@dataclass(slots=True)
class MovementFilter:
    store_ids: Sequence[int] = ()
    sku_ids: Sequence[int] = ()
    kinds: Sequence[MovementKind] = ()


@dataclass(slots=True)
class AlertFilter:
    store_ids: Sequence[int] = ()
    sku_ids: Sequence[int] = ()
    include_resolved: bool = False


def levels_query(principal: Principal, where: LevelFilter | None = None) -> Select[Any]:
    stmt = restrict(select(StockLevel), StockLevel, principal)
    if where is None:
        return stmt
    if where.store_ids:
        stmt = stmt.where(StockLevel.store_id.in_(where.store_ids))
    if where.sku_ids:
        stmt = stmt.where(StockLevel.sku_id.in_(where.sku_ids))
    if where.below_safety is not None:
        low = StockLevel.on_hand - StockLevel.reserved < StockLevel.safety_level
        stmt = stmt.where(low if where.below_safety else ~low)
    return stmt


def movements_query(principal: Principal, where: MovementFilter | None = None) -> Select[Any]:
    stmt = restrict(select(StockMovement), StockMovement, principal)
    if where is None:
        return stmt
    if where.store_ids:
        stmt = stmt.where(StockMovement.store_id.in_(where.store_ids))
    if where.sku_ids:
        stmt = stmt.where(StockMovement.sku_id.in_(where.sku_ids))
    if where.kinds:
        stmt = stmt.where(StockMovement.kind.in_(where.kinds))
    return stmt


def alerts_query(principal: Principal, where: AlertFilter | None = None) -> Select[Any]:
    stmt = restrict(select(StockAlert), StockAlert, principal)
    where = where or AlertFilter()
    if not where.include_resolved:
        stmt = stmt.where(StockAlert.resolved_at.is_(None))
    if where.store_ids:
        stmt = stmt.where(StockAlert.store_id.in_(where.store_ids))
    if where.sku_ids:
        stmt = stmt.where(StockAlert.sku_id.in_(where.sku_ids))
    return stmt


async def levels_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StockLevel]:
    if not ids:
        return {}
    rows = await session.scalars(levels_query(principal).where(StockLevel.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def movements_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StockMovement]:
    if not ids:
        return {}
    rows = await session.scalars(movements_query(principal).where(StockMovement.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def alerts_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StockAlert]:
    if not ids:
        return {}
    stmt = alerts_query(principal, AlertFilter(include_resolved=True))
    rows = await session.scalars(stmt.where(StockAlert.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def pickup_availability(
    session: AsyncSession, principal: Principal, pairs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], int | None]:
    """Units available of each (store, SKU), for a yes/no "can I pick this up there".

    None where the store is not one to ask about: not an open store offering pickup, or, for
    staff and partners, not one of theirs. Members may ask about any pickup store (that is
    how they choose one); they are only ever told yes or no, never a count.
    """
    if not pairs:
        return {}
    store_ids = {store for store, _ in pairs}
    stores = select(Store.id).where(
        Store.id.in_(store_ids),
        Store.offers_pickup.is_(True),
        Store.kind == StoreKind.STORE,
        Store.status == StoreStatus.OPEN,
    )
    if not principal.is_member:
        stores = restrict(stores, Store, principal)
    askable = set(await session.scalars(stores))
    found: dict[tuple[int, int], int] = {}
    if askable:
        rows = await session.execute(
            select(
                StockLevel.store_id, StockLevel.sku_id, StockLevel.on_hand - StockLevel.reserved
            ).where(
                tuple_(StockLevel.store_id, StockLevel.sku_id).in_(
                    [pair for pair in set(pairs) if pair[0] in askable]
                )
            )
        )
        found = {(store, sku): available for store, sku, available in rows}
    return {pair: (found.get(pair, 0) if pair[0] in askable else None) for pair in pairs}


__all__ = [
    "AdjustDraft",
    "AdjustMode",
    "AdjustResult",
    "InsufficientStock",
    "ReservationMismatch",
    "StockErrorCode",
    "adjust",
    "commit_reservation",
    "deduct",
    "release_reservation",
    "reserve",
    "restock",
]
