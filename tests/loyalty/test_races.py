"""Races: many transactions at once on one customer, each its own session, on both engines.
The outcomes are exact: no lost update, no double spend, no negative balance."""

from __future__ import annotations

import asyncio
from collections import Counter

from api.auth.principal import Role
from api.errors import DomainError
from api.graphql.ids import encode_id
from api.loyalty.models import EntryKind
from tests.loyalty.conftest import DAY, T0, account, entries, new_customers, no_mismatches
from tests.wiring import CUSTOMERS

ADJUST = """
mutation($input: PointsAdjustInput!) {
  pointsAdjust(input: $input) {
    entry { id amount balanceAfter }
    balance { balance }
    errors { code field message }
  }
}"""


async def outcome(call) -> str:
    try:
        await call
    except DomainError as error:
        return error.problems[0].code.name
    return "ok"


async def test_100_concurrent_redemptions_of_10_against_300_exactly_30_succeed(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.earn(ann, 100, "o-2", now=T0 + DAY)
    await points.earn(ann, 100, "o-3", now=T0 + 2 * DAY)
    results = await asyncio.gather(
        *(outcome(points.redeem(ann, 10, f"pay-{i}", now=T0 + 3 * DAY)) for i in range(100))
    )
    assert Counter(results) == {"ok": 30, "INSUFFICIENT_POINTS": 70}
    state = await account(db, ann)
    assert (state.balance, state.consistent) == (0, True)
    ledger = await entries(db, ann)
    assert [e.kind for e in ledger].count(EntryKind.REDEEM) == 30
    assert min(e.balance_after for e in ledger) == 0
    # Each success saw the balance the one before it left: 290, 280, ..., 0.
    redeemed = [e.balance_after for e in ledger if e.kind is EntryKind.REDEEM]
    assert redeemed == list(range(290, -1, -10))
    assert await no_mismatches(db)


async def test_the_same_points_adjust_retried_20_times_at_once_writes_one_entry(
    db, app, issue_token
):
    import httpx

    from tests.conftest import GraphQLClient

    (ann,) = await new_customers(db)
    token = issue_token(Role.MARKETER, subject="user:7")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://qudao.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        gql = GraphQLClient(http)
        variables = {
            "input": {
                "customerId": encode_id("Customer", ann),
                "amount": 88,
                "reason": "补偿: 配送延误",
                "idempotencyKey": "ticket-4711",
            }
        }
        bodies = await asyncio.gather(*(gql(ADJUST, variables) for _ in range(20)))
    payloads = [b["pointsAdjust"] for b in bodies]
    assert all(p["errors"] == [] for p in payloads)
    assert len({p["entry"]["id"] for p in payloads}) == 1
    assert {p["entry"]["balanceAfter"] for p in payloads} == {88}
    assert [e.kind for e in await entries(db, ann)] == [EntryKind.ADJUST]
    assert (await account(db, ann)).balance == 88


async def test_one_key_raced_for_two_customers_adjusts_only_one(db, points):
    ann, bob = await new_customers(db, 2)
    results = await asyncio.gather(
        *(outcome(points.adjust(cid, 10, "k-1")) for cid in (ann, bob) for _ in range(5))
    )
    assert Counter(results) == {"ok": 5, "IDEMPOTENCY_KEY_REUSED": 5}
    balances = sorted([(await account(db, ann)).balance, (await account(db, bob)).balance])
    assert balances == [0, 10]


async def test_concurrent_earn_redeem_reverse_and_the_jobs_keep_balance_equal_to_the_ledger(
    db, points
):
    (ann,) = await new_customers(db)
    # Lots that are already due: some expire, some unlock while the writers run.
    await points.earn(ann, 50, "old", now=T0 - 400 * DAY)
    await points.earn(ann, 60, "pending", now=T0 - 8 * DAY, pending=True)
    await points.earn(ann, 200, "base", now=T0 - 100 * DAY)
    calls = []
    for i in range(15):
        calls.append(outcome(points.earn(ann, 10, f"e-{i}", now=T0, pending=i % 2 == 0)))
        calls.append(outcome(points.earn(ann, 10, f"e-{i}", now=T0)))  # a retry, raced
        calls.append(outcome(points.redeem(ann, 25, f"r-{i}", now=T0)))
    calls += [outcome(points.reverse(f"e-{i}", now=T0)) for i in range(0, 15, 3)]
    calls += [points.expire(T0) for _ in range(3)] + [points.release(T0) for _ in range(3)]
    results = await asyncio.gather(*calls)
    outcomes = Counter(r for r in results if isinstance(r, str))
    assert set(outcomes) <= {"ok", "INSUFFICIENT_POINTS", "NOT_FOUND"}
    state = await account(db, ann)
    assert state.consistent
    assert state.balance >= 0
    ledger = await entries(db, ann)
    assert [e.kind for e in ledger].count(EntryKind.EARN) == 3 + 15  # every retry deduplicated
    assert [e.kind for e in ledger].count(EntryKind.EXPIRE) == 1  # "old", exactly once
    assert [e.source_id for e in ledger if e.kind is EntryKind.RELEASE].count("1") <= 1
    assert all(e.balance_after >= 0 for e in ledger)
    assert await no_mismatches(db)


async def test_a_reversal_retried_at_once_reverses_once(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.earn(ann, 100, "o-2")
    await points.redeem(ann, 150, "pay-1")
    results = await asyncio.gather(*(outcome(points.reverse("o-1")) for _ in range(10)))
    assert results == ["ok"] * 10
    state = await account(db, ann)
    # o-1 was spent in full, o-2 half: 50 come back from o-2, 50 are owed.
    assert (state.balance, state.debt, state.consistent) == (0, 50, True)
    assert [e.kind for e in await entries(db, ann)].count(EntryKind.REVERSE) == 1


async def test_earnings_racing_a_merge_all_land_on_the_survivor(db, points):
    from api.auth.principal import Principal
    from api.auth.scopes import ROLE_SCOPES
    from api.customers.merge import merge_customers

    hq = Principal(subject="user:1", role=Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])
    survivor, duplicate = await new_customers(db, 2)
    await points.earn(duplicate, 100, "before")

    async def merge() -> None:
        async with db.transaction() as session:
            await merge_customers(
                session, hq, survivor, [duplicate], dry_run=False, wiring=CUSTOMERS, now=T0
            )

    earnings = [points.earn(duplicate, 10, f"o-{i}", now=T0) for i in range(20)]
    await asyncio.gather(*earnings[:10], merge(), *earnings[10:])
    # Whichever committed first, every point ends up with the survivor, once.
    assert (await account(db, survivor)).balance == 100 + 20 * 10
    gone = await account(db, duplicate)
    assert (gone.balance, gone.pending, gone.lots) == (0, 0, [])
    assert await no_mismatches(db)
