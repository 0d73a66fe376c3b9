"""Spending points (an order paying with points), and giving back what a cancelled,
expired or refunded order spent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import DomainError
from api.loyalty.errors import PointsErrorCode
from api.loyalty.ledger import (
    SOURCE_ID_MAX,
    SOURCE_TYPE_MAX,
    LockedAccount,
    Move,
    check_points,
    check_source,
    check_text,
    consume,
    credit_lot,
    existing_entry,
    lock_account,
    person_ids,
    settle,
    write_entry,
)
from api.loyalty.models import EntryKind, PointsEntry, PointsLot
from api.loyalty.rules import PointsPolicy


async def redeem(
    session: AsyncSession,
    customer_id: int,
    points: int,
    *,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
) -> PointsEntry:
    """Spend ``points`` (an order paying with points), consuming the lots that expire first.

    INSUFFICIENT_POINTS when the spendable balance is short. Idempotent by source; the same
    source with another amount is IDEMPOTENCY_KEY_REUSED.
    """
    check_points(points)
    check_source(source_type, source_id, reason, actor)
    account = await lock_account(session, customer_id, now)
    existing = await existing_entry(
        session, EntryKind.REDEEM, source_type, source_id, account.customer_id
    )
    if existing is not None:
        if not _same_call(existing, amount=-points):
            raise DomainError.one(
                PointsErrorCode.IDEMPOTENCY_KEY_REUSED,
                "This source already redeemed a different amount.",
                "sourceId",
            )
        return existing
    return await spend(
        session,
        account,
        points,
        EntryKind.REDEEM,
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
    )


def _same_call(entry: PointsEntry, **expected: Any) -> bool:
    return all(getattr(entry, name) == value for name, value in expected.items())


async def spend(
    session: AsyncSession,
    account: LockedAccount,
    points: int,
    kind: EntryKind,
    *,
    reason: str,
    source_type: str,
    source_id: str,
    actor: str | None,
    now: datetime,
) -> PointsEntry:
    """Spend ``points`` of a locked account, its due lots settled first, FIFO by expiry (a
    REDEEM, or an ADJUST that deducts). INSUFFICIENT_POINTS when the balance is short."""
    await settle(session, account, now)
    if account.balance < points:
        raise DomainError.one(
            PointsErrorCode.INSUFFICIENT_POINTS,
            f"Only {account.balance} points are available; {points} requested.",
            "points" if kind is EntryKind.REDEEM else "amount",
        )
    taken = await consume(session, account.customer_id, points, now)
    if taken != points:  # the cache says the lots hold it: they must
        raise RuntimeError(f"points account {account.customer_id}: lots disagree with balance")
    return await write_entry(
        session,
        account,
        kind,
        Move(amount=-points),
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
    )


async def return_spent(
    session: AsyncSession,
    *,
    redemption_source_type: str,
    redemption_source_id: str,
    points: int,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
    customer_id: int | None = None,
    policy: PointsPolicy,
) -> PointsEntry | None:
    """Give back ``points`` of the redemption of ``(redemption_source_type,
    redemption_source_id)`` under a source of its own (the order that spent them was
    cancelled, expired or refunded).

    The points come back as a new lot, available at once (settling debt first, like any
    points that become available), recorded as a RETURN entry: a redemption undone, so level
    qualification, which counts earnings, is untouched. The lot
    expires when points earned at the moment of the redemption would (per ``policy``):
    which lots paid is not recorded, so this is the latest any of them could have expired,
    and cancelling an order never extends points beyond it. Points whose expiry has passed
    by then are not given back (they would have expired anyway).

    Never more than the redemption has left: its points less what returns gave back (their
    lots carry the redemption's source). None when nothing is given back. Idempotent by its
    own source. ``customer_id`` picks the redemption as for ``reverse``.
    """
    check_points(points)
    check_source(source_type, source_id, reason, actor)
    check_text(redemption_source_type, "redemptionSourceType", SOURCE_TYPE_MAX)
    check_text(redemption_source_id, "redemptionSourceId", SOURCE_ID_MAX)
    redemption = await _redemption(
        session, redemption_source_type, redemption_source_id, customer_id
    )
    account = await lock_account(session, redemption.customer_id, now)
    existing = await existing_entry(
        session, EntryKind.RETURN, source_type, source_id, account.customer_id
    )
    if existing is not None:
        return existing
    expires_at = policy.expires_at(redemption.created_at)
    if expires_at is not None and expires_at <= now:
        return None
    returned = await _returned(session, account, redemption_source_type, redemption_source_id)
    give = min(points, -redemption.amount - returned)
    if give <= 0:
        return None
    lot_id, move = await credit_lot(
        session,
        account,
        give,
        available_at=now,
        expires_at=expires_at,
        source_type=redemption_source_type,
        source_id=redemption_source_id,
        now=now,
    )
    return await write_entry(
        session,
        account,
        EntryKind.RETURN,
        move,
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
        lot_id=lot_id,
    )


async def _redemption(
    session: AsyncSession, source_type: str, source_id: str, customer_id: int | None
) -> PointsEntry:
    """The one REDEEM entry of a source (``customer_id`` picks it as for ``reverse``)."""
    stmt = select(PointsEntry).where(
        PointsEntry.source_type == source_type,
        PointsEntry.source_id == source_id,
        PointsEntry.kind == EntryKind.REDEEM,
    )
    if customer_id is not None:
        stmt = stmt.where(PointsEntry.customer_id.in_(person_ids(customer_id)))
    redemptions = (await session.scalars(stmt.order_by(PointsEntry.id))).all()
    if len(redemptions) > 1 and customer_id is not None:
        exact = [r for r in redemptions if r.customer_id == customer_id]
        redemptions = exact if len(exact) == 1 else redemptions
    if not redemptions:
        raise DomainError.one(
            PointsErrorCode.NOT_FOUND, "No redemption from this source.", "redemptionSourceId"
        )
    if len(redemptions) > 1:
        raise DomainError.one(
            PointsErrorCode.AMBIGUOUS_SOURCE,
            "Several customers redeemed under this source; name the customer.",
            "customerId",
        )
    return redemptions[0]


async def _returned(
    session: AsyncSession, account: LockedAccount, source_type: str, source_id: str
) -> int:
    """What returns gave back so far of the redemption of ``(source_type, source_id)``."""
    # Return lots carry the redemption's source, and move with the person's lots in merges.
    returned = (
        await session.execute(
            select(func.coalesce(func.sum(PointsEntry.amount - PointsEntry.debt_delta), 0))
            .join(PointsLot, PointsLot.id == PointsEntry.lot_id)
            .where(
                PointsEntry.customer_id.in_(person_ids(account.customer_id)),
                PointsEntry.kind == EntryKind.RETURN,
                PointsLot.customer_id == account.customer_id,
                PointsLot.source_type == source_type,
                PointsLot.source_id == source_id,
            )
        )
    ).scalar_one()
    return int(returned)
