"""The ledger's batch jobs: expire and release due lots, and check every account's cached
balance against its ledger and its lots (``qudao points``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, false, func, literal, or_, select, true, union
from sqlalchemy.ext.asyncio import AsyncSession

from api.loyalty.ledger import lock_account, settle
from api.loyalty.models import PointsAccount, PointsEntry, PointsLot


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
        account = await lock_account(session, customer_id, now)
        # Expiring does not release (the jobs may run on different schedules); releasing
        # expires what is past due first, so a lot never unlocks after its expiry.
        settled = await settle(session, account, now, release=not expire)
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
