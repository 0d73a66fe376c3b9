"""The period-end review of member levels (``qudao members review-levels``, daily): a member
who no longer qualifies enters a grace period; still not qualifying when it ends, they drop
to the best level they do qualify for; qualifying again in grace keeps the level and starts
a new period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.levels import all_levels
from api.customers.models import Customer, CustomerStatus, MemberLevel
from api.customers.qualification import (
    ChangeReason,
    best_qualifying,
    higher_level,
    level_change,
    period_end,
    qualification,
)

REVIEW_BATCH = 500


@dataclass(slots=True)
class ReviewSummary:
    reviewed: int = 0
    renewed: int = 0
    upgraded: int = 0
    entered_grace: int = 0
    grace_cleared: int = 0
    downgraded: int = 0

    def add(self, other: ReviewSummary) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _due(now: datetime) -> Any:
    return and_(
        Customer.status == CustomerStatus.ACTIVE,
        Customer.member_since.is_not(None),
        or_(
            and_(Customer.level_grace_ends_at.is_(None), Customer.level_period_ends_at <= now),
            Customer.level_grace_ends_at <= now,
        ),
    )


async def review_levels(
    session: AsyncSession, now: datetime, *, limit: int | None = REVIEW_BATCH
) -> ReviewSummary:
    """Review the members whose level period (or grace) has ended by ``now``; at most
    ``limit`` of them (the CLI commits batch by batch until none is due).

    Qualifying still (or again): a new period. Not qualifying at period end: grace until
    period end + the level's grace days. Not qualifying when grace ends: down to the best
    level they qualify for, never below their manual floor.
    """
    summary = ReviewSummary()
    levels = await all_levels(session)
    if not levels:
        return summary
    by_id = {lv.id: lv for lv in levels}
    stmt = select(Customer).where(_due(now)).order_by(Customer.id).with_for_update()
    if limit is not None:
        stmt = stmt.limit(limit)
    members = list(await session.scalars(stmt.execution_options(populate_existing=True)))
    if not members:
        return summary
    sums = await qualification(session, [m.id for m in members], levels, now)
    for customer in members:
        summary.reviewed += 1
        current = by_id.get(customer.level_id) if customer.level_id else None
        floor = by_id.get(customer.manual_level_id) if customer.manual_level_id else None
        # Never below the floor, nor below the entry level: a member always has a level.
        target = higher_level(
            higher_level(best_qualifying(customer.id, levels, sums), floor), levels[0]
        )
        if current is None or (target is not None and target.rank >= current.rank):
            if target is not None and (current is None or target.rank > current.rank):
                session.add(level_change(customer, target, ChangeReason.UPGRADE, None, now, levels))
                summary.upgraded += 1
                continue
            if customer.level_grace_ends_at is not None:
                summary.grace_cleared += 1
            else:
                summary.renewed += 1
            customer.level_grace_ends_at = None
            customer.level_period_ends_at = _next_period(customer, current, levels, now)
            customer.updated_at = now
            continue
        if customer.level_grace_ends_at is None:
            assert customer.level_period_ends_at is not None
            grace_end = customer.level_period_ends_at + timedelta(days=current.grace_days)
            if grace_end > now:
                customer.level_grace_ends_at = grace_end
                customer.updated_at = now
                summary.entered_grace += 1
                continue
        # Grace is over (or there was none): down to what they qualify for.
        session.add(level_change(customer, target, ChangeReason.DOWNGRADE, None, now, levels))
        summary.downgraded += 1
    await session.flush()
    return summary


def _next_period(
    customer: Customer, level: MemberLevel | None, levels: Sequence[MemberLevel], now: datetime
) -> datetime | None:
    """Periods follow each other from the last one's end (a late job does not shift them),
    but always end in the future."""
    if level is None:
        return None
    end = customer.level_period_ends_at
    if end is None or period_end(level, levels, now) is None:
        return period_end(level, levels, now)
    step = timedelta(days=level.window_days)
    while end <= now:
        end += step
    return end
