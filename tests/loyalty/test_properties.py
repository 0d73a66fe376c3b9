"""Property: whatever happens to a customer's points, in whatever order, the books balance.

Hypothesis draws a sequence of earn / redeem / adjust / reverse / partial reverse (a refund's
share of an earning) / return of spent points / expire / release / merge (one customer into
another, through the real merge) / time passing, runs it against the database, and after
every step checks that:

* every cache equals Σ ledger and Σ lots, and ``check_balances`` finds nothing;
* no balance, pending or debt is below zero, and no lot below zero or above its amount;
  no account holds both spendable points and debt (debt is settled first);
* a redemption succeeds exactly when the point-in-time balance covers it, and consumes the
  lots FIFO by expiry (a lot is touched only when every lot expiring before it is empty);
* after the jobs have run, the point-in-time balance equals the cached one;
* reversals never take back more of an earning than it has left (less what expired), and
  returns never give back more than a redemption spent.

Each example uses a fresh pair of customers in the same database (recreating it per
example would make the suite slow); the check is global, so it covers earlier ones too.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.customers.locks import resolve_customer_id
from api.customers.merge import merge_customers
from api.db import Database
from api.errors import DomainError
from api.loyalty import jobs as loyalty_jobs
from api.loyalty import reversals as loyalty_reversals
from api.loyalty import spending as loyalty_spending
from api.loyalty.errors import PointsErrorCode
from api.loyalty.models import EntryKind, PointsAccount, PointsEntry, PointsLot
from tests.loyalty.conftest import DAY, POLICY, T0, Points, balance_at, new_customers
from tests.wiring import CUSTOMERS

HQ = Principal(subject="user:1", role=Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])
WHO = st.sampled_from([0, 1])  # which of the example's two customers

operations = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), WHO, st.integers(1, 300), st.booleans()),
        st.tuples(st.just("redeem"), WHO, st.integers(1, 400)),
        st.tuples(st.just("adjust"), WHO, st.integers(-300, 300).filter(lambda n: n != 0)),
        st.tuples(st.just("reverse"), st.integers(0, 20)),
        st.tuples(st.just("reverse_part"), st.integers(0, 20), st.integers(1, 200)),
        st.tuples(st.just("return"), st.integers(0, 20), st.integers(1, 200)),
        st.tuples(st.just("expire")),
        st.tuples(st.just("release")),
        st.tuples(st.just("wait"), st.integers(0, 400)),
        st.tuples(st.just("merge"), WHO),
    ),
    min_size=1,
    max_size=14,
)

_examples = itertools.count()


@dataclass
class World:
    db: Database
    points: Points
    customers: list[int]
    now: datetime = T0
    earned: list[str] = field(default_factory=list)
    redeemed: list[str] = field(default_factory=list)
    tag: str = ""
    serial: itertools.count = field(default_factory=itertools.count)

    def source(self, kind: str) -> str:
        return f"{self.tag}-{kind}-{next(self.serial)}"


FIFO = tuple[bool, datetime | None, int]


def fifo_key(lot: PointsLot) -> FIFO:
    return (lot.expires_at is None, lot.expires_at, lot.id)


async def lots_of(db: Database, customer_id: int) -> dict[int, PointsLot]:
    async with db.read() as session:
        rows = await session.scalars(select(PointsLot).where(PointsLot.customer_id == customer_id))
        return {lot.id: lot for lot in rows.all()}


async def live(world: World, who: int) -> int:
    async with world.db.read() as session:
        return await resolve_customer_id(session, world.customers[who]) or 0


async def settle_now(world: World) -> None:
    await world.points.expire(world.now)
    await world.points.release(world.now)


async def spend(world: World, who: int, amount: int, *, adjust: bool) -> None:
    """Redeem (or deduct) and check the outcome against the point-in-time balance, and the
    consumption against FIFO by expiry."""
    customer = await live(world, who)
    await settle_now(world)  # so the spend settles nothing itself: any lot change is its own
    available = (await balance_at(world.db, customer, world.now)).balance
    before = await lots_of(world.db, customer)
    try:
        if adjust:
            await world.points.adjust(
                world.customers[who], -amount, world.source("deduct"), world.now
            )
        else:
            source = world.source("pay")
            await world.points.redeem(world.customers[who], amount, source, world.now)
            world.redeemed.append(source)
    except DomainError as error:
        assert error.problems[0].code is PointsErrorCode.INSUFFICIENT_POINTS
        assert amount > available
        return
    assert amount <= available
    after = await lots_of(world.db, customer)
    taken = {i: before[i].remaining - after[i].remaining for i in before}
    assert sum(taken.values()) == amount
    for lot_id, took in taken.items():
        if took:
            earlier = [
                lot
                for lot in after.values()
                if lot.released
                and fifo_key(lot) < fifo_key(after[lot_id])
                and (lot.expires_at is None or lot.expires_at > world.now)
            ]
            assert all(lot.remaining == 0 for lot in earlier), "FIFO by expiry broken"


async def step(world: World, op: tuple) -> None:
    name = op[0]
    if name == "earn":
        _, who, amount, pending = op
        source = world.source("order")
        await world.points.earn(world.customers[who], amount, source, world.now, pending=pending)
        world.earned.append(source)
    elif name == "redeem":
        await spend(world, op[1], op[2], adjust=False)
    elif name == "adjust":
        _, who, delta = op
        if delta < 0:
            await spend(world, who, -delta, adjust=True)
        else:
            await world.points.adjust(world.customers[who], delta, world.source("grant"), world.now)
    elif name == "reverse":
        if world.earned:
            source = world.earned[op[1] % len(world.earned)]
            first = await world.points.reverse(source, world.now)
            assert (await world.points.reverse(source, world.now)).id == first.id
    elif name == "reverse_part":
        if world.earned:
            earning = world.earned[op[1] % len(world.earned)]
            refund = world.source("refund")
            first = await partial_reversal(world, earning, op[2], refund)
            again = await partial_reversal(world, earning, op[2], refund)
            assert (again and again.id) == (first and first.id)
    elif name == "return":
        if world.redeemed:
            redemption = world.redeemed[op[1] % len(world.redeemed)]
            refund = world.source("return")
            first = await give_back(world, redemption, op[2], refund)
            again = await give_back(world, redemption, op[2], refund)
            assert (again and again.id) == (first and first.id)
    elif name == "expire":
        await world.points.expire(world.now)
    elif name == "release":
        await world.points.release(world.now)
    elif name == "wait":
        world.now += op[1] * DAY
    elif name == "merge":
        target, source = world.customers[op[1]], world.customers[1 - op[1]]
        if await live(world, 0) != await live(world, 1):
            async with world.db.transaction() as session:
                await merge_customers(
                    session, HQ, target, [source], dry_run=False, wiring=CUSTOMERS, now=world.now
                )


async def partial_reversal(
    world: World, earning: str, points: int, source: str
) -> PointsEntry | None:
    async with world.db.transaction() as session:
        return await loyalty_reversals.reverse_part(
            session,
            earning_source_type="order",
            earning_source_id=earning,
            points=points,
            source_type="refund",
            source_id=source,
            reason="partial refund",
            actor="test",
            now=world.now,
        )


async def give_back(world: World, redemption: str, points: int, source: str) -> PointsEntry | None:
    async with world.db.transaction() as session:
        return await loyalty_spending.return_spent(
            session,
            redemption_source_type="order",
            redemption_source_id=redemption,
            points=points,
            source_type="refund",
            source_id=source,
            reason="points back",
            actor="test",
            now=world.now,
            policy=POLICY,
        )


async def within_what_was_earned_and_spent(session: Any) -> None:
    """Σ taken back from each earning ≤ its points less what expired from its lot; Σ given
    back of each redemption ≤ what it spent."""
    entries = (await session.scalars(select(PointsEntry))).all()
    lots = {lot.id: lot for lot in (await session.scalars(select(PointsLot))).all()}
    taken: Counter[int] = Counter()
    for e in entries:
        if e.kind is EntryKind.REVERSE:
            taken[e.lot_id] += e.debt_delta - e.amount - e.pending_delta
        elif e.kind is EntryKind.EXPIRE:
            taken[e.lot_id] -= e.amount + e.pending_delta
    for e in entries:
        if e.kind is EntryKind.EARN:
            assert taken[e.lot_id] <= lots[e.lot_id].amount
    spent = {
        (e.source_type, e.source_id, e.customer_id): -e.amount
        for e in entries
        if e.kind is EntryKind.REDEEM
    }
    returned: Counter[tuple[str, str]] = Counter()
    for e in entries:
        if e.kind is EntryKind.RETURN:
            lot = lots[e.lot_id]
            returned[(lot.source_type, lot.source_id)] += e.amount - e.debt_delta
    for (source_type, source_id, _), points in spent.items():
        assert returned[(source_type, source_id)] <= points


async def check(world: World) -> None:
    async with world.db.read() as session:
        assert await loyalty_jobs.check_balances(session) == []
        await within_what_was_earned_and_spent(session)
        accounts = (await session.scalars(select(PointsAccount))).all()
        assert all(min(a.balance, a.pending, a.debt) >= 0 for a in accounts)
        # Debt is settled first from any points that become spendable: never both at once.
        assert all(a.debt == 0 or a.balance == 0 for a in accounts)
        lots = (await session.scalars(select(PointsLot))).all()
        assert all(0 <= lot.remaining <= lot.amount for lot in lots)


async def point_in_time_agrees_with_the_cache(world: World) -> None:
    await settle_now(world)
    for who in (0, 1):
        customer = await live(world, who)
        async with world.db.read() as session:
            cached = await session.get(PointsAccount, customer)
        at_now = await balance_at(world.db, customer, world.now)
        expected = (cached.balance, cached.pending, cached.debt) if cached else (0, 0, 0)
        assert (at_now.balance, at_now.pending, at_now.debt) == expected


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_the_books_balance_after_any_sequence_of_operations(db, ops):
    world = World(db, Points(db), await new_customers(db, 2), tag=f"x{next(_examples)}")
    for op in ops:
        await step(world, op)
        await check(world)
    await point_in_time_agrees_with_the_cache(world)
