"""Manual grants and deductions of points (HQ's or a partner's adjustments)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.customers.models import Customer
from api.db import advisory_lock
from api.errors import DomainError
from api.loyalty.balances import may_see
from api.loyalty.errors import PointsErrorCode
from api.loyalty.ledger import (
    ACTOR_MAX,
    REASON_MAX,
    SOURCE_ID_MAX,
    LockedAccount,
    check_points,
    check_text,
    credit_lot,
    is_whole,
    lock_account,
    write_entry,
)
from api.loyalty.models import EntryKind, PointsEntry
from api.loyalty.rules import PointsPolicy
from api.loyalty.spending import spend

MAX_ADJUST_POINTS = 1_000_000
ADJUST_SOURCE = "adjust"  # ADJUST entries: source_id is the idempotency key


async def adjust(
    session: AsyncSession,
    customer_id: int,
    delta: int,
    *,
    idempotency_key: str,
    reason: str,
    actor: str | None,
    now: datetime,
    principal: Principal | None = None,
    policy: PointsPolicy,
) -> PointsEntry:
    """A manual grant (``delta`` > 0: a lot, available at once) or deduction (< 0: spent like
    a redemption; never below zero).

    The key is global: the same key retried returns the first entry (also after a merge,
    naming either the merged id or the survivor: one person); the same key with another
    person, amount or reason is IDEMPOTENCY_KEY_REUSED. Callers namespace keys per
    client (the API prefixes the caller's partner). With ``principal``, a customer it may not
    see is NOT_FOUND, checked under the lock on the customer the points would reach.
    """
    _check_adjustment(delta, idempotency_key, reason, actor)
    # The key, not the customer, is what must be unique: serialize its users first (then the
    # customer, like every writer), so two customers cannot both claim one key.
    await advisory_lock(session, f"points-adjust:{idempotency_key}")
    account = await lock_account(session, customer_id, now)
    if principal is not None and not await may_see(session, principal, account.customer_id):
        raise DomainError.one(PointsErrorCode.NOT_FOUND, "No such customer.", "customerId")
    existing = await _earlier_adjustment(session, account, idempotency_key, delta, reason)
    if existing is not None:
        return existing
    if delta < 0:
        return await spend(
            session,
            account,
            -delta,
            EntryKind.ADJUST,
            reason=reason,
            source_type=ADJUST_SOURCE,
            source_id=idempotency_key,
            actor=actor,
            now=now,
        )
    lot_id, move = await credit_lot(
        session,
        account,
        delta,
        available_at=now,
        expires_at=policy.expires_at(now),
        source_type=ADJUST_SOURCE,
        source_id=idempotency_key,
        now=now,
    )
    return await write_entry(
        session,
        account,
        EntryKind.ADJUST,
        move,
        reason=reason,
        source_type=ADJUST_SOURCE,
        source_id=idempotency_key,
        actor=actor,
        now=now,
        lot_id=lot_id,
    )


def _check_adjustment(delta: int, idempotency_key: str, reason: str, actor: str | None) -> None:
    if not is_whole(delta) or delta == 0:
        raise DomainError.one(PointsErrorCode.INVALID_AMOUNT, "The amount must not be 0.", "amount")
    check_points(abs(delta), MAX_ADJUST_POINTS, "amount")
    check_text(idempotency_key, "idempotencyKey", SOURCE_ID_MAX)
    check_text(reason, "reason", REASON_MAX)
    check_text(actor, "actor", ACTOR_MAX, required=False)


async def _earlier_adjustment(
    session: AsyncSession, account: LockedAccount, idempotency_key: str, delta: int, reason: str
) -> PointsEntry | None:
    """The adjustment made earlier under the key, if it was this one (the same person,
    amount and reason); IDEMPOTENCY_KEY_REUSED if it was another."""
    existing = (
        await session.scalars(
            select(PointsEntry)
            .where(
                PointsEntry.source_type == ADJUST_SOURCE,
                PointsEntry.source_id == idempotency_key,
                PointsEntry.kind == EntryKind.ADJUST,
            )
            .order_by(PointsEntry.id)
            .limit(1)
        )
    ).first()
    if existing is None:
        return None
    same_person = existing.customer_id == account.customer_id or (
        await _merged_into(session, existing.customer_id, account.customer_id)
    )
    if not (same_person and existing.reason == reason and _adjusted(existing) == delta):
        raise DomainError.one(
            PointsErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This idempotency key was used for a different adjustment.",
            "idempotencyKey",
        )
    return existing


async def _merged_into(session: AsyncSession, customer_id: int, live_id: int) -> bool:
    """Whether ``customer_id`` was merged into the live ``live_id`` (one hop: a merge
    re-points every redirect to its survivor)."""
    stmt = select(Customer.id).where(Customer.id == customer_id, Customer.merged_into_id == live_id)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


def _adjusted(entry: PointsEntry) -> int:
    """The delta an ADJUST entry was asked for (a grant may have settled debt first)."""
    return entry.amount - entry.debt_delta
