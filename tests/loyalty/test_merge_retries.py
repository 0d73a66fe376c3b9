"""Retries after a merge: ledger entries stay with the id they were written for (a merge
moves lots, not history), so every idempotent write looks for its first attempt across the
whole person: the survivor and every customer merged into it. Whichever id a retry names,
it returns the first entry and changes nothing. And writers naming an old id never lock
that old row, so they cannot deadlock with a merge of the survivor."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.db import Database
from api.errors import DomainError
from api.graphql.ids import encode_id
from api.loyalty import earning as loyalty_earning
from api.loyalty.errors import PointsErrorCode
from api.loyalty.models import EntryKind, PointsEarningRule, PointsEntry
from api.loyalty.rules import Purchase, PurchaseLine
from tests.loyalty.conftest import DAY, POLICY, T0, account, new_customers, no_mismatches
from tests.wiring import CUSTOMERS

HQ = Principal(subject="user:1", role=Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


async def merge(db: Database, target: int, *sources: int) -> None:
    from api.customers.merge import merge_customers

    async with db.transaction() as session:
        await merge_customers(
            session, HQ, target, list(sources), dry_run=False, now=T0, wiring=CUSTOMERS
        )


async def written(db: Database, kind: EntryKind, source_id: str) -> list[PointsEntry]:
    """Every entry of this kind and source, whoever it was written for."""
    async with db.read() as session:
        stmt = select(PointsEntry).where(
            PointsEntry.kind == kind, PointsEntry.source_id == source_id
        )
        return list((await session.scalars(stmt.order_by(PointsEntry.id))).all())


def code_of(error: pytest.ExceptionInfo[DomainError]) -> PointsErrorCode:
    return error.value.problems[0].code  # type: ignore[return-value]


# --- retries after a merge --------------------------------------------------------------------


async def test_an_earning_retried_after_a_merge_with_either_id_adds_nothing(db, points):
    survivor, duplicate = await new_customers(db, 2)
    first = await points.earn(duplicate, 100, "o-1")
    await merge(db, survivor, duplicate)
    assert (await account(db, survivor)).balance == 100
    # The order system retries with the id it now sees (the survivor's), then with the old.
    for retried_with in (survivor, duplicate):
        again = await points.earn(retried_with, 100, "o-1", now=T0 + DAY)
        assert again.id == first.id
    assert (await account(db, survivor)).balance == 100
    assert [e.id for e in await written(db, EntryKind.EARN, "o-1")] == [first.id]
    # The refund finds the one earning: no AMBIGUOUS_SOURCE, nothing left over.
    reversal = await points.reverse("o-1", now=T0 + DAY)
    assert (reversal.customer_id, reversal.amount) == (survivor, -100)
    state = await account(db, survivor)
    assert (state.balance, state.debt, state.consistent) == (0, 0, True)
    assert await no_mismatches(db)


async def test_a_purchase_earning_retried_after_a_merge_returns_the_first_even_if_rules_changed(
    db, points
):
    survivor, duplicate = await new_customers(db, 2)
    async with db.transaction() as session:
        session.add(PointsEarningRule(name="base", points_per_yuan=Decimal(1)))
    purchase = Purchase(
        source_id="o-77", channel="store", lines=[PurchaseLine("TEA-1", Decimal("30.00"))]
    )
    async with db.transaction() as session:
        first = await loyalty_earning.earn_for_purchase(
            session, duplicate, purchase, T0, policy=POLICY
        )
    assert first is not None and first.pending_delta == 30
    await merge(db, survivor, duplicate)
    # The rule is gone: a new quote would earn nothing, but a retry is not a new purchase.
    async with db.transaction() as session:
        await session.execute(update(PointsEarningRule).values(active=False))
    for retried_with in (survivor, duplicate):
        async with db.transaction() as session:
            again = await loyalty_earning.earn_for_purchase(
                session, retried_with, purchase, T0 + DAY, policy=POLICY
            )
        assert again is not None and again.id == first.id
    state = await account(db, survivor)
    assert (state.balance, state.pending, state.consistent) == (0, 30, True)
    assert len(await written(db, EntryKind.EARN, "o-77")) == 1


async def test_a_redemption_retried_after_a_merge_spends_once(db, points):
    survivor, duplicate = await new_customers(db, 2)
    await points.earn(duplicate, 100, "o-1")
    paid = await points.redeem(duplicate, 30, "pay-1")
    await merge(db, survivor, duplicate)
    for retried_with in (survivor, duplicate):
        assert (await points.redeem(retried_with, 30, "pay-1", now=T0 + DAY)).id == paid.id
    assert (await account(db, survivor)).balance == 70
    assert len(await written(db, EntryKind.REDEEM, "pay-1")) == 1
    # The same source with another amount is still a reused key, not a new redemption.
    with pytest.raises(DomainError) as reused:
        await points.redeem(survivor, 40, "pay-1", now=T0 + DAY)
    assert code_of(reused) is PointsErrorCode.IDEMPOTENCY_KEY_REUSED
    assert (await account(db, survivor)).balance == 70
    assert await no_mismatches(db)


async def test_a_reversal_after_a_merge_finds_the_earning_by_either_id_and_reverses_once(
    db, points
):
    survivor, duplicate = await new_customers(db, 2)
    await points.earn(survivor, 50, "own")
    await points.earn(duplicate, 100, "o-1")
    await merge(db, survivor, duplicate)
    first = await points.reverse("o-1", now=T0 + DAY, customer_id=survivor)
    assert (first.customer_id, first.amount) == (survivor, -100)
    for retry in ({"customer_id": duplicate}, {"customer_id": survivor}, {}):
        assert (await points.reverse("o-1", now=T0 + DAY, **retry)).id == first.id
    state = await account(db, survivor)
    assert (state.balance, state.consistent) == (50, True)
    assert len(await written(db, EntryKind.REVERSE, "o-1")) == 1
    assert await no_mismatches(db)


async def test_two_earnings_of_one_source_merged_together_are_told_apart_by_the_exact_id(
    db, points
):
    # Before the merge the two records were different customers, each credited once: both
    # earnings are real. After it, the person holds two lots of one source.
    survivor, duplicate = await new_customers(db, 2)
    await points.earn(survivor, 10, "referral-1", source_type="referral")
    await points.earn(duplicate, 20, "referral-1", source_type="referral")
    await merge(db, survivor, duplicate)
    with pytest.raises(DomainError) as ambiguous:
        await points.reverse("referral-1", source_type="referral")
    assert code_of(ambiguous) is PointsErrorCode.AMBIGUOUS_SOURCE
    undone = await points.reverse("referral-1", source_type="referral", customer_id=duplicate)
    assert (undone.customer_id, undone.amount) == (survivor, -20)
    assert (await account(db, survivor)).balance == 10
    # An earning retried now returns the first of the two; nothing is added.
    again = await points.earn(survivor, 10, "referral-1", source_type="referral")
    assert again.customer_id == survivor and again.amount == 10
    assert (await account(db, survivor)).balance == 10
    assert await no_mismatches(db)


async def test_an_adjustment_retried_after_a_merge_returns_the_first_and_blocks_strangers(
    db, points
):
    survivor, duplicate, stranger = await new_customers(db, 3)
    first = await points.adjust(duplicate, 50, "ticket-1")
    await merge(db, survivor, duplicate)
    for retried_with in (survivor, duplicate):
        assert (await points.adjust(retried_with, 50, "ticket-1", now=T0 + DAY)).id == first.id
    assert (await account(db, survivor)).balance == 50
    # The key still belongs to that person only.
    with pytest.raises(DomainError) as reused:
        await points.adjust(stranger, 50, "ticket-1", now=T0 + DAY)
    assert code_of(reused) is PointsErrorCode.IDEMPOTENCY_KEY_REUSED
    assert (await account(db, stranger)).balance == 0
    assert len(await written(db, EntryKind.ADJUST, "ticket-1")) == 1
    assert await no_mismatches(db)


async def test_a_retry_through_a_chain_of_merges_finds_the_first_entry(db, points):
    # A merged into B, B into C: the merge re-points A straight to C, so one hop finds it.
    c, b, a = await new_customers(db, 3)
    earned = await points.earn(a, 100, "o-1")
    paid = await points.redeem(a, 40, "pay-1")
    granted = await points.adjust(a, 5, "ticket-1")
    await merge(db, b, a)
    await merge(db, c, b)
    for retried_with in (a, b, c):
        assert (await points.earn(retried_with, 100, "o-1", now=T0 + DAY)).id == earned.id
        assert (await points.redeem(retried_with, 40, "pay-1", now=T0 + DAY)).id == paid.id
        assert (await points.adjust(retried_with, 5, "ticket-1", now=T0 + DAY)).id == granted.id
    assert (await account(db, c)).balance == 65
    reversal = await points.reverse("o-1", now=T0 + DAY, customer_id=b)
    assert reversal.customer_id == c
    state = await account(db, c)
    # 60 of o-1 remain in its lot, 40 were spent: the grant covers 5, 35 are owed.
    assert (state.balance, state.debt, state.consistent) == (0, 35, True)
    assert await no_mismatches(db)


async def test_points_adjust_retried_after_a_merge_shows_the_survivors_balance(db, gql):
    survivor, duplicate = await new_customers(db, 2)
    mutation = """
    mutation($input: PointsAdjustInput!) {
      pointsAdjust(input: $input) {
        entry { id amount } balance { balance } errors { code }
      }
    }"""

    def adjust(customer: int) -> dict:
        return {
            "input": {
                "customerId": encode_id("Customer", customer),
                "amount": 30,
                "reason": "售后补偿",
                "idempotencyKey": "ticket-9",
            }
        }

    first = (await gql(mutation, adjust(duplicate)))["pointsAdjust"]
    assert first["errors"] == [] and first["balance"] == {"balance": 30}
    await merge(db, survivor, duplicate)
    for retried_with in (survivor, duplicate):
        again = (await gql(mutation, adjust(retried_with)))["pointsAdjust"]
        assert again["errors"] == []
        assert again["entry"] == first["entry"]
        assert again["balance"] == {"balance": 30}  # the survivor's, where the points are
    assert (await account(db, survivor)).balance == 30


# --- merges racing writers that name an old id -------------------------------------------------


async def wait_until_waiting(db: Database, sessions: int) -> None:
    """Until ``sessions`` transactions wait on a lock (PostgreSQL); SQLite's writers queue on
    the busy timeout before they start, so a short pause lets them line up."""
    if db.engine.dialect.name != "postgresql":
        await asyncio.sleep(0.2)
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(200):
        async with db.read() as session:
            if (await session.execute(query)).scalar_one() >= sessions:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{sessions} transactions never started waiting")


async def test_writers_naming_an_old_id_wait_out_a_merge_of_the_survivor_without_deadlock(
    db, points
):
    """S was merged into T. A merge of T into U locks T, then re-points S's redirect to U;
    an earning and an adjustment naming S arrive while it holds T. They must not hold S
    while they wait for T (the merge needs S: a deadlock); they wait, then follow to U."""
    from api.customers.merge import merge_customers
    from api.customers.models import Customer

    u, t, s = await new_customers(db, 3)
    await points.earn(s, 100, "before")
    await merge(db, t, s)

    async with db.transaction() as session:
        # The merge holds T first (as its own lock step would), so the writers queue on it.
        await session.execute(select(Customer.id).where(Customer.id == t).with_for_update())
        writers = [
            asyncio.create_task(points.earn(s, 10, "o-1", now=T0 + DAY)),
            asyncio.create_task(points.adjust(s, 7, "ticket-1", now=T0 + DAY)),
        ]
        await wait_until_waiting(db, 1 if db.engine.dialect.name != "postgresql" else 2)
        await merge_customers(session, HQ, u, [t], dry_run=False, wiring=CUSTOMERS, now=T0 + DAY)
    earned, granted = await asyncio.wait_for(asyncio.gather(*writers), timeout=30)

    assert (earned.customer_id, granted.customer_id) == (u, u)
    assert (await account(db, u)).balance == 100 + 10 + 7
    for gone in (s, t):
        state = await account(db, gone)
        assert (state.balance, state.pending, state.lots) == (0, 0, [])
    # Retried with the oldest id, both find what they wrote.
    assert (await points.earn(s, 10, "o-1", now=T0 + DAY)).id == earned.id
    assert (await points.adjust(s, 7, "ticket-1", now=T0 + DAY)).id == granted.id
    assert await no_mismatches(db)


async def test_earnings_and_adjustments_racing_a_merge_of_the_survivor_all_land_once(db, points):
    """Whichever commits first, the merge or a writer naming the old id, every point ends
    up with the final survivor exactly once and the books balance."""
    u, t, s = await new_customers(db, 3)
    await points.earn(s, 100, "before")
    await merge(db, t, s)

    async def merge_t_into_u() -> None:
        await merge(db, u, t)

    earnings = [points.earn(s, 10, f"o-{i}", now=T0 + DAY) for i in range(8)]
    grants = [points.adjust(s, 1, f"ticket-{i}", now=T0 + DAY) for i in range(8)]
    retries = [points.earn(t, 10, f"o-{i}", now=T0 + DAY) for i in range(8)]
    calls = [*earnings[:4], *grants[:4], merge_t_into_u(), *earnings[4:], *grants[4:], *retries]
    await asyncio.wait_for(asyncio.gather(*calls), timeout=60)

    assert (await account(db, u)).balance == 100 + 8 * 10 + 8
    for gone in (s, t):
        state = await account(db, gone)
        assert (state.balance, state.pending, state.lots) == (0, 0, [])
    async with db.read() as session:
        per_source = (
            await session.execute(
                select(PointsEntry.source_id, func.count())
                .where(PointsEntry.kind.in_([EntryKind.EARN, EntryKind.ADJUST]))
                .group_by(PointsEntry.source_id)
            )
        ).all()
    assert all(n == 1 for _, n in per_source) and len(per_source) == 1 + 8 + 8
    assert await no_mismatches(db)
