"""The points service, one story per rule: earning (pending, idempotent, debt first),
spending FIFO by expiry, reversals and debt, adjustments, the jobs and the check."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select, update

from api.customers.models import Customer, CustomerStatus, LevelMetric, MemberLevel
from api.errors import DomainError
from api.loyalty import adjustments as loyalty_adjustments
from api.loyalty import earning as loyalty_earning
from api.loyalty import jobs as loyalty_jobs
from api.loyalty import ledger as loyalty_ledger
from api.loyalty import merge as loyalty_merge
from api.loyalty.errors import PointsErrorCode
from api.loyalty.models import EntryKind, PointsAccount, PointsEarningRule, PointsLot
from api.loyalty.rules import PointsPolicy, Purchase, PurchaseLine
from tests.loyalty.conftest import (
    DAY,
    POLICY,
    T0,
    account,
    balance_at,
    entries,
    kinds,
    new_customers,
    no_mismatches,
)

E = EntryKind


def code_of(error: pytest.ExceptionInfo[DomainError]) -> PointsErrorCode:
    return error.value.problems[0].code  # type: ignore[return-value]


# --- earning ----------------------------------------------------------------------------------


async def test_pending_points_unlock_after_the_return_window(db, points):
    (ann,) = await new_customers(db)
    entry = await points.earn(ann, 100, "o-1", pending=True)
    assert (entry.kind, entry.amount, entry.pending_delta, entry.balance_after) == (
        E.EARN,
        0,
        100,
        0,
    )
    assert (await account(db, ann)).lots == [(100, 100, False, T0 + 365 * DAY)]
    # Inside the window: pending, not spendable.
    now = await balance_at(db, ann, T0 + 6 * DAY)
    assert (now.balance, now.pending) == (0, 100)
    with pytest.raises(DomainError) as refused:
        await points.redeem(ann, 10, "r-1", now=T0 + 6 * DAY)
    assert code_of(refused) is PointsErrorCode.INSUFFICIENT_POINTS
    # After it: spendable at once, before any job has run ...
    later = await balance_at(db, ann, T0 + 7 * DAY)
    assert (later.balance, later.pending, later.next_expires_at) == (100, 0, T0 + 365 * DAY)
    assert (await account(db, ann)).balance == 0  # the cache is as of the last write
    # ... and the job releases it into the cached balance.
    released = await points.release(T0 + 7 * DAY)
    assert (released.customers, released.lots, released.points) == (1, 1, 100)
    after = await account(db, ann)
    assert (after.balance, after.pending, after.consistent) == (100, 0, True)
    assert await kinds(db, ann) == [E.EARN, E.RELEASE]
    assert (await points.release(T0 + 8 * DAY)).lots == 0  # nothing twice


async def test_a_retried_earning_returns_the_first_entry_and_changes_nothing(db, points):
    (ann,) = await new_customers(db)
    first = await points.earn(ann, 100, "o-1")
    again = await points.earn(ann, 100, "o-1", now=T0 + DAY)
    other_amount = await points.earn(ann, 999, "o-1")
    assert again.id == first.id == other_amount.id
    state = await account(db, ann)
    assert (state.balance, len(state.lots)) == (100, 1)
    # The same source for another kind of entry or another customer is another earning.
    (bob,) = await new_customers(db)
    assert (await points.earn(bob, 5, "o-1")).id != first.id


@pytest.mark.parametrize("bad", [0, -5, loyalty_ledger.MAX_POINTS + 1, True, 1.5])
async def test_earning_refuses_a_bad_amount(db, points, bad):
    (ann,) = await new_customers(db)
    with pytest.raises(DomainError) as refused:
        await points.earn(ann, bad, "o-1")
    assert code_of(refused) is PointsErrorCode.INVALID_AMOUNT
    assert await entries(db, ann) == []


async def test_earning_for_a_missing_customer_or_without_a_reason_is_refused(db, points):
    with pytest.raises(DomainError) as missing:
        await points.earn(424242, 10, "o-1")
    assert code_of(missing) is PointsErrorCode.NOT_FOUND
    (ann,) = await new_customers(db)
    with pytest.raises(DomainError) as no_reason:
        await points.earn(ann, 10, "o-1", reason=" ")
    assert code_of(no_reason) is PointsErrorCode.INVALID
    with pytest.raises(DomainError) as long_source:
        await points.earn(ann, 10, "x" * 101)
    assert code_of(long_source) is PointsErrorCode.INVALID


async def test_earning_for_a_merged_customer_lands_on_the_customer_it_was_merged_into(db, points):
    old, new = await new_customers(db, 2)
    async with db.transaction() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == old)
            .values(status=CustomerStatus.MERGED, merged_into_id=new)
        )
    entry = await points.earn(old, 40, "o-1")
    assert entry.customer_id == new
    assert (await account(db, new)).balance == 40
    # A retry naming the old id finds the first earning.
    assert (await points.earn(old, 40, "o-1")).id == entry.id


async def test_earning_upgrades_a_member_whose_points_qualify(db, points):
    async with db.transaction() as session:
        silver = MemberLevel(
            code="silver", name="银卡", rank=0, metric=LevelMetric.POINTS, threshold=Decimal(0)
        )
        gold = MemberLevel(
            code="gold", name="金卡", rank=1, metric=LevelMetric.POINTS, threshold=Decimal(500)
        )
        session.add_all([silver, gold])
        await session.flush()
        member = Customer(name="会员", member_since=T0 - DAY, level_id=silver.id)
        session.add(member)
        await session.flush()
        member_id, gold_id = member.id, gold.id
    await points.earn(member_id, 499, "o-1")
    await points.earn(member_id, 1, "o-2")
    async with db.read() as session:
        assert (await session.get(Customer, member_id)).level_id == gold_id


# --- earning from purchases -------------------------------------------------------------------


async def test_a_purchase_earns_what_the_rules_give_it_once(db, points):
    (ann,) = await new_customers(db)
    async with db.transaction() as session:
        session.add_all(
            [
                PointsEarningRule(name="base", points_per_yuan=Decimal(1)),
                PointsEarningRule(name="tea ×3", sku="TEA-1", multiplier=Decimal(3)),
                PointsEarningRule(
                    name="expired campaign",
                    multiplier=Decimal(100),
                    priority=9,
                    ends_at=T0 - DAY,
                ),
            ]
        )
    purchase = Purchase(
        source_id="o-77",
        channel="mini_program",
        lines=[PurchaseLine("TEA-1", Decimal("19.90")), PurchaseLine("CUP-1", Decimal("5.50"))],
    )
    async with db.transaction() as session:
        quoted = await loyalty_earning.quote_purchase(session, purchase, T0)
        entry = await loyalty_earning.earn_for_purchase(session, ann, purchase, T0, policy=POLICY)
    assert quoted.points == 59 + 5
    assert entry is not None
    assert (entry.kind, entry.pending_delta, entry.source_type, entry.source_id) == (
        E.EARN,
        64,
        "order",
        "o-77",
    )
    # Retried after the rules changed: the first earning stands.
    async with db.transaction() as session:
        await session.execute(update(PointsEarningRule).values(active=False))
    async with db.transaction() as session:
        again = await loyalty_earning.earn_for_purchase(session, ann, purchase, T0, policy=POLICY)
    assert again is not None and again.id == entry.id
    # With no rule left, a new purchase earns nothing and writes nothing.
    free = Purchase(source_id="o-78", channel="store", lines=[PurchaseLine("A", Decimal(10))])
    async with db.transaction() as session:
        assert (
            await loyalty_earning.earn_for_purchase(session, ann, free, T0, policy=POLICY) is None
        )
    assert len(await entries(db, ann)) == 1


async def test_a_bad_purchase_is_refused(db):
    (ann,) = await new_customers(db)
    bad_lines = [
        [],
        [PurchaseLine("", Decimal(1))],
        [PurchaseLine("A", Decimal(-1))],
        [PurchaseLine("A", Decimal("NaN"))],
    ]
    for lines in bad_lines:
        purchase = Purchase(source_id="o-1", channel="store", lines=lines)
        with pytest.raises(DomainError):
            async with db.transaction() as session:
                await loyalty_earning.earn_for_purchase(session, ann, purchase, T0, policy=POLICY)


# --- spending ---------------------------------------------------------------------------------


async def test_redemption_consumes_the_lots_that_expire_first(db, points):
    (ann,) = await new_customers(db)
    never = PointsPolicy(pending_days=7, expiry="never")
    annual = PointsPolicy(pending_days=7, expiry="annual:12-31")
    await points.earn(ann, 100, "forever", policy=never)  # never expires: spent last
    await points.earn(ann, 100, "late", now=T0 + 30 * DAY)  # rolling: T0 + 395d
    await points.earn(ann, 100, "early")  # rolling: T0 + 365d
    await points.earn(ann, 100, "annual", policy=annual)  # 2027-12-31 16:00 UTC: after both
    await points.redeem(ann, 150, "r-1", now=T0 + 40 * DAY)
    assert [lot[1] for lot in (await account(db, ann)).lots] == [100, 50, 0, 100]
    await points.redeem(ann, 200, "r-2", now=T0 + 40 * DAY)
    assert [lot[1] for lot in (await account(db, ann)).lots] == [50, 0, 0, 0]
    state = await account(db, ann)
    assert (state.balance, state.consistent) == (50, True)
    assert [e.balance_after for e in await entries(db, ann)][-2:] == [250, 50]


async def test_points_past_their_expiry_are_not_spendable_even_before_the_job(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "old")
    await points.earn(ann, 30, "new", now=T0 + 100 * DAY)
    expired_at = T0 + 365 * DAY
    assert (await balance_at(db, ann, expired_at)).balance == 30
    with pytest.raises(DomainError) as refused:
        await points.redeem(ann, 31, "r-1", now=expired_at)
    assert code_of(refused) is PointsErrorCode.INSUFFICIENT_POINTS
    assert "Only 30 points" in refused.value.problems[0].message
    # A successful redemption settles the expiry first, in the same transaction.
    await points.redeem(ann, 30, "r-2", now=expired_at)
    assert await kinds(db, ann) == [E.EARN, E.EARN, E.EXPIRE, E.REDEEM]
    state = await account(db, ann)
    assert (state.balance, state.consistent) == (0, True)


async def test_a_redemption_is_idempotent_by_source(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    first = await points.redeem(ann, 40, "pay-1")
    assert (await points.redeem(ann, 40, "pay-1")).id == first.id
    with pytest.raises(DomainError) as reused:
        await points.redeem(ann, 41, "pay-1")
    assert code_of(reused) is PointsErrorCode.IDEMPOTENCY_KEY_REUSED
    assert (await account(db, ann)).balance == 60


@pytest.mark.parametrize("bad", [0, -1, loyalty_ledger.MAX_POINTS + 1])
async def test_a_redemption_of_a_bad_amount_is_refused(db, points, bad):
    (ann,) = await new_customers(db)
    with pytest.raises(DomainError) as refused:
        await points.redeem(ann, bad, "pay-1")
    assert code_of(refused) is PointsErrorCode.INVALID_AMOUNT


async def test_a_refused_redemption_leaves_nothing_behind(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 10, "o-1")
    with pytest.raises(DomainError):
        await points.redeem(ann, 11, "pay-1")
    assert await kinds(db, ann) == [E.EARN]
    assert (await account(db, ann)).balance == 10


# --- reversals and debt -----------------------------------------------------------------------


async def test_reversing_an_unspent_earning_takes_its_points_back(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.earn(ann, 20, "o-2")
    entry = await points.reverse("o-1")
    assert (entry.kind, entry.amount, entry.debt_delta, entry.lot_id) == (E.REVERSE, -100, 0, 1)
    assert (await points.reverse("o-1")).id == entry.id  # idempotent
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (20, 0, True)


async def test_reversing_a_pending_earning_cancels_it(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1", pending=True)
    entry = await points.reverse("o-1", now=T0 + DAY)
    assert (entry.amount, entry.pending_delta, entry.debt_delta) == (0, -100, 0)
    state = await account(db, ann)
    assert (state.balance, state.pending, state.lots) == (0, 0, [(100, 0, True, T0 + 365 * DAY)])
    assert (await points.release(T0 + 30 * DAY)).lots == 0  # nothing left to release


async def test_spent_points_are_taken_from_other_lots_and_the_rest_becomes_debt(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")  # expires first: spent first
    await points.earn(ann, 30, "o-2", now=T0 + DAY)
    await points.redeem(ann, 80, "pay-1", now=T0 + 2 * DAY)  # 80 from o-1
    entry = await points.reverse("o-1", now=T0 + 3 * DAY)
    # 20 left in o-1 come back; of the 80 spent, 30 come from o-2 and 50 are owed.
    assert (entry.amount, entry.debt_delta, entry.balance_after) == (-50, 50, 0)
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (0, 50, True)
    assert (await balance_at(db, ann, T0 + 3 * DAY)).debt == 50
    # The next points settle the debt first: an available earning at once ...
    settled = await points.earn(ann, 30, "o-3", now=T0 + 4 * DAY)
    assert (settled.amount, settled.debt_delta) == (0, -30)
    # ... a pending one when it is released.
    await points.earn(ann, 100, "o-4", now=T0 + 5 * DAY, pending=True)
    assert (await balance_at(db, ann, T0 + 12 * DAY)).balance == 80  # 100 − 20 still owed
    await points.release(T0 + 12 * DAY)
    state = await account(db, ann)
    assert (state.balance, state.debt, state.consistent) == (80, 0, True)
    assert (await entries(db, ann))[-1].debt_delta == -20


async def test_what_expired_from_a_lot_is_not_taken_again_on_reversal(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 100, "o-1")
    await points.redeem(ann, 30, "pay-1", now=T0 + DAY)
    await points.earn(ann, 500, "o-2", now=T0 + 200 * DAY)
    await points.expire(T0 + 365 * DAY)  # the 70 left of o-1 expire
    entry = await points.reverse("o-1", now=T0 + 366 * DAY)
    assert (entry.amount, entry.debt_delta) == (-30, 0)  # only what was spent
    assert (await account(db, ann)).balance == 470


async def test_reversing_an_unknown_or_shared_source_is_refused(db, points):
    with pytest.raises(DomainError) as missing:
        await points.reverse("nope")
    assert code_of(missing) is PointsErrorCode.NOT_FOUND
    ann, bob = await new_customers(db, 2)
    await points.earn(ann, 10, "referral-1", source_type="referral")
    await points.earn(bob, 10, "referral-1", source_type="referral")
    with pytest.raises(DomainError) as ambiguous:
        await points.reverse("referral-1", source_type="referral")
    assert code_of(ambiguous) is PointsErrorCode.AMBIGUOUS_SOURCE
    entry = await points.reverse("referral-1", source_type="referral", customer_id=bob)
    assert entry.customer_id == bob
    assert (await account(db, ann)).balance == 10


# --- adjustments ------------------------------------------------------------------------------


async def test_a_grant_and_a_deduction(db, points):
    (ann,) = await new_customers(db)
    grant = await points.adjust(ann, 50, "k-1")
    assert (grant.kind, grant.amount, grant.source_type) == (E.ADJUST, 50, "adjust")
    assert (await account(db, ann)).lots == [(50, 50, True, T0 + 365 * DAY)]  # never pending
    deduct = await points.adjust(ann, -20, "k-2")
    assert (deduct.amount, deduct.balance_after) == (-20, 30)
    with pytest.raises(DomainError) as short:
        await points.adjust(ann, -31, "k-3")
    assert code_of(short) is PointsErrorCode.INSUFFICIENT_POINTS
    assert await no_mismatches(db)


async def test_an_idempotency_key_returns_the_first_adjustment_and_refuses_other_arguments(
    db, points
):
    ann, bob = await new_customers(db, 2)
    first = await points.adjust(ann, 50, "k-1")
    assert (await points.adjust(ann, 50, "k-1", now=T0 + DAY)).id == first.id
    for customer, delta, reason in ((ann, 60, "goodwill"), (bob, 50, "goodwill"), (ann, 50, "x")):
        with pytest.raises(DomainError) as reused:
            await points.adjust(customer, delta, "k-1", reason=reason)
        assert code_of(reused) is PointsErrorCode.IDEMPOTENCY_KEY_REUSED
    assert (await account(db, ann)).balance == 50
    assert await entries(db, bob) == []


async def test_a_grant_that_settles_debt_is_still_recognised_on_retry(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 10, "o-1")
    await points.redeem(ann, 10, "pay-1")
    await points.reverse("o-1")  # 10 owed
    grant = await points.adjust(ann, 25, "k-1")
    assert (grant.amount, grant.debt_delta) == (15, -10)
    assert (await points.adjust(ann, 25, "k-1")).id == grant.id


@pytest.mark.parametrize(
    "bad",
    [0, loyalty_adjustments.MAX_ADJUST_POINTS + 1, -loyalty_adjustments.MAX_ADJUST_POINTS - 1],
)
async def test_an_adjustment_of_a_bad_amount_is_refused(db, points, bad):
    (ann,) = await new_customers(db)
    with pytest.raises(DomainError) as refused:
        await points.adjust(ann, bad, "k-1")
    assert code_of(refused) is PointsErrorCode.INVALID_AMOUNT


# --- the jobs and the check -------------------------------------------------------------------


async def test_the_expire_job_expires_due_lots_in_batches(db, points):
    customers = await new_customers(db, 5)
    for i, cid in enumerate(customers):
        await points.earn(cid, 10 + i, f"o-{i}")
        await points.earn(cid, 1, f"later-{i}", now=T0 + 10 * DAY)
    due = T0 + 365 * DAY
    first = await points.expire(due, limit=3)
    second = await points.expire(due, limit=3)
    third = await points.expire(due, limit=3)
    assert (first.customers, second.customers, third.customers) == (3, 2, 0)
    assert first.points + second.points == sum(10 + i for i in range(5))
    for cid in customers:
        state = await account(db, cid)
        assert (state.balance, state.consistent) == (1, True)
        assert (await entries(db, cid))[-1].actor == loyalty_ledger.SYSTEM_ACTOR
    assert await no_mismatches(db)


async def test_the_expire_job_does_not_release_and_release_does_not_unlock_expired_lots(db, points):
    (ann,) = await new_customers(db)
    await points.earn(ann, 10, "o-1", pending=True)
    await points.expire(T0 + 8 * DAY)
    assert (await account(db, ann)).pending == 10  # expiring is not releasing
    # A lot that expired while pending (a policy with a long window) never unlocks.
    long_window = PointsPolicy(pending_days=30, expiry="rolling:31")
    await points.earn(ann, 5, "o-2", pending=True, policy=long_window)
    result = await points.release(T0 + 40 * DAY)
    assert (result.lots, result.points) == (1, 10)
    state = await account(db, ann)
    assert (state.balance, state.pending, state.consistent) == (10, 0, True)
    assert await kinds(db, ann) == [E.EARN, E.EARN, E.RELEASE, E.EXPIRE]
    assert (await entries(db, ann))[-1].pending_delta == -5


async def test_the_check_finds_caches_that_disagree_with_the_ledger_or_the_lots(db, points):
    ann, bob, cy = await new_customers(db, 3)
    for cid in (ann, bob, cy):
        await points.earn(cid, 10, f"o-{cid}")
    assert await no_mismatches(db)
    async with db.transaction() as session:
        await session.execute(
            update(PointsAccount).where(PointsAccount.customer_id == bob).values(balance=11)
        )
        await session.execute(
            update(PointsLot).where(PointsLot.customer_id == cy).values(remaining=9)
        )
    async with db.read() as session:
        found = await loyalty_jobs.check_balances(session)
    assert [(m.customer_id, m.cached, m.ledger, m.lots) for m in found] == [
        (bob, (11, 0, 0), (10, 0, 0), (10, 0)),
        (cy, (10, 0, 0), (10, 0, 0), (9, 0)),
    ]


# --- merge ------------------------------------------------------------------------------------


async def test_a_merge_moves_points_lots_and_debt_with_transfers_on_both_sides(db, points):
    from api.customers.merge_steps import MergePlan

    target, rich, owing = await new_customers(db, 3)
    await points.earn(target, 10, "t-1")
    await points.earn(rich, 100, "r-1")
    await points.earn(rich, 40, "r-2", pending=True)
    await points.earn(owing, 30, "w-1")
    await points.redeem(owing, 30, "w-pay")
    await points.reverse("w-1")  # owing owes 30
    step = loyalty_merge.PointsMergeStep()
    async with db.transaction() as session:
        plan = MergePlan(session, target, [rich, owing], "user:1", T0 + DAY)
        moves, conflicts = await step.preview(plan)
    assert [(m.kind, m.count, m.description) for m in moves] == [
        ("points", 100, "100 points in 2 lots, 40 pending, 30 owed")
    ]
    assert [c.field for c in conflicts] == ["points"]
    async with db.transaction() as session:
        await step.apply(MergePlan(session, target, [rich, owing], "user:1", T0 + DAY))
    merged = await account(db, target)
    # 10 + 100 points, 40 pending, and the 30 owed settled from them.
    assert (merged.balance, merged.pending, merged.debt, merged.consistent) == (80, 40, 0, True)
    for source in (rich, owing):
        state = await account(db, source)
        assert (state.balance, state.pending, state.debt, state.lots) == (0, 0, 0, [])
        assert (await entries(db, source))[-1].kind is E.TRANSFER
    assert [e.kind for e in await entries(db, target)][-2:] == [E.TRANSFER, E.TRANSFER]
    assert await no_mismatches(db)
    # The moved lot is still reversible, on the customer who holds it now.
    entry = await points.reverse("r-2", now=T0 + 2 * DAY)
    assert (entry.customer_id, entry.pending_delta) == (target, -40)
    async with db.read() as session:
        owners = set((await session.scalars(select(PointsLot.customer_id))).all())
    assert owners == {target}
