"""Helpers of the points tests: customers straight in the database (the ledger needs nothing
else of them), a fixed clock, and a look at an account from every side."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from api.customers.models import Customer
from api.db import Database
from api.loyalty import adjustments as loyalty_adjustments
from api.loyalty import balances as loyalty_balances
from api.loyalty import earning as loyalty_earning
from api.loyalty import jobs as loyalty_jobs
from api.loyalty import reversals as loyalty_reversals
from api.loyalty import spending as loyalty_spending
from api.loyalty.models import EntryKind, PointsAccount, PointsEntry, PointsLot
from api.loyalty.rules import PointsPolicy

T0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = PointsPolicy(pending_days=7, expiry="rolling:365")


async def new_customers(db: Database, n: int = 1, **fields: Any) -> list[int]:
    async with db.transaction() as session:
        rows = [Customer(name=f"顾客{i}", **fields) for i in range(n)]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


@dataclass(frozen=True, slots=True)
class Account:
    """One customer's points as the cache, the ledger and the lots each tell it."""

    balance: int
    pending: int
    debt: int
    ledger: tuple[int, int, int]
    lots: list[tuple[int, int, bool, datetime | None]]  # amount, remaining, released, expiry

    @property
    def consistent(self) -> bool:
        released = sum(r for _, r, rel, _ in self.lots if rel)
        pending = sum(r for _, r, rel, _ in self.lots if not rel)
        return (
            (self.balance, self.pending, self.debt) == self.ledger
            and (self.balance, self.pending) == (released, pending)
            and all(0 <= r <= a for a, r, _, _ in self.lots)
        )


async def account(db: Database, customer_id: int) -> Account:
    async with db.read() as session:
        row = await session.get(PointsAccount, customer_id)
        sums = (
            await session.execute(
                select(
                    func.coalesce(func.sum(PointsEntry.amount), 0),
                    func.coalesce(func.sum(PointsEntry.pending_delta), 0),
                    func.coalesce(func.sum(PointsEntry.debt_delta), 0),
                ).where(PointsEntry.customer_id == customer_id)
            )
        ).one()
        lots = (
            await session.execute(
                select(
                    PointsLot.amount, PointsLot.remaining, PointsLot.released, PointsLot.expires_at
                )
                .where(PointsLot.customer_id == customer_id)
                .order_by(PointsLot.id)
            )
        ).all()
    cached = (row.balance, row.pending, row.debt) if row else (0, 0, 0)
    return Account(*cached, tuple(int(s) for s in sums), [tuple(lot) for lot in lots])  # type: ignore[arg-type]


async def entries(db: Database, customer_id: int) -> list[PointsEntry]:
    async with db.read() as session:
        stmt = select(PointsEntry).where(PointsEntry.customer_id == customer_id)
        return list((await session.scalars(stmt.order_by(PointsEntry.id))).all())


async def kinds(db: Database, customer_id: int) -> list[EntryKind]:
    return [e.kind for e in await entries(db, customer_id)]


async def balance_at(db: Database, customer_id: int, now: datetime) -> loyalty_balances.Balance:
    async with db.read() as session:
        return (await loyalty_balances.balances_of(session, [customer_id], now))[customer_id]


async def no_mismatches(db: Database) -> bool:
    async with db.read() as session:
        return await loyalty_jobs.check_balances(session) == []


class Points:
    """The service, each call its own transaction, with the test policy."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def earn(self, customer_id: int, points: int, source: str, now: datetime = T0, **kw: Any):
        kw.setdefault("pending", False)
        kw.setdefault("policy", POLICY)
        async with self.db.transaction() as session:
            return await loyalty_earning.earn(
                session,
                customer_id,
                points,
                source_type=kw.pop("source_type", "order"),
                source_id=source,
                reason=kw.pop("reason", f"order {source}"),
                actor=kw.pop("actor", None),
                now=now,
                **kw,
            )

    async def redeem(self, customer_id: int, points: int, source: str, now: datetime = T0):
        async with self.db.transaction() as session:
            return await loyalty_spending.redeem(
                session,
                customer_id,
                points,
                source_type="order",
                source_id=source,
                reason=f"paid with points, order {source}",
                actor="test",
                now=now,
            )

    async def reverse(self, source: str, now: datetime = T0, **kw: Any):
        async with self.db.transaction() as session:
            return await loyalty_reversals.reverse(
                session,
                source_type=kw.pop("source_type", "order"),
                source_id=source,
                reason=f"refund {source}",
                actor="test",
                now=now,
                **kw,
            )

    async def adjust(
        self, customer_id: int, delta: int, key: str, now: datetime = T0, reason: str = "goodwill"
    ):
        async with self.db.transaction() as session:
            return await loyalty_adjustments.adjust(
                session,
                customer_id,
                delta,
                idempotency_key=key,
                reason=reason,
                actor="user:1",
                now=now,
                policy=POLICY,
            )

    async def expire(self, now: datetime, limit: int = 500) -> loyalty_jobs.JobResult:
        async with self.db.transaction() as session:
            return await loyalty_jobs.expire_due(session, now, limit)

    async def release(self, now: datetime, limit: int = 500) -> loyalty_jobs.JobResult:
        async with self.db.transaction() as session:
            return await loyalty_jobs.release_due(session, now, limit)


@pytest.fixture
def points(db: Database) -> Points:
    return Points(db)
