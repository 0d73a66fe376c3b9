"""Qualifying for a member level, and moving up at once.

* upgrades happen at once (``evaluate_level``, called when spend or points arrive);
* downgrades only at the end of a level's period (``level_review.review_levels``);
* a manually set level is a floor: evaluation never places the member below it.

Every change is a ``MemberLevelChange`` row (the history), with its reason."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.errors import CustomerErrorCode
from api.customers.levels import all_levels
from api.customers.locks import lock_customer
from api.customers.models import (
    Customer,
    LevelMetric,
    MemberLevel,
    MemberLevelChange,
    QualifyingSpend,
)
from api.db import insert_or_get, utcnow
from api.errors import DomainError


class ChangeReason:
    JOIN = "join"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    MANUAL = "manual"
    MERGE = "merge"


async def qualification(
    session: AsyncSession,
    customer_ids: Sequence[int],
    levels: Sequence[MemberLevel],
    now: datetime,
) -> dict[tuple[LevelMetric, int], dict[int, Decimal]]:
    """(metric, window days) → customer → the amount in that window ending at ``now``.

    One grouped query per distinct rule, however many customers: the review job runs it
    per batch. POINTS counts what was earned (released and pending) less what refunds
    reversed, from the ledger, as SPEND counts refunds as negative spend. An entry's effect
    is ``amount + pending_delta - debt_delta``: an earning that paid down debt credited less
    but earned the whole; a reversal that found the points spent took nothing but left debt.
    """
    from api.loyalty.models import EntryKind, PointsEntry

    result: dict[tuple[LevelMetric, int], dict[int, Decimal]] = {}
    for metric, window in sorted({(lv.metric, lv.window_days) for lv in levels}, key=str):
        since = now - timedelta(days=window)
        # Spend sums Numeric amounts, points whole numbers: each (customer id, amount).
        stmt: Select[int, Decimal] | Select[int, int]
        if metric is LevelMetric.SPEND:
            stmt = (
                select(QualifyingSpend.customer_id, func.sum(QualifyingSpend.amount))
                .where(
                    QualifyingSpend.customer_id.in_(customer_ids),
                    QualifyingSpend.occurred_at > since,
                    QualifyingSpend.occurred_at <= now,
                )
                .group_by(QualifyingSpend.customer_id)
            )
        else:
            # Ledger entries are never rewritten, so a merged customer's earnings stay under
            # its old id: count them for the customer it was merged into (one hop).
            person = func.coalesce(Customer.merged_into_id, Customer.id)
            stmt = (
                select(
                    person,
                    func.sum(
                        PointsEntry.amount + PointsEntry.pending_delta - PointsEntry.debt_delta
                    ),
                )
                .join(Customer, Customer.id == PointsEntry.customer_id)
                .where(
                    PointsEntry.customer_id.in_(
                        select(Customer.id).where(
                            or_(
                                Customer.id.in_(customer_ids),
                                Customer.merged_into_id.in_(customer_ids),
                            )
                        )
                    ),
                    PointsEntry.kind.in_((EntryKind.EARN, EntryKind.REVERSE)),
                    PointsEntry.created_at > since,
                    PointsEntry.created_at <= now,
                )
                .group_by(person)
            )
        sums: dict[int, Decimal] = defaultdict(Decimal)
        for customer_id, total in await session.execute(stmt):
            sums[customer_id] = Decimal(total or 0)
        result[(metric, window)] = sums
    return result


def best_qualifying(
    customer_id: int,
    levels: Sequence[MemberLevel],
    sums: dict[tuple[LevelMetric, int], dict[int, Decimal]],
) -> MemberLevel | None:
    """The highest level whose rule the customer meets (levels sorted by rank)."""
    best = None
    for level in levels:
        amount = sums[(level.metric, level.window_days)].get(customer_id, Decimal(0))
        if amount >= level.threshold:
            best = level
    return best


def higher_level(a: MemberLevel | None, b: MemberLevel | None) -> MemberLevel | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.rank >= b.rank else b


def period_end(
    level: MemberLevel, levels: Sequence[MemberLevel], start: datetime
) -> datetime | None:
    """When the level next comes up for review; never for the lowest level (nothing below)."""
    if level.rank == levels[0].rank:
        return None
    return start + timedelta(days=level.window_days)


def level_change(
    customer: Customer,
    to: MemberLevel | None,
    reason: str,
    actor: str | None,
    now: datetime,
    levels: Sequence[MemberLevel],
) -> MemberLevelChange:
    change = MemberLevelChange(
        customer_id=customer.id,
        from_level_id=customer.level_id,
        to_level_id=to.id if to else None,
        reason=reason,
        actor=actor,
        created_at=now,
    )
    customer.level_id = to.id if to else None
    customer.level_period_ends_at = period_end(to, levels, now) if to else None
    customer.level_grace_ends_at = None
    customer.updated_at = now
    return change


async def evaluate_level(
    session: AsyncSession, customer_id: int, now: datetime, *, actor: str | None = None
) -> MemberLevelChange | None:
    """Upgrade at once when the member now qualifies for a higher level (or sits below their
    manual floor); a member in grace who qualifies again keeps the level for a new period.
    Never downgrades. Returns the change made, if any."""
    customer = await lock_customer(session, customer_id)
    if customer is None or customer.member_since is None:
        return None
    levels = await all_levels(session)
    if not levels:
        return None
    by_id = {lv.id: lv for lv in levels}
    sums = await qualification(session, [customer.id], levels, now)
    best = best_qualifying(customer.id, levels, sums)
    floor = by_id.get(customer.manual_level_id) if customer.manual_level_id else None
    current = by_id.get(customer.level_id) if customer.level_id else None
    target = higher_level(best, floor)
    if target is not None and (current is None or target.rank > current.rank):
        reason = ChangeReason.UPGRADE if target is best else ChangeReason.MANUAL
        change = level_change(customer, target, reason, actor, now, levels)
        session.add(change)
        await session.flush()
        return change
    if (
        current is not None
        and customer.level_grace_ends_at is not None
        and best is not None
        and best.rank >= current.rank
    ):
        customer.level_grace_ends_at = None
        customer.level_period_ends_at = period_end(current, levels, now)
        customer.updated_at = now
        await session.flush()
    return None


def _finite_decimal(amount: object) -> bool:
    """A finite Decimal (callers outside the type checker may pass a float)."""
    return isinstance(amount, Decimal) and amount.is_finite()


async def record_spend(
    session: AsyncSession,
    customer_id: int,
    amount: Decimal,
    *,
    source_type: str,
    source_id: str,
    at: datetime,
    now: datetime | None = None,
) -> bool:
    """Count spend towards levels, once per (source_type, source_id): a retried order adds
    nothing. A refund is a negative amount under its own source id. Recorded on the live
    customer (following merges); an upgrade it earns happens at once (evaluated as of
    ``now``, by default the later of ``at`` and the clock). True when recorded."""
    if not _finite_decimal(amount):
        raise DomainError.one(CustomerErrorCode.INVALID, "Spend is a finite Decimal.", "amount")
    # Locked first (like every writer of customer data): a merge running now either moves
    # this row with the rest or has redirected us to its survivor.
    customer = await lock_customer(session, customer_id)
    if customer is None:
        raise DomainError.one(CustomerErrorCode.NOT_FOUND, "No such customer.", "customerId")
    live_id = customer.id
    _, created = await insert_or_get(
        session,
        QualifyingSpend,
        {
            "customer_id": live_id,
            "amount": amount,
            "source_type": source_type,
            "source_id": source_id,
            "occurred_at": at,
        },
        ["source_type", "source_id"],
    )
    if created and amount > 0:
        await evaluate_level(session, live_id, now or max(at, utcnow()))
    return created
