"""``stockAdjust``: staff and partner systems set (a count) or correct (a delta) a location's
stock of a SKU and its safety level, idempotent by a key scoped to the caller's partner (or
HQ). On hand never goes below what pickup orders hold reserved."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.catalog.models import Sku
from api.db import advisory_lock
from api.errors import DomainError, Problem
from api.inventory.models import MovementKind, StockLevel, StockMovement
from api.inventory.movements import MAX_REASON, insert_into, track_alert
from api.partners.models import Store
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


MAX_QUANTITY = 10**9  # fits GraphQL Int (32-bit) with room; no location holds more
MAX_KEY = 100  # the scoped key must fit StockMovement.source_id (160)
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: keys are machine-made
ADJUST_SOURCES = {AdjustMode.SET: "adjust.set", AdjustMode.DELTA: "adjust.delta"}


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
    replayed = await _first_adjustment(session, source_id, draft)
    if replayed is not None:
        return replayed
    level_id, on_hand, reserved, safety = await _lock_level(session, draft, now)
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
    await track_alert(
        session,
        draft.store_id,
        draft.sku_id,
        before=(on_hand - reserved, safety),
        after=(target - level.reserved, new_safety),
        now=now,
    )
    return AdjustResult(movement, level, replayed=False)


async def _first_adjustment(
    session: AsyncSession, source_id: str, draft: AdjustDraft
) -> AdjustResult | None:
    """The adjustment a retry with this key made first, if any (IDEMPOTENCY_KEY_REUSED when
    it asked for something else)."""
    first = await session.scalar(
        select(StockMovement)
        .where(
            StockMovement.source_type.in_(ADJUST_SOURCES.values()),
            StockMovement.source_id == source_id,
        )
        .limit(1)
    )
    if first is None:
        return None
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


async def _lock_level(
    session: AsyncSession, draft: AdjustDraft, now: datetime
) -> tuple[int, int, int, int]:
    """The level (id, on hand, reserved, safety level), created if the SKU was never stocked
    here, and locked."""
    # Get the level, creating it if the SKU was never stocked here, and lock it (a no-op
    # update of a conflicting row locks it on PostgreSQL): the delta of a count needs the
    # on hand it replaces, and no reservation may slip in between.
    level_id, on_hand, reserved, safety = (
        await session.execute(
            insert_into(session, StockLevel)
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
    return level_id, on_hand, reserved, safety
