"""Taking earned points back, whole (``reverse``: a cancelled order) or in part
(``reverse_part``: a partial refund); what was already spent comes from other lots, or
becomes debt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import update_returning
from api.errors import DomainError
from api.loyalty.errors import PointsErrorCode
from api.loyalty.ledger import (
    LOT_SOURCE,
    SOURCE_ID_MAX,
    SOURCE_TYPE_MAX,
    LockedAccount,
    Move,
    check_points,
    check_source,
    check_text,
    close_lot,
    consume,
    lock_account,
    person_ids,
    settle,
    write_entry,
)
from api.loyalty.models import EntryKind, PointsEntry, PointsLot

MAX_REDIRECTS = 16  # a merge chain longer than this is corrupt data


async def reverse(
    session: AsyncSession,
    *,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
    customer_id: int | None = None,
) -> PointsEntry:
    """Undo the earning of ``(source_type, source_id)`` (a refund, a cancelled order).

    The lot's remaining points are taken back (a pending lot is simply cancelled). What was
    already spent from it comes from the customer's other lots, FIFO by expiry; any
    shortfall becomes debt, so the balance never goes below zero. What expired from the lot
    is not taken again, nor what partial reversals (``reverse_part``) took back already.
    Idempotent. ``customer_id`` picks the earning when one source credited several
    customers: any id of the person finds it (entries stay with the id they were written
    for; a merge moves only the lots), and when the person holds several (two customers
    earned from it before they were merged) the exact id picks one.
    """
    check_source(source_type, source_id, reason, actor)
    earning = await _earning(session, source_type, source_id, customer_id)
    assert earning.lot_id is not None
    account, lot = await _lock_lot_owner(session, earning.lot_id, now)
    done = await _reversal(session, lot.id, source_type, source_id)
    if done is not None:
        return done
    await settle(session, account, now)
    lot = await _read_lot(session, lot.id)
    own = lot.remaining
    # Spent: redeemed, or used to settle debt. Not what expired: that is gone already; nor
    # what earlier partial reversals took back.
    spent = (
        lot.amount
        - own
        - await _expired_from(session, lot.id)
        - await _reversed_from(session, account, lot.id)
    )
    move = Move(amount=-own) if lot.released else Move(pending_delta=-own)
    await close_lot(session, lot.id, 0)  # a cancelled pending lot is closed
    if spent > 0:
        others = account.balance + move.amount  # what the other lots hold
        from_others = await consume(session, account.customer_id, min(spent, others), now)
        move.amount -= from_others
        move.debt_delta += spent - from_others
    return await write_entry(
        session,
        account,
        EntryKind.REVERSE,
        move,
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
        lot_id=lot.id,
    )


async def _earning(
    session: AsyncSession, source_type: str, source_id: str, customer_id: int | None
) -> PointsEntry:
    """The one EARN entry of a source (see ``reverse`` for how ``customer_id`` picks it)."""
    stmt = select(PointsEntry).where(
        PointsEntry.source_type == source_type,
        PointsEntry.source_id == source_id,
        PointsEntry.kind == EntryKind.EARN,
    )
    if customer_id is not None:
        stmt = stmt.where(PointsEntry.customer_id.in_(person_ids(customer_id)))
    earnings = (await session.scalars(stmt.order_by(PointsEntry.id))).all()
    if len(earnings) > 1 and customer_id is not None:
        exact = [e for e in earnings if e.customer_id == customer_id]
        earnings = exact if len(exact) == 1 else earnings
    if not earnings:
        raise DomainError.one(PointsErrorCode.NOT_FOUND, "No earning from this source.", "sourceId")
    if len(earnings) > 1:
        raise DomainError.one(
            PointsErrorCode.AMBIGUOUS_SOURCE,
            "Several customers earned from this source; name the customer.",
            "customerId",
        )
    return earnings[0]


async def _lock_lot_owner(
    session: AsyncSession, lot_id: int, now: datetime
) -> tuple[LockedAccount, Any]:
    """Lock whoever holds the lot now (it follows its points through merges) and read it.
    Re-read under the lock, in case a merge moved it while we waited."""
    for _ in range(MAX_REDIRECTS):
        owner = (
            await session.execute(select(PointsLot.customer_id).where(PointsLot.id == lot_id))
        ).scalar_one()
        account = await lock_account(session, owner, now)
        lot = await _read_lot(session, lot_id)
        if lot.customer_id == account.customer_id:
            return account, lot
    raise RuntimeError(f"points lot {lot_id}: owner keeps changing")


async def _reversal(
    session: AsyncSession, lot_id: int, source_type: str, source_id: str
) -> PointsEntry | None:
    """The reversal this source already made of the lot's earning, if any. Identified by the
    lot, not the customer: the lot may have moved since it was reversed."""
    stmt = select(PointsEntry).where(
        PointsEntry.source_type == source_type,
        PointsEntry.source_id == source_id,
        PointsEntry.kind == EntryKind.REVERSE,
        PointsEntry.lot_id == lot_id,
    )
    return (await session.scalars(stmt)).first()


async def _expired_from(session: AsyncSession, lot_id: int) -> int:
    """The points of a lot that expired (EXPIRE entries name their lot as the source)."""
    stmt = select(
        func.coalesce(func.sum(-(PointsEntry.amount + PointsEntry.pending_delta)), 0)
    ).where(
        PointsEntry.source_type == LOT_SOURCE,
        PointsEntry.source_id == str(lot_id),
        PointsEntry.kind == EntryKind.EXPIRE,
    )
    return int((await session.execute(stmt)).scalar_one())


async def _reversed_from(session: AsyncSession, account: LockedAccount, lot_id: int) -> int:
    """The points of a lot's earning that reversals took back so far, wherever each took
    them from (the lot, other lots, debt). The entries are the locked owner's person's: a
    lot moves only into a merge survivor, so every id it was written under is merged into
    its owner (and the customer index finds them)."""
    taken = PointsEntry.debt_delta - PointsEntry.amount - PointsEntry.pending_delta
    stmt = select(func.coalesce(func.sum(taken), 0)).where(
        PointsEntry.customer_id.in_(person_ids(account.customer_id)),
        PointsEntry.kind == EntryKind.REVERSE,
        PointsEntry.lot_id == lot_id,
    )
    return int((await session.execute(stmt)).scalar_one())


async def reverse_part(
    session: AsyncSession,
    *,
    earning_source_type: str,
    earning_source_id: str,
    points: int,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
    customer_id: int | None = None,
) -> PointsEntry | None:
    """Take back ``points`` of the earning of ``(earning_source_type, earning_source_id)``
    under a source of its own (a partial refund of the order that earned them).

    From the earning's lot first (a pending lot loses pending points), then, like the spent
    points of a ``reverse``, from the customer's other lots FIFO by expiry, the shortfall as
    debt. Never more than the earning has left: its points less what expired from its lot
    and what earlier reversals, whole or partial, took back; so partial reversals and a
    final one add up to the earning at most. None when nothing is left to take. Idempotent
    by its own source: a retry returns the first entry. ``customer_id`` as for ``reverse``.
    """
    check_points(points)
    check_source(source_type, source_id, reason, actor)
    check_text(earning_source_type, "earningSourceType", SOURCE_TYPE_MAX)
    check_text(earning_source_id, "earningSourceId", SOURCE_ID_MAX)
    if (source_type, source_id) == (earning_source_type, earning_source_id):
        # Under the earning's own source it would read as that source's whole reversal.
        raise DomainError.one(
            PointsErrorCode.INVALID, "A partial reversal needs a source of its own.", "sourceId"
        )
    earning = await _earning(session, earning_source_type, earning_source_id, customer_id)
    assert earning.lot_id is not None
    account, lot = await _lock_lot_owner(session, earning.lot_id, now)
    done = await _reversal(session, lot.id, source_type, source_id)
    if done is not None:
        return done
    await settle(session, account, now)
    lot = await _read_lot(session, lot.id)
    left = (
        lot.amount
        - await _expired_from(session, lot.id)
        - await _reversed_from(session, account, lot.id)
    )
    take = min(points, left)
    if take <= 0:
        return None
    from_lot = min(take, lot.remaining)
    move = Move(amount=-from_lot) if lot.released else Move(pending_delta=-from_lot)
    if from_lot == lot.remaining:
        await close_lot(session, lot.id, 0)  # an emptied pending lot is closed
    elif from_lot:
        await _take_from_lot(session, lot.id, from_lot)
    rest = take - from_lot
    if rest:
        others = account.balance + move.amount  # what the other lots hold
        from_others = await consume(session, account.customer_id, min(rest, others), now)
        move.amount -= from_others
        move.debt_delta += rest - from_others
    return await write_entry(
        session,
        account,
        EntryKind.REVERSE,
        move,
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
        lot_id=lot.id,
    )


async def _take_from_lot(session: AsyncSession, lot_id: int, points: int) -> None:
    row = await update_returning(
        session,
        update(PointsLot)
        .where(PointsLot.id == lot_id, PointsLot.remaining >= points)
        .values(remaining=PointsLot.remaining - points)
        .returning(PointsLot.id),
    )
    if row is None:  # the lock makes this impossible; never take what is not there
        raise RuntimeError(f"points lot {lot_id} changed under the account lock")


async def _read_lot(session: AsyncSession, lot_id: int) -> Any:
    stmt = select(
        PointsLot.id,
        PointsLot.customer_id,
        PointsLot.amount,
        PointsLot.remaining,
        PointsLot.released,
    ).where(PointsLot.id == lot_id)
    return (await session.execute(stmt)).one()
