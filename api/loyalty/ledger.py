"""The points ledger (积分): the write steps every movement of points is made of (lock the
account, find a retry's entry, credit or consume lots, settle due lots, append an entry).
The movements themselves are in earning, spending, reversals, adjustments, jobs and merge.

How it stays right under retries and concurrency:

* **One writer per customer at a time.** Every ledger write starts with ``lock_account``: the
  customer row (``FOR UPDATE``, as the merge and ``evaluate_level`` lock it: taking a
  weaker lock first and upgrading later could deadlock),
  then the customer's ``points_account`` row (inserted on first use with ``insert_or_get``,
  then updated, which takes its row lock). Customer first, then account: the order a merge
  takes them in, so a merge and a writer never wait on each other in a cycle. On SQLite
  ``BEGIN IMMEDIATE`` already serializes all writers and ``FOR UPDATE`` is dropped.
* **Idempotency** is the unique key (source_type, source_id, kind, customer_id) of
  ``points_entry``; under the lock a retry finds the first entry and returns it.
* **Append-only.** Entries are only inserted. ``points_account`` (balance / pending / debt)
  is a cache of Σ entries, and of Σ lots' remaining, written in the same transaction;
  ``check_balances`` verifies both.
* **Lots.** Each credit is a lot with ``remaining``, ``available_at`` (pending until then)
  and ``expires_at``. ``released`` means "no longer pending": a pending lot that is
  cancelled or expires is closed as released with nothing remaining. Spending consumes
  released lots FIFO by expiry: soonest expiry first, never-expiring last, then oldest.
* **Debt.** A reversal that finds its points already spent takes what it can from other
  lots and records the rest as debt (balance never goes below zero); debt is settled
  first from the next points that become available (an earning, a release, a grant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, false, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.locks import lock_customer
from api.customers.models import Customer
from api.db import insert_or_get, update_returning
from api.errors import DomainError
from api.loyalty.errors import PointsErrorCode
from api.loyalty.models import EntryKind, PointsAccount, PointsEntry, PointsLot

# Bounds: any single movement above this is a bug or an attack, not a loyalty programme.
MAX_POINTS = 100_000_000
SYSTEM_ACTOR = "system:points"
LOT_SOURCE = "lot"  # RELEASE / EXPIRE entries name the lot they act on
# The widths of the entry's text columns.
SOURCE_TYPE_MAX = 32
SOURCE_ID_MAX = 100
REASON_MAX = 200
ACTOR_MAX = 100


@dataclass(slots=True)
class LockedAccount:
    """The locked account of a live customer, with the running cached values."""

    customer_id: int
    balance: int
    pending: int
    debt: int


@dataclass(slots=True)
class Move:
    """One ledger entry's changes, applied to the account and written as an entry."""

    amount: int = 0
    pending_delta: int = 0
    debt_delta: int = 0


async def lock_account(session: AsyncSession, customer_id: int, now: datetime) -> LockedAccount:
    """Lock the live customer behind ``customer_id``, then its points account: the merge's
    order (customer rows first), so a ledger write and a merge never deadlock."""
    customer = await lock_customer(session, customer_id)
    if customer is None:
        raise DomainError.one(PointsErrorCode.NOT_FOUND, "No such customer.", "customerId")
    return await lock_account_row(session, customer.id, now)


async def lock_account_row(session: AsyncSession, customer_id: int, now: datetime) -> LockedAccount:
    """Update the account row (taking its row lock), inserting it on first use."""
    stmt = (
        update(PointsAccount)
        .where(PointsAccount.customer_id == customer_id)
        .values(version=PointsAccount.version + 1, updated_at=now)
        .returning(PointsAccount.balance, PointsAccount.pending, PointsAccount.debt)
    )
    row = await update_returning(session, stmt)
    if row is None:
        await insert_or_get(
            session,
            PointsAccount,
            {
                "customer_id": customer_id,
                "balance": 0,
                "pending": 0,
                "debt": 0,
                "version": 0,
                "updated_at": now,
            },
            ["customer_id"],
        )
        row = await update_returning(session, stmt)
        assert row is not None
    return LockedAccount(customer_id, row.balance, row.pending, row.debt)


async def write_entry(
    session: AsyncSession,
    account: LockedAccount,
    kind: EntryKind,
    move: Move,
    *,
    reason: str,
    source_type: str,
    source_id: str,
    actor: str | None,
    now: datetime,
    lot_id: int | None = None,
) -> PointsEntry:
    """Append one entry and apply it to the cached account, in the same transaction."""
    account.balance += move.amount
    account.pending += move.pending_delta
    account.debt += move.debt_delta
    # Guards, not checks the caller relies on: a bug must fail loudly, never persist.
    if account.balance < 0 or account.pending < 0 or account.debt < 0:
        raise RuntimeError(f"points account {account.customer_id} would go negative: {account}")
    # Core INSERT ... RETURNING, not session.add + flush: the unit of work costs more than
    # the statement, and nothing here needs it (entries are never changed afterwards).
    entry = (
        await session.scalars(
            insert(PointsEntry)
            .values(
                customer_id=account.customer_id,
                kind=kind,
                amount=move.amount,
                pending_delta=move.pending_delta,
                debt_delta=move.debt_delta,
                balance_after=account.balance,
                reason=reason,
                source_type=source_type,
                source_id=source_id,
                actor=actor,
                lot_id=lot_id,
                created_at=now,
            )
            .returning(PointsEntry)
        )
    ).one()
    await session.execute(
        update(PointsAccount)
        .where(PointsAccount.customer_id == account.customer_id)
        .values(
            balance=PointsAccount.balance + move.amount,
            pending=PointsAccount.pending + move.pending_delta,
            debt=PointsAccount.debt + move.debt_delta,
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
    return entry


def person_ids(customer_id: int) -> Select[int]:
    """The ids of the person ``customer_id`` names: its live customer and every customer
    merged into that one. Ledger entries never move in a merge, so an idempotency lookup
    must look at all of them, whichever of the ids a retry names.

    One hop suffices: a merge re-points every redirect to the survivor, so each merged row
    leads straight to the live one (``COALESCE(merged_into_id, id)`` of the named row).
    """
    live = (
        select(func.coalesce(Customer.merged_into_id, Customer.id))
        .where(Customer.id == customer_id)
        .scalar_subquery()
    )
    return select(Customer.id).where(or_(Customer.id == live, Customer.merged_into_id == live))


async def existing_entry(
    session: AsyncSession, kind: EntryKind, source_type: str, source_id: str, customer_id: int
) -> PointsEntry | None:
    """The entry a retry must return: the first one of this source and kind anywhere in the
    person ``customer_id`` names (before a merge it may have gone to either side).

    Called under ``lock_account`` on the live customer, no merge into or of it can commit meanwhile,
    so the person is stable; the unique key (source_type, source_id, kind, customer_id)
    stays the last guard against a second entry.
    """
    stmt = select(PointsEntry).where(
        PointsEntry.source_type == source_type,
        PointsEntry.source_id == source_id,
        PointsEntry.kind == kind,
        PointsEntry.customer_id.in_(person_ids(customer_id)),
    )
    return (await session.scalars(stmt.order_by(PointsEntry.id).limit(1))).first()


async def credit_lot(
    session: AsyncSession,
    account: LockedAccount,
    points: int,
    *,
    available_at: datetime,
    expires_at: datetime | None,
    source_type: str,
    source_id: str,
    now: datetime,
) -> tuple[int, Move]:
    """A new lot of ``points``; returns its id and the move to record. Available now: debt
    is settled from it first. Pending: it waits for its release, which settles debt then."""
    pending = available_at > now
    settled = 0 if pending else min(account.debt, points)
    lot_id = (
        await session.execute(
            insert(PointsLot)
            .values(
                customer_id=account.customer_id,
                amount=points,
                remaining=points - settled,
                available_at=available_at,
                released=not pending,
                expires_at=expires_at,
                source_type=source_type,
                source_id=source_id,
                created_at=now,
            )
            .returning(PointsLot.id)
        )
    ).scalar_one()
    if pending:
        return lot_id, Move(pending_delta=points)
    return lot_id, Move(amount=points - settled, debt_delta=-settled)


async def close_lot(session: AsyncSession, lot_id: int, remaining: int) -> None:
    """Set a lot's remaining points and mark it no longer pending (released, or closed)."""
    await session.execute(
        update(PointsLot).where(PointsLot.id == lot_id).values(remaining=remaining, released=True),
        execution_options={"synchronize_session": False},
    )


def _fifo_order() -> list[Any]:
    """Soonest expiry first, never-expiring last, then the oldest lot."""
    return [PointsLot.expires_at.is_(None), PointsLot.expires_at, PointsLot.id]


async def consume(session: AsyncSession, customer_id: int, points: int, now: datetime) -> int:
    """Take up to ``points`` from the customer's released lots, FIFO by expiry; return how
    many were taken. Call under the lock, after settling: an unsettled expired lot is
    skipped, and the caller's count against the cached balance then fails loudly."""
    if points <= 0:
        return 0
    lots = (
        await session.execute(
            select(PointsLot.id, PointsLot.remaining)
            .where(
                PointsLot.customer_id == customer_id,
                PointsLot.released == true(),
                PointsLot.remaining > 0,
                or_(PointsLot.expires_at.is_(None), PointsLot.expires_at > now),
            )
            .order_by(*_fifo_order())
        )
    ).all()
    taken = 0
    for lot_id, remaining in lots:
        if taken == points:
            break
        take = min(remaining, points - taken)
        row = await update_returning(
            session,
            update(PointsLot)
            .where(PointsLot.id == lot_id, PointsLot.remaining >= take)
            .values(remaining=PointsLot.remaining - take)
            .returning(PointsLot.id),
        )
        if row is None:  # the lock makes this impossible; never consume what is not there
            raise RuntimeError(f"points lot {lot_id} changed under the account lock")
        taken += take
    return taken


@dataclass(slots=True)
class SettleResult:
    expired_lots: int = 0
    expired_points: int = 0
    released_lots: int = 0
    released_points: int = 0


async def settle(
    session: AsyncSession, account: LockedAccount, now: datetime, *, release: bool = True
) -> SettleResult:
    """Bring the customer's lots up to ``now``: expire the lots past their expiry and, with
    ``release``, release the pending lots past their return window (settling debt from
    them). Expiry wins: a lot never unlocks after it has expired."""
    result = SettleResult()
    conditions = [and_(PointsLot.expires_at.is_not(None), PointsLot.expires_at <= now)]
    if release:
        conditions.append(and_(PointsLot.released == false(), PointsLot.available_at <= now))
    due = (
        await session.execute(
            select(PointsLot.id, PointsLot.remaining, PointsLot.released, PointsLot.expires_at)
            .where(
                PointsLot.customer_id == account.customer_id,
                PointsLot.remaining > 0,
                or_(*conditions),
            )
            .order_by(PointsLot.available_at, PointsLot.id)
        )
    ).all()
    for lot in due:
        remaining = lot.remaining
        if lot.expires_at is not None and lot.expires_at <= now:
            move = Move(amount=-remaining) if lot.released else Move(pending_delta=-remaining)
            await close_lot(session, lot.id, 0)
            await write_entry(
                session,
                account,
                EntryKind.EXPIRE,
                move,
                reason="points expired",
                source_type=LOT_SOURCE,
                source_id=str(lot.id),
                actor=SYSTEM_ACTOR,
                now=now,
                lot_id=lot.id,
            )
            result.expired_lots += 1
            result.expired_points += remaining
        elif release and not lot.released:
            settled = min(account.debt, remaining)
            await close_lot(session, lot.id, remaining - settled)
            await write_entry(
                session,
                account,
                EntryKind.RELEASE,
                Move(amount=remaining - settled, pending_delta=-remaining, debt_delta=-settled),
                reason="return window passed",
                source_type=LOT_SOURCE,
                source_id=str(lot.id),
                actor=SYSTEM_ACTOR,
                now=now,
                lot_id=lot.id,
            )
            result.released_lots += 1
            result.released_points += remaining
    return result


def check_text(value: str | None, name: str, limit: int, *, required: bool = True) -> None:
    if value is None or not value.strip():
        if required:
            raise DomainError.one(PointsErrorCode.INVALID, f"{name} is required.", name)
        return
    if len(value) > limit:
        raise DomainError.one(
            PointsErrorCode.INVALID, f"{name} is at most {limit} characters.", name
        )


def is_whole(value: object) -> bool:
    """A whole number, checked at run time: callers outside the type checker (a CLI, JSON)
    may hand a float or a str, and a bool is an int to Python but never a number of points."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_points(points: int, limit: int = MAX_POINTS, field_name: str = "points") -> None:
    if not is_whole(points) or not 0 < points <= limit:
        raise DomainError.one(
            PointsErrorCode.INVALID_AMOUNT,
            f"Points must be a whole number between 1 and {limit}.",
            field_name,
        )


def check_source(source_type: str, source_id: str, reason: str, actor: str | None) -> None:
    check_text(source_type, "sourceType", SOURCE_TYPE_MAX)
    check_text(source_id, "sourceId", SOURCE_ID_MAX)
    check_text(reason, "reason", REASON_MAX)
    check_text(actor, "actor", ACTOR_MAX, required=False)
