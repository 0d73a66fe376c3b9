"""What an order's cancel or refund asks of the ledger: taking back part of an earning under the
refund's own source (``reverse_part``), and giving back points the order paid with
(``return_spent``). Both stay within what the earning or redemption has left, whoever calls
them how often, and keep every account equal to its ledger and its lots."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.customers.merge import merge_customers
from api.customers.models import LevelMetric, MemberLevel
from api.customers.qualification import qualification
from api.db import Database
from api.errors import DomainError
from api.loyalty import ledger as loyalty_ledger
from api.loyalty import reversals as loyalty_reversals
from api.loyalty import spending as loyalty_spending
from api.loyalty.errors import PointsErrorCode
from api.loyalty.models import EntryKind, PointsEntry
from tests.loyalty.conftest import (
    DAY,
    POLICY,
    T0,
    account,
    entries,
    new_customers,
    no_mismatches,
)
from tests.wiring import CUSTOMERS

E = EntryKind
HQ = Principal(subject="user:1", role=Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


def code_of(error: pytest.ExceptionInfo[DomainError]) -> PointsErrorCode:
    return error.value.problems[0].code  # type: ignore[return-value]


def taken(entry: PointsEntry) -> int:
    """The points a reversal took back, wherever from (the lot, other lots, debt)."""
    return entry.debt_delta - entry.amount - entry.pending_delta


async def reverse_part(
    db: Database, earning: str, points: int, source: str, now: datetime = T0, **kw: Any
) -> PointsEntry | None:
    async with db.transaction() as session:
        return await loyalty_reversals.reverse_part(
            session,
            earning_source_type=kw.pop("earning_source_type", "order"),
            earning_source_id=earning,
            points=points,
            source_type=kw.pop("source_type", "order_refund"),
            source_id=source,
            reason=f"refund {source}",
            actor="test",
            now=now,
            **kw,
        )


async def return_spent(
    db: Database, redemption: str, points: int, source: str, now: datetime = T0, **kw: Any
) -> PointsEntry | None:
    async with db.transaction() as session:
        return await loyalty_spending.return_spent(
            session,
            redemption_source_type="order",
            redemption_source_id=redemption,
            points=points,
            source_type=kw.pop("source_type", "order_refund"),
            source_id=source,
            reason=f"points back, {source}",
            actor="test",
            now=now,
            policy=POLICY,
            **kw,
        )


# --- reverse_part -----------------------------------------------------------------------------


async def test_a_partial_reversal_takes_points_from_the_earnings_lot_once(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.earn(ann, 20, "o-2")
    entry = await reverse_part(db, "o-1", 30, "r-1")
    assert entry is not None
    assert (entry.kind, entry.amount, entry.debt_delta, entry.lot_id) == (E.REVERSE, -30, 0, 1)
    assert (entry.source_type, entry.source_id) == ("order_refund", "r-1")
    again = await reverse_part(db, "o-1", 30, "r-1")
    assert again is not None and again.id == entry.id  # a retry changes nothing
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (90, 0, True)
    assert [(amount, remaining) for amount, remaining, _, _ in state.lots] == [(100, 70), (20, 20)]


async def test_a_partial_reversal_of_a_pending_earning_leaves_the_rest_pending(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1", pending=True)
    entry = await reverse_part(db, "o-1", 40, "r-1", now=T0 + DAY)
    assert entry is not None and (entry.amount, entry.pending_delta) == (0, -40)
    assert (await points.release(T0 + 7 * DAY)).points == 60
    state = await account(db, ann)
    assert (state.balance, state.pending, state.consistent) == (60, 0, True)
    # The last of a pending lot closes it, like a whole reversal.
    (bob,) = await new_customers(db)
    await points.earn(bob, 50, "o-2", pending=True)
    last = await reverse_part(db, "o-2", 50, "r-2", now=T0 + DAY)
    assert last is not None and last.pending_delta == -50
    state = await account(db, bob)
    assert (state.pending, state.lots) == (0, [(50, 0, True, T0 + 365 * DAY)])
    assert (await points.release(T0 + 30 * DAY)).lots == 0


async def test_spent_points_come_from_other_lots_then_debt_never_beyond_the_earning(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")  # expires first: spent first
    await points.earn(ann, 30, "o-2", now=T0 + DAY)
    await points.redeem(ann, 80, "pay-1", now=T0 + 2 * DAY)  # 80 of o-1's 100
    first = await reverse_part(db, "o-1", 50, "r-1", now=T0 + 3 * DAY)
    # 20 left in o-1's lot, then 30 from o-2.
    assert first is not None and (first.amount, first.debt_delta) == (-50, 0)
    # 50 of the earning are left: asked for 70, it takes 50, all of it owed.
    second = await reverse_part(db, "o-1", 70, "r-2", now=T0 + 4 * DAY)
    assert second is not None
    assert (second.amount, second.debt_delta, taken(second)) == (0, 50, 50)
    assert await reverse_part(db, "o-1", 1, "r-3", now=T0 + 5 * DAY) is None
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (0, 50, True)


async def test_a_whole_reversal_after_partial_ones_takes_only_what_is_left(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.earn(ann, 500, "o-2", now=T0 + DAY)
    await points.redeem(ann, 90, "pay-1", now=T0 + DAY)  # 90 of o-1: 10 left in its lot
    part = await reverse_part(db, "o-1", 40, "r-1", now=T0 + 2 * DAY)  # 10 + 30 from o-2
    assert part is not None and part.amount == -40
    whole = await points.reverse("o-1", now=T0 + 3 * DAY)
    assert taken(whole) == 60  # 100 earned, 40 taken back already
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (410, 0, True)  # 600 - 90 - 100
    # ... and a partial one after the whole reversal finds nothing left.
    assert await reverse_part(db, "o-1", 10, "r-2", now=T0 + 4 * DAY) is None


async def test_what_expired_from_the_lot_is_not_taken_back(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.redeem(ann, 30, "pay-1", now=T0 + DAY)
    await points.earn(ann, 500, "o-2", now=T0 + 200 * DAY)
    await points.expire(T0 + 365 * DAY)  # the 70 left of o-1 expire
    entry = await reverse_part(db, "o-1", 100, "r-1", now=T0 + 366 * DAY)
    assert entry is not None and (entry.amount, entry.debt_delta) == (-30, 0)
    assert (await account(db, ann)).balance == 470


async def test_a_partial_reversal_follows_the_lot_into_a_merge(db, points):
    ann, bob = await new_customers(db, 2)
    await points.earn(ann, 100, "o-1")
    assert await reverse_part(db, "o-1", 10, "r-1") is not None
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, bob, [ann], dry_run=False, wiring=CUSTOMERS, now=T0 + DAY
        )
    entry = await reverse_part(db, "o-1", 100, "r-2", now=T0 + 2 * DAY, customer_id=ann)
    assert entry is not None and (entry.customer_id, taken(entry)) == (bob, 90)
    assert (await account(db, bob)).balance == 0
    assert await no_mismatches(db)


async def test_bad_partial_reversals_are_refused_and_change_nothing(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    with pytest.raises(DomainError) as missing:
        await reverse_part(db, "nope", 10, "r-1")
    assert code_of(missing) is PointsErrorCode.NOT_FOUND
    with pytest.raises(DomainError) as own_source:
        await reverse_part(db, "o-1", 10, "o-1", source_type="order")
    assert code_of(own_source) is PointsErrorCode.INVALID
    for bad in (0, -5, loyalty_ledger.MAX_POINTS + 1):
        with pytest.raises(DomainError) as amount:
            await reverse_part(db, "o-1", bad, "r-1")
        assert code_of(amount) is PointsErrorCode.INVALID_AMOUNT
    assert [e.kind for e in await entries(db, ann)] == [E.EARN]


# --- return_spent -----------------------------------------------------------------------------


async def test_spent_points_come_back_as_a_lot_available_at_once(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-0")
    paid_at = T0 + 10 * DAY
    await points.redeem(ann, 60, "o-1", now=paid_at)
    entry = await return_spent(db, "o-1", 20, "r-1", now=T0 + 12 * DAY)
    assert entry is not None
    assert (entry.kind, entry.amount, entry.debt_delta) == (E.RETURN, 20, 0)
    assert (entry.source_type, entry.source_id) == ("order_refund", "r-1")
    again = await return_spent(db, "o-1", 20, "r-1", now=T0 + 13 * DAY)
    assert again is not None and again.id == entry.id
    state = await account(db, ann)
    assert (state.balance, state.consistent) == (60, True)
    # The lot expires as points earned when they were spent would.
    assert state.lots[-1] == (20, 20, True, paid_at + 365 * DAY)
    # Never more than the redemption has left: 40 of 60.
    rest = await return_spent(db, "o-1", 50, "r-2", now=T0 + 14 * DAY)
    assert rest is not None and rest.amount == 40
    assert await return_spent(db, "o-1", 1, "r-3", now=T0 + 15 * DAY) is None
    assert (await account(db, ann)).balance == 100


async def test_returned_points_settle_debt_first(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-0")
    await points.redeem(ann, 100, "o-1", now=T0 + DAY)
    await points.earn(ann, 30, "o-2", now=T0 + DAY)
    await points.redeem(ann, 30, "pay", now=T0 + DAY)
    await points.reverse("o-2", now=T0 + 2 * DAY)  # 30 owed
    entry = await return_spent(db, "o-1", 50, "c-1", now=T0 + 3 * DAY)
    assert entry is not None and (entry.amount, entry.debt_delta) == (20, -30)
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (20, 0, True)
    # A second return still counts the settled points as given back: 50 of 100 left.
    rest = await return_spent(db, "o-1", 100, "c-2", now=T0 + 3 * DAY)
    assert rest is not None and rest.amount == 50


async def test_points_past_their_expiry_are_not_given_back(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-0")
    await points.redeem(ann, 60, "o-1", now=T0 + DAY)
    assert await return_spent(db, "o-1", 60, "r-1", now=T0 + 366 * DAY) is None
    assert [e.kind for e in await entries(db, ann)] == [E.EARN, E.REDEEM]


async def test_a_return_follows_the_person_through_a_merge(db, points):
    ann, bob = await new_customers(db, 2)
    await points.earn(ann, 100, "o-0")
    await points.redeem(ann, 60, "o-1", now=T0 + DAY)
    assert await return_spent(db, "o-1", 10, "r-1", now=T0 + DAY) is not None
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, bob, [ann], dry_run=False, wiring=CUSTOMERS, now=T0 + 2 * DAY
        )
    entry = await return_spent(db, "o-1", 100, "r-2", now=T0 + 3 * DAY)
    assert entry is not None and (entry.customer_id, entry.amount) == (bob, 50)
    assert (await account(db, bob)).balance == 100
    assert await no_mismatches(db)


async def test_bad_returns_are_refused(db, points):
    ann, bob = await new_customers(db, 2)
    with pytest.raises(DomainError) as missing:
        await return_spent(db, "nope", 10, "r-1")
    assert code_of(missing) is PointsErrorCode.NOT_FOUND
    for who in (ann, bob):
        await points.earn(who, 10, f"e-{who}")
        await points.redeem(who, 10, "shared")
    with pytest.raises(DomainError) as ambiguous:
        await return_spent(db, "shared", 10, "r-1")
    assert code_of(ambiguous) is PointsErrorCode.AMBIGUOUS_SOURCE
    entry = await return_spent(db, "shared", 10, "r-1", customer_id=bob)
    assert entry is not None and entry.customer_id == bob
    with pytest.raises(DomainError) as amount:
        await return_spent(db, "shared", 0, "r-2", customer_id=ann)
    assert code_of(amount) is PointsErrorCode.INVALID_AMOUNT
    assert (await account(db, ann)).balance == 0


async def test_partial_reversals_count_against_earned_points_and_returns_do_not(db, points):
    (ann,) = await new_customers(db)
    level = MemberLevel(
        code="silver",
        name="银卡",
        rank=1,
        metric=LevelMetric.POINTS,
        threshold=Decimal(1),
        window_days=365,
    )
    async with db.transaction() as session:
        session.add(level)
    await points.earn(ann, 100, "o-0")
    await points.redeem(ann, 50, "o-1")
    await reverse_part(db, "o-0", 30, "r-1", now=T0 + DAY)
    await return_spent(db, "o-1", 50, "r-1", now=T0 + DAY)
    async with db.read() as session:
        sums = await qualification(session, [ann], [level], T0 + 2 * DAY)
    assert sums[(LevelMetric.POINTS, 365)][ann] == 70
