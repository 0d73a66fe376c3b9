"""The points ledger (积分): earn, redeem, reverse, adjust, expire, release, check, merge.

Plain async functions over a session; no GraphQL here, so the API, the CLI jobs, the orders
domain and the tests call the same rules.

How it stays right under retries and concurrency:

* **One writer per customer at a time.** Every ledger write starts with ``_lock``: the
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

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    case,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import Customer, MemberLevel
from api.customers.qualification import evaluate_level
from api.db import advisory_lock, insert_or_get, update_returning
from api.errors import DomainError, Problem
from api.loyalty import rules as rules_engine
from api.loyalty.models import (
    EntryKind,
    PointsAccount,
    PointsEarningRule,
    PointsEntry,
    PointsLot,
)
from api.loyalty.rules import PointsPolicy, Purchase, Quote
from api.partners.models import Store
from api.partners.service import stores_query


class PointsErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID_AMOUNT = "invalid_amount"
    INSUFFICIENT_POINTS = "insufficient_points"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    AMBIGUOUS_SOURCE = "ambiguous_source"
    INVALID = "invalid"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_LEVEL = "unknown_level"
    FORBIDDEN = "forbidden"


# Bounds: any single movement above this is a bug or an attack, not a loyalty programme.
MAX_POINTS = 100_000_000
MAX_ADJUST_POINTS = 1_000_000
EXPIRING_SOON = timedelta(days=30)
MAX_REDIRECTS = 16  # a merge chain longer than this is corrupt data
SYSTEM_ACTOR = "system:points"
LOT_SOURCE = "lot"  # RELEASE / EXPIRE entries name the lot they act on
MERGE_SOURCE = "customer_merge"  # TRANSFER entries name the other customer
ADJUST_SOURCE = "adjust"  # ADJUST entries: source_id is the idempotency key

_SOURCE_TYPE_MAX = 32
_SOURCE_ID_MAX = 100
_REASON_MAX = 200
_ACTOR_MAX = 100


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    """A customer's points as of ``now`` (not as of the last write)."""

    balance: int  # spendable now
    pending: int  # still inside the return window
    debt: int  # owed from reversals, settled from the next points
    expiring_soon: int  # spendable points that expire within EXPIRING_SOON
    next_expires_at: datetime | None  # the earliest expiry among spendable points


ZERO_BALANCE = Balance(0, 0, 0, 0, None)


async def balances_of(
    session: AsyncSession, customer_ids: Sequence[int], now: datetime
) -> dict[int, Balance]:
    """Point-in-time balances of many customers in one statement.

    The cached account row is the state as of the customer's last write; jobs expire and
    release lots later. So this computes from the lots at ``now``: a lot past its
    ``expires_at`` counts nowhere even if the expire job has not run; a pending lot whose
    ``available_at`` has passed counts as spendable even if the release job has not run,
    less the debt its release would settle first. ``debt`` comes from the account.
    """
    if not customer_ids:
        return {}
    lot = PointsLot
    valid = or_(lot.expires_at.is_(None), lot.expires_at > now)
    released = lot.released == true()
    matured = and_(lot.released == false(), lot.available_at <= now)
    waiting = and_(lot.released == false(), lot.available_at > now)
    spendable = or_(released, lot.available_at <= now)
    soon = and_(lot.expires_at.is_not(None), lot.expires_at <= now + EXPIRING_SOON)

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, lot.remaining), else_=0)), 0)

    lots = (
        select(
            lot.customer_id,
            total(and_(valid, released)).label("released"),
            total(and_(valid, matured)).label("matured"),
            total(and_(valid, waiting)).label("pending"),
            total(and_(valid, spendable, soon)).label("soon"),
            func.min(case((and_(valid, spendable), lot.expires_at), else_=None)).label("next"),
        )
        .where(lot.customer_id.in_(customer_ids), lot.remaining > 0)
        .group_by(lot.customer_id)
        .subquery()
    )
    # Every customer with a lot has an account (lots are written under the account lock),
    # so the account is the driving table and customers without one read as zero.
    stmt = (
        select(
            PointsAccount.customer_id,
            PointsAccount.debt,
            lots.c.released,
            lots.c.matured,
            lots.c.pending,
            lots.c.soon,
            lots.c.next,
        )
        .outerjoin(lots, lots.c.customer_id == PointsAccount.customer_id)
        .where(PointsAccount.customer_id.in_(customer_ids))
    )
    found: dict[int, Balance] = {}
    for row in (await session.execute(stmt)).all():
        released_pts, matured_pts = int(row.released or 0), int(row.matured or 0)
        settled = min(row.debt, matured_pts)  # what releasing now would pay off first
        balance = released_pts + matured_pts - settled
        next_expiry = row.next
        if isinstance(next_expiry, str):  # SQLite returns MIN() of a CASE untyped
            next_expiry = datetime.fromisoformat(next_expiry).replace(tzinfo=UTC)
        found[row.customer_id] = Balance(
            balance=balance,
            pending=int(row.pending or 0),
            debt=row.debt - settled,
            expiring_soon=min(int(row.soon or 0), balance),
            next_expires_at=next_expiry if balance > 0 else None,
        )
    return {cid: found.get(cid, ZERO_BALANCE) for cid in customer_ids}


def entries_query(principal: Principal) -> Select[tuple[PointsEntry]]:
    return restrict(select(PointsEntry), PointsEntry, principal)


ENTRY_KEYSET = (PointsEntry.id,)


async def entries_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, PointsEntry]:
    stmt = entries_query(principal).where(PointsEntry.id.in_(ids))
    return {e.id: e for e in (await session.scalars(stmt)).all()}


async def lot_expiries(session: AsyncSession, lot_ids: Sequence[int]) -> dict[int, datetime | None]:
    if not lot_ids:
        return {}
    rows = await session.execute(
        select(PointsLot.id, PointsLot.expires_at).where(PointsLot.id.in_(lot_ids))
    )
    return {lot_id: expires_at for lot_id, expires_at in rows.all()}


async def visible_customer_id(
    session: AsyncSession, principal: Principal, customer_id: int
) -> int | None:
    """The live customer behind ``customer_id`` (following merges) if the principal may see
    it; None otherwise, so another partner's customer answers like a missing one."""
    live = await resolve_customer_id(session, customer_id)
    if live is None:
        return None
    return live if await _may_see(session, principal, live) else None


async def live_customer_id(session: AsyncSession, customer_id: int) -> int | None:
    """The live customer behind ``customer_id`` (following merges); None if none. Entries
    keep the id they were written for, their points are with this one."""
    return await resolve_customer_id(session, customer_id)


async def visible_store_id(
    session: AsyncSession, principal: Principal, store_id: int
) -> int | None:
    """``store_id`` if the principal may see that store, else None: another partner's store
    answers like a missing one (its earning rules are that partner's business)."""
    stmt = stores_query(principal).with_only_columns(Store.id).where(Store.id == store_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def customer_level_id(session: AsyncSession, customer_id: int) -> int | None:
    """The member level the earning rules see for a customer (None: not a member)."""
    stmt = select(Customer.level_id).where(Customer.id == customer_id)
    return (await session.execute(stmt)).scalar_one_or_none()


# --- locking and the shared write steps -------------------------------------------------------


@dataclass(slots=True)
class _Account:
    """The locked account of a live customer, with the running cached values."""

    customer_id: int
    balance: int
    pending: int
    debt: int


@dataclass(slots=True)
class _Move:
    """One ledger entry's changes, applied to the account and written as an entry."""

    amount: int = 0
    pending_delta: int = 0
    debt_delta: int = 0


async def _lock(session: AsyncSession, customer_id: int, now: datetime) -> _Account:
    """Lock the live customer behind ``customer_id``, then its points account: the merge's
    order (customer rows first), so a ledger write and a merge never deadlock."""
    customer = await lock_customer(session, customer_id)
    if customer is None:
        raise DomainError.one(PointsErrorCode.NOT_FOUND, "No such customer.", "customerId")
    return await _lock_account(session, customer.id, now)


async def _lock_account(session: AsyncSession, customer_id: int, now: datetime) -> _Account:
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
    return _Account(customer_id, row.balance, row.pending, row.debt)


async def _write(
    session: AsyncSession,
    account: _Account,
    kind: EntryKind,
    move: _Move,
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


def _person(customer_id: int) -> Select[tuple[int]]:
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


async def _existing_entry(
    session: AsyncSession, kind: EntryKind, source_type: str, source_id: str, customer_id: int
) -> PointsEntry | None:
    """The entry a retry must return: the first one of this source and kind anywhere in the
    person ``customer_id`` names (before a merge it may have gone to either side).

    Called under ``_lock`` on the live customer, no merge into or of it can commit meanwhile,
    so the person is stable; the unique key (source_type, source_id, kind, customer_id)
    stays the last guard against a second entry.
    """
    stmt = select(PointsEntry).where(
        PointsEntry.source_type == source_type,
        PointsEntry.source_id == source_id,
        PointsEntry.kind == kind,
        PointsEntry.customer_id.in_(_person(customer_id)),
    )
    return (await session.scalars(stmt.order_by(PointsEntry.id).limit(1))).first()


async def _credit_lot(
    session: AsyncSession,
    account: _Account,
    points: int,
    *,
    available_at: datetime,
    expires_at: datetime | None,
    source_type: str,
    source_id: str,
    now: datetime,
) -> tuple[int, _Move]:
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
        return lot_id, _Move(pending_delta=points)
    return lot_id, _Move(amount=points - settled, debt_delta=-settled)


async def _close_lot(session: AsyncSession, lot_id: int, remaining: int) -> None:
    """Set a lot's remaining points and mark it no longer pending (released, or closed)."""
    await session.execute(
        update(PointsLot).where(PointsLot.id == lot_id).values(remaining=remaining, released=True),
        execution_options={"synchronize_session": False},
    )


def _fifo_order() -> list[Any]:
    """Soonest expiry first, never-expiring last, then the oldest lot."""
    return [PointsLot.expires_at.is_(None), PointsLot.expires_at, PointsLot.id]


async def _consume(session: AsyncSession, customer_id: int, points: int, now: datetime) -> int:
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


async def _settle(
    session: AsyncSession, account: _Account, now: datetime, *, release: bool = True
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
            move = _Move(amount=-remaining) if lot.released else _Move(pending_delta=-remaining)
            await _close_lot(session, lot.id, 0)
            await _write(
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
            await _close_lot(session, lot.id, remaining - settled)
            await _write(
                session,
                account,
                EntryKind.RELEASE,
                _Move(amount=remaining - settled, pending_delta=-remaining, debt_delta=-settled),
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


def _check_text(value: str | None, name: str, limit: int, *, required: bool = True) -> None:
    if value is None or not value.strip():
        if required:
            raise DomainError.one(PointsErrorCode.INVALID, f"{name} is required.", name)
        return
    if len(value) > limit:
        raise DomainError.one(
            PointsErrorCode.INVALID, f"{name} is at most {limit} characters.", name
        )


def _check_points(points: int, limit: int = MAX_POINTS, field_name: str = "points") -> None:
    if isinstance(points, bool) or not isinstance(points, int) or not 0 < points <= limit:
        raise DomainError.one(
            PointsErrorCode.INVALID_AMOUNT,
            f"Points must be a whole number between 1 and {limit}.",
            field_name,
        )


def _check_source(source_type: str, source_id: str, reason: str, actor: str | None) -> None:
    _check_text(source_type, "sourceType", _SOURCE_TYPE_MAX)
    _check_text(source_id, "sourceId", _SOURCE_ID_MAX)
    _check_text(reason, "reason", _REASON_MAX)
    _check_text(actor, "actor", _ACTOR_MAX, required=False)


def _same_call(entry: PointsEntry, **expected: Any) -> bool:
    return all(getattr(entry, name) == value for name, value in expected.items())


# --- earning ----------------------------------------------------------------------------------


async def earn(
    session: AsyncSession,
    customer_id: int,
    points: int,
    *,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
    pending: bool = True,
    policy: PointsPolicy,
) -> PointsEntry:
    """Credit ``points`` earned by ``(source_type, source_id)`` (an order, a campaign).

    Idempotent: a retry with the same source returns the first entry and changes nothing.
    The lot expires per the policy and, when ``pending``, unlocks after the return window.
    Debt is settled first from points that are available at once.
    """
    _check_points(points)
    _check_source(source_type, source_id, reason, actor)
    account = await _lock(session, customer_id, now)
    existing = await _existing_entry(
        session, EntryKind.EARN, source_type, source_id, account.customer_id
    )
    if existing is not None:
        return existing
    lot_id, move = await _credit_lot(
        session,
        account,
        points,
        available_at=policy.available_at(now, pending=pending),
        expires_at=policy.expires_at(now),
        source_type=source_type,
        source_id=source_id,
        now=now,
    )
    entry = await _write(
        session,
        account,
        EntryKind.EARN,
        move,
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
        lot_id=lot_id,
    )
    await evaluate_level(session, account.customer_id, now)
    return entry


async def active_rules(session: AsyncSession, purchase: Purchase, now: datetime) -> list[Any]:
    """The rules that could match the purchase at ``now`` (the engine picks per line)."""
    stmt = select(PointsEarningRule).where(
        PointsEarningRule.active == true(),
        or_(PointsEarningRule.starts_at.is_(None), PointsEarningRule.starts_at <= now),
        or_(PointsEarningRule.ends_at.is_(None), PointsEarningRule.ends_at > now),
        or_(PointsEarningRule.channel.is_(None), PointsEarningRule.channel == purchase.channel),
        or_(
            PointsEarningRule.store_id.is_(None),
            PointsEarningRule.store_id == purchase.store_id,
        ),
        or_(
            PointsEarningRule.level_id.is_(None),
            PointsEarningRule.level_id == purchase.level_id,
        ),
    )
    skus = {line.sku for line in purchase.lines}
    stmt = stmt.where(or_(PointsEarningRule.sku.is_(None), PointsEarningRule.sku.in_(skus)))
    return list((await session.scalars(stmt)).all())


async def quote_purchase(session: AsyncSession, purchase: Purchase, now: datetime) -> Quote:
    """How many points ``purchase`` would earn now (a preview: nothing is written)."""
    _check_purchase(purchase)
    return rules_engine.quote(await active_rules(session, purchase, now), purchase, now)


def _check_purchase(purchase: Purchase) -> None:
    _check_text(purchase.channel, "channel", 32)
    _check_text(purchase.source_id, "sourceId", _SOURCE_ID_MAX)
    if not purchase.lines:
        raise DomainError.one(PointsErrorCode.INVALID, "A purchase needs lines.", "lines")
    if len(purchase.lines) > 500:
        raise DomainError.one(PointsErrorCode.INVALID, "At most 500 lines.", "lines")
    for index, line in enumerate(purchase.lines):
        if not line.sku or len(line.sku) > 64:
            raise DomainError.one(
                PointsErrorCode.INVALID, "A line needs a SKU.", "lines", str(index), "sku"
            )
        if not isinstance(line.amount, Decimal) or not line.amount.is_finite():
            raise DomainError.one(
                PointsErrorCode.INVALID_AMOUNT,
                "Amounts are decimal yuan.",
                "lines",
                str(index),
                "amount",
            )
        if line.amount < 0 or line.amount > Decimal(10) ** 9:
            raise DomainError.one(
                PointsErrorCode.INVALID_AMOUNT,
                "A line amount is between 0 and 1,000,000,000 yuan.",
                "lines",
                str(index),
                "amount",
            )


PURCHASE_SOURCE = "order"


async def earn_for_purchase(
    session: AsyncSession,
    customer_id: int,
    purchase: Purchase,
    now: datetime,
    *,
    actor: str | None = None,
    policy: PointsPolicy,
) -> PointsEntry | None:
    """Earn what the earning rules give ``purchase`` (pending for the return window).

    None when it earns nothing. Idempotent by the purchase's ``source_id``: a retry returns
    the first entry even if the rules have changed since.
    """
    _check_purchase(purchase)
    # Unlocked, to skip quoting a retry (whose rules may have changed since); ``earn``
    # checks again under the lock. Any id of the person finds the first earning.
    existing = await _existing_entry(
        session, EntryKind.EARN, PURCHASE_SOURCE, purchase.source_id, customer_id
    )
    if existing is not None:
        return existing
    quoted = await quote_purchase(session, purchase, now)
    if quoted.points <= 0:
        return None
    return await earn(
        session,
        customer_id,
        min(quoted.points, MAX_POINTS),
        source_type=PURCHASE_SOURCE,
        source_id=purchase.source_id,
        reason=f"purchase {purchase.source_id} ({purchase.channel})"[:_REASON_MAX],
        actor=actor,
        now=now,
        pending=True,
        policy=policy,
    )


# --- spending ---------------------------------------------------------------------------------


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
    _check_points(points)
    _check_source(source_type, source_id, reason, actor)
    account = await _lock(session, customer_id, now)
    existing = await _existing_entry(
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
    return await _spend(
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


async def _spend(
    session: AsyncSession,
    account: _Account,
    points: int,
    kind: EntryKind,
    *,
    reason: str,
    source_type: str,
    source_id: str,
    actor: str | None,
    now: datetime,
) -> PointsEntry:
    await _settle(session, account, now)
    if account.balance < points:
        raise DomainError.one(
            PointsErrorCode.INSUFFICIENT_POINTS,
            f"Only {account.balance} points are available; {points} requested.",
            "points" if kind is EntryKind.REDEEM else "amount",
        )
    taken = await _consume(session, account.customer_id, points, now)
    if taken != points:  # the cache says the lots hold it: they must
        raise RuntimeError(f"points account {account.customer_id}: lots disagree with balance")
    return await _write(
        session,
        account,
        kind,
        _Move(amount=-points),
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
    )


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
    _check_source(source_type, source_id, reason, actor)
    earning = await _earning(session, source_type, source_id, customer_id)
    assert earning.lot_id is not None
    account, lot = await _lock_lot_owner(session, earning.lot_id, now)
    done = await _reversal(session, lot.id, source_type, source_id)
    if done is not None:
        return done
    await _settle(session, account, now)
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
    move = _Move(amount=-own) if lot.released else _Move(pending_delta=-own)
    await _close_lot(session, lot.id, 0)  # a cancelled pending lot is closed
    if spent > 0:
        others = account.balance + move.amount  # what the other lots hold
        from_others = await _consume(session, account.customer_id, min(spent, others), now)
        move.amount -= from_others
        move.debt_delta += spent - from_others
    return await _write(
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
        stmt = stmt.where(PointsEntry.customer_id.in_(_person(customer_id)))
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
) -> tuple[_Account, Any]:
    """Lock whoever holds the lot now (it follows its points through merges) and read it.
    Re-read under the lock, in case a merge moved it while we waited."""
    for _ in range(MAX_REDIRECTS):
        owner = (
            await session.execute(select(PointsLot.customer_id).where(PointsLot.id == lot_id))
        ).scalar_one()
        account = await _lock(session, owner, now)
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


async def _reversed_from(session: AsyncSession, account: _Account, lot_id: int) -> int:
    """The points of a lot's earning that reversals took back so far, wherever each took
    them from (the lot, other lots, debt). The entries are the locked owner's person's: a
    lot moves only into a merge survivor, so every id it was written under is merged into
    its owner (and the customer index finds them)."""
    taken = PointsEntry.debt_delta - PointsEntry.amount - PointsEntry.pending_delta
    stmt = select(func.coalesce(func.sum(taken), 0)).where(
        PointsEntry.customer_id.in_(_person(account.customer_id)),
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
    _check_points(points)
    _check_source(source_type, source_id, reason, actor)
    _check_text(earning_source_type, "earningSourceType", _SOURCE_TYPE_MAX)
    _check_text(earning_source_id, "earningSourceId", _SOURCE_ID_MAX)
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
    await _settle(session, account, now)
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
    move = _Move(amount=-from_lot) if lot.released else _Move(pending_delta=-from_lot)
    if from_lot == lot.remaining:
        await _close_lot(session, lot.id, 0)  # an emptied pending lot is closed
    elif from_lot:
        await _take_from_lot(session, lot.id, from_lot)
    rest = take - from_lot
    if rest:
        others = account.balance + move.amount  # what the other lots hold
        from_others = await _consume(session, account.customer_id, min(rest, others), now)
        move.amount -= from_others
        move.debt_delta += rest - from_others
    return await _write(
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
    _check_points(points)
    _check_source(source_type, source_id, reason, actor)
    _check_text(redemption_source_type, "redemptionSourceType", _SOURCE_TYPE_MAX)
    _check_text(redemption_source_id, "redemptionSourceId", _SOURCE_ID_MAX)
    stmt = select(PointsEntry).where(
        PointsEntry.source_type == redemption_source_type,
        PointsEntry.source_id == redemption_source_id,
        PointsEntry.kind == EntryKind.REDEEM,
    )
    if customer_id is not None:
        stmt = stmt.where(PointsEntry.customer_id.in_(_person(customer_id)))
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
    redemption = redemptions[0]
    account = await _lock(session, redemption.customer_id, now)
    existing = await _existing_entry(
        session, EntryKind.RETURN, source_type, source_id, account.customer_id
    )
    if existing is not None:
        return existing
    expires_at = policy.expires_at(redemption.created_at)
    if expires_at is not None and expires_at <= now:
        return None
    # Return lots carry the redemption's source, and move with the person's lots in merges.
    returned = (
        await session.execute(
            select(func.coalesce(func.sum(PointsEntry.amount - PointsEntry.debt_delta), 0))
            .join(PointsLot, PointsLot.id == PointsEntry.lot_id)
            .where(
                PointsEntry.customer_id.in_(_person(account.customer_id)),
                PointsEntry.kind == EntryKind.RETURN,
                PointsLot.customer_id == account.customer_id,
                PointsLot.source_type == redemption_source_type,
                PointsLot.source_id == redemption_source_id,
            )
        )
    ).scalar_one()
    give = min(points, -redemption.amount - int(returned))
    if give <= 0:
        return None
    lot_id, move = await _credit_lot(
        session,
        account,
        give,
        available_at=now,
        expires_at=expires_at,
        source_type=redemption_source_type,
        source_id=redemption_source_id,
        now=now,
    )
    return await _write(
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


async def _read_lot(session: AsyncSession, lot_id: int) -> Any:
    stmt = select(
        PointsLot.id,
        PointsLot.customer_id,
        PointsLot.amount,
        PointsLot.remaining,
        PointsLot.released,
    ).where(PointsLot.id == lot_id)
    return (await session.execute(stmt)).one()


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
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
        raise DomainError.one(PointsErrorCode.INVALID_AMOUNT, "The amount must not be 0.", "amount")
    _check_points(abs(delta), MAX_ADJUST_POINTS, "amount")
    _check_text(idempotency_key, "idempotencyKey", _SOURCE_ID_MAX)
    _check_text(reason, "reason", _REASON_MAX)
    _check_text(actor, "actor", _ACTOR_MAX, required=False)
    # The key, not the customer, is what must be unique: serialize its users first (then the
    # customer, like every writer), so two customers cannot both claim one key.
    await advisory_lock(session, f"points-adjust:{idempotency_key}")
    account = await _lock(session, customer_id, now)
    if principal is not None and not await _may_see(session, principal, account.customer_id):
        raise DomainError.one(PointsErrorCode.NOT_FOUND, "No such customer.", "customerId")
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
    if existing is not None:
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
    if delta < 0:
        return await _spend(
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
    lot_id, move = await _credit_lot(
        session,
        account,
        delta,
        available_at=now,
        expires_at=policy.expires_at(now),
        source_type=ADJUST_SOURCE,
        source_id=idempotency_key,
        now=now,
    )
    return await _write(
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


async def _merged_into(session: AsyncSession, customer_id: int, live_id: int) -> bool:
    """Whether ``customer_id`` was merged into the live ``live_id`` (one hop: a merge
    re-points every redirect to its survivor)."""
    stmt = select(Customer.id).where(Customer.id == customer_id, Customer.merged_into_id == live_id)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


def _adjusted(entry: PointsEntry) -> int:
    """The delta an ADJUST entry was asked for (a grant may have settled debt first)."""
    return entry.amount - entry.debt_delta


async def _may_see(session: AsyncSession, principal: Principal, customer_id: int) -> bool:
    stmt = restrict(select(Customer.id).where(Customer.id == customer_id), Customer, principal)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


# --- jobs -------------------------------------------------------------------------------------


@dataclass(slots=True)
class JobResult:
    customers: int = 0  # customers whose lots changed
    lots: int = 0
    points: int = 0
    scanned: int = 0  # customers the batch looked at (fewer than the limit: none left)

    def add(self, other: JobResult) -> None:
        self.customers += other.customers
        self.lots += other.lots
        self.points += other.points
        self.scanned += other.scanned


async def expire_due(session: AsyncSession, now: datetime, limit: int = 500) -> JobResult:
    """Expire the lots past their expiry for up to ``limit`` customers (one batch; run it
    until it returns no customers). Each customer is locked like any writer."""
    return await _job(session, now, limit, expire=True)


async def release_due(session: AsyncSession, now: datetime, limit: int = 500) -> JobResult:
    """Release the pending lots past their return window for up to ``limit`` customers."""
    return await _job(session, now, limit, expire=False)


async def _job(session: AsyncSession, now: datetime, limit: int, *, expire: bool) -> JobResult:
    if expire:
        due = and_(PointsLot.expires_at.is_not(None), PointsLot.expires_at <= now)
    else:
        due = and_(PointsLot.released == false(), PointsLot.available_at <= now)
    # Ascending customer ids: two jobs running at once lock in the same order.
    customer_ids = (
        await session.scalars(
            select(PointsLot.customer_id)
            .where(due, PointsLot.remaining > 0)
            .group_by(PointsLot.customer_id)
            .order_by(PointsLot.customer_id)
            .limit(limit)
        )
    ).all()
    result = JobResult(scanned=len(customer_ids))
    for customer_id in customer_ids:
        account = await _lock(session, customer_id, now)
        # Expiring does not release (the jobs may run on different schedules); releasing
        # expires what is past due first, so a lot never unlocks after its expiry.
        settled = await _settle(session, account, now, release=not expire)
        lots = settled.expired_lots if expire else settled.released_lots
        if lots:
            result.customers += 1
            result.lots += lots
            result.points += settled.expired_points if expire else settled.released_points
    return result


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An account whose cache disagrees with its ledger or its lots."""

    customer_id: int
    cached: tuple[int, int, int]  # balance, pending, debt on points_account
    ledger: tuple[int, int, int]  # Σ amount, Σ pending_delta, Σ debt_delta of its entries
    lots: tuple[int, int]  # Σ remaining of released lots, of pending lots
    bad_lots: int  # lots with remaining below zero or above their amount


async def check_balances(session: AsyncSession) -> list[Mismatch]:
    """Every account whose cached balance, pending or debt differs from Σ ledger or Σ lots,
    or that holds an impossible lot. Empty when all is well."""
    entries = (
        select(
            PointsEntry.customer_id.label("customer_id"),
            func.sum(PointsEntry.amount).label("amount"),
            func.sum(PointsEntry.pending_delta).label("pending"),
            func.sum(PointsEntry.debt_delta).label("debt"),
        )
        .group_by(PointsEntry.customer_id)
        .subquery()
    )
    lot = PointsLot
    lots = (
        select(
            lot.customer_id.label("customer_id"),
            func.sum(case((lot.released == true(), lot.remaining), else_=0)).label("released"),
            func.sum(case((lot.released == false(), lot.remaining), else_=0)).label("pending"),
            func.sum(case((or_(lot.remaining < 0, lot.remaining > lot.amount), 1), else_=0)).label(
                "bad"
            ),
        )
        .group_by(lot.customer_id)
        .subquery()
    )
    ids = union(
        select(PointsAccount.customer_id),
        select(PointsEntry.customer_id),
        select(PointsLot.customer_id),
    ).subquery()
    zero = literal(0)
    stmt = (
        select(
            ids.c.customer_id,
            func.coalesce(PointsAccount.balance, zero),
            func.coalesce(PointsAccount.pending, zero),
            func.coalesce(PointsAccount.debt, zero),
            func.coalesce(entries.c.amount, zero),
            func.coalesce(entries.c.pending, zero),
            func.coalesce(entries.c.debt, zero),
            func.coalesce(lots.c.released, zero),
            func.coalesce(lots.c.pending, zero),
            func.coalesce(lots.c.bad, zero),
        )
        .select_from(ids)
        .outerjoin(PointsAccount, PointsAccount.customer_id == ids.c.customer_id)
        .outerjoin(entries, entries.c.customer_id == ids.c.customer_id)
        .outerjoin(lots, lots.c.customer_id == ids.c.customer_id)
        .order_by(ids.c.customer_id)
    )
    mismatches = []
    for row in (await session.execute(stmt)).all():
        cid, *values = row
        balance, pending, debt, l_amount, l_pending, l_debt, released, lot_pending, bad = (
            int(v) for v in values
        )
        cached = (balance, pending, debt)
        ledger = (l_amount, l_pending, l_debt)
        if (
            cached != ledger
            or (balance, pending) != (released, lot_pending)
            or bad
            or min(cached) < 0
        ):
            mismatches.append(Mismatch(cid, cached, ledger, (released, lot_pending), bad))
    return mismatches


# --- earning rules ----------------------------------------------------------------------------


@dataclass(slots=True)
class EarningRuleDraft:
    name: str
    points_per_yuan: Decimal = Decimal(1)
    multiplier: Decimal = Decimal(1)
    channel: str | None = None
    store_id: int | None = None
    sku: str | None = None
    level_id: int | None = None
    priority: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    active: bool = True


_RATE_MAX = Decimal(1000)
_MULTIPLIER_MAX = Decimal(100)


async def create_earning_rule(
    session: AsyncSession, principal: Principal, draft: EarningRuleDraft, now: datetime
) -> PointsEarningRule:
    # Earning rules are the brand's programme: set by HQ, whatever scopes a token carries.
    if not principal.is_hq:
        raise DomainError.one(PointsErrorCode.FORBIDDEN, "Only HQ sets earning rules.")
    problems: list[Problem] = []
    if not draft.name or not draft.name.strip() or len(draft.name) > 100:
        problems.append(
            Problem(PointsErrorCode.INVALID, "A name of 1 to 100 characters.", ("name",))
        )
    for name, value, top in (
        ("pointsPerYuan", draft.points_per_yuan, _RATE_MAX),
        ("multiplier", draft.multiplier, _MULTIPLIER_MAX),
    ):
        if (
            not value.is_finite()
            or not Decimal(0) < value <= top
            or value != value.quantize(Decimal("0.0001"))
        ):
            problems.append(
                Problem(
                    PointsErrorCode.INVALID_AMOUNT,
                    f"{name} must be above 0 and at most {top}, with up to 4 decimals.",
                    (name,),
                )
            )
    for name, text_value, limit in (("channel", draft.channel, 32), ("sku", draft.sku, 64)):
        if text_value is not None and (not text_value.strip() or len(text_value) > limit):
            problems.append(
                Problem(
                    PointsErrorCode.INVALID, f"{name}: 1 to {limit} characters, or null.", (name,)
                )
            )
    if not -1000 <= draft.priority <= 1000:
        problems.append(
            Problem(PointsErrorCode.INVALID, "priority is between -1000 and 1000.", ("priority",))
        )
    if draft.starts_at and draft.ends_at and draft.ends_at <= draft.starts_at:
        problems.append(
            Problem(PointsErrorCode.INVALID, "The rule must end after it starts.", ("endsAt",))
        )
    if draft.store_id is not None and await session.get(Store, draft.store_id) is None:
        problems.append(Problem(PointsErrorCode.UNKNOWN_STORE, "No such store.", ("storeId",)))
    if draft.level_id is not None and await session.get(MemberLevel, draft.level_id) is None:
        problems.append(
            Problem(PointsErrorCode.UNKNOWN_LEVEL, "No such member level.", ("levelId",))
        )
    if problems:
        raise DomainError(problems)
    rule = PointsEarningRule(
        name=draft.name.strip(),
        channel=draft.channel,
        store_id=draft.store_id,
        sku=draft.sku,
        level_id=draft.level_id,
        points_per_yuan=draft.points_per_yuan,
        multiplier=draft.multiplier,
        priority=draft.priority,
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
        active=draft.active,
        created_at=now,
    )
    session.add(rule)
    await session.flush()
    return rule


def earning_rules_query(principal: Principal) -> Select[tuple[PointsEarningRule]]:
    """Rules are programme-wide configuration. HQ sees every rule; anyone else sees the
    rules for all stores and those for their own partner's stores, never another partner's."""
    stmt = select(PointsEarningRule)
    if principal.is_hq:
        return stmt
    own_stores = restrict(select(Store.id), Store, principal)
    if principal.is_member:
        return stmt.where(PointsEarningRule.store_id.is_(None))
    return stmt.where(
        or_(PointsEarningRule.store_id.is_(None), PointsEarningRule.store_id.in_(own_stores))
    )


RULE_KEYSET = (PointsEarningRule.id,)


async def earning_rules_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, PointsEarningRule]:
    stmt = earning_rules_query(principal).where(PointsEarningRule.id.in_(ids))
    return {r.id: r for r in (await session.scalars(stmt)).all()}


# --- merge ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Holdings:
    balance: int = 0
    pending: int = 0
    debt: int = 0
    lots: int = 0  # lots with points remaining


async def _holdings(
    session: AsyncSession, customer_ids: Sequence[int], now: datetime
) -> dict[int, _Holdings]:
    """What each customer holds at ``now``: what the merge will move once it has settled
    their lots (expired points do not move; matured pending points move as spendable)."""
    balances = await balances_of(session, customer_ids, now)
    held = {cid: _Holdings(b.balance, b.pending, b.debt) for cid, b in balances.items()}
    lots = await session.execute(
        select(PointsLot.customer_id, func.count())
        .where(
            PointsLot.customer_id.in_(customer_ids),
            PointsLot.remaining > 0,
            or_(PointsLot.expires_at.is_(None), PointsLot.expires_at > now),
        )
        .group_by(PointsLot.customer_id)
    )
    for cid, n in lots.all():
        held[cid].lots = n
    return held


class PointsMergeStep:
    """Moves every source's points to the target: TRANSFER entries on both sides (so each
    ledger still sums to its balance) and the lots themselves (so expiry, FIFO order and
    later reversals carry over). Debt on one side is settled from points on the other."""

    name = "points"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        held = await _holdings(plan.session, [plan.target_id, *plan.source_ids], plan.now)
        sources = [held[s] for s in plan.source_ids]
        points = sum(h.balance for h in sources)
        lots = sum(h.lots for h in sources)
        pending = sum(h.pending for h in sources)
        debt = sum(h.debt for h in sources)
        moves, conflicts = [], []
        if points or pending or debt or lots:
            parts = [f"{points} points in {lots} lots"]
            if pending:
                parts.append(f"{pending} pending")
            if debt:
                parts.append(f"{debt} owed")
            moves.append(MergeMove("points", points, ", ".join(parts)))
        target = held[plan.target_id]
        total_debt, total_points = debt + target.debt, points + target.balance
        if total_debt and total_points:
            conflicts.append(
                MergeConflict(
                    "points",
                    f"{total_debt} owed points are settled from the merged balance of "
                    f"{total_points} ({min(total_debt, total_points)} points).",
                )
            )
        return moves, conflicts

    async def apply(self, plan: MergePlan) -> None:
        session, now = plan.session, plan.now
        accounts = {
            cid: await _lock_account(session, cid, now)
            for cid in sorted({plan.target_id, *plan.source_ids})
        }
        target = accounts[plan.target_id]
        await _settle(session, target, now)
        for source_id in sorted(set(plan.source_ids) - {plan.target_id}):
            source = accounts[source_id]
            await _settle(session, source, now)
            moved = _Move(source.balance, source.pending, source.debt)
            await session.execute(
                update(PointsLot)
                .where(PointsLot.customer_id == source_id)
                .values(customer_id=plan.target_id),
                execution_options={"synchronize_session": False},
            )
            if moved == _Move():
                continue
            await _write(
                session,
                source,
                EntryKind.TRANSFER,
                _Move(-moved.amount, -moved.pending_delta, -moved.debt_delta),
                reason=f"merged into customer {plan.target_id}",
                source_type=MERGE_SOURCE,
                source_id=str(plan.target_id),
                actor=plan.actor,
                now=now,
            )
            # One balance and one debt make no sense side by side: settle what can be.
            settle = min(target.debt + moved.debt_delta, target.balance + moved.amount)
            if settle:
                taken = await _consume(session, plan.target_id, settle, now)
                if taken != settle:
                    raise RuntimeError(f"merge into {plan.target_id}: lots disagree with balance")
            await _write(
                session,
                target,
                EntryKind.TRANSFER,
                _Move(moved.amount - settle, moved.pending_delta, moved.debt_delta - settle),
                reason=f"merged from customer {source_id}",
                source_type=MERGE_SOURCE,
                source_id=str(source_id),
                actor=plan.actor,
                now=now,
            )
