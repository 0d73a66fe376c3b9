"""Merging duplicate customers, and finding them.

A merge moves everything of the source customers onto the target in ONE transaction: the
customers domain locks the rows (ascending id, like every other writer of several
customers), moves identities, tags, consents, profile gaps, membership and level history,
then runs every domain's registered step (points, coupons, orders ...), then marks the
sources MERGED with a redirect so their old ids keep resolving. The preview (dry run) is
computed by the very code the merge runs, so it lists exactly what the merge then does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.errors import CustomerErrorCode, require_hq
from api.customers.merge_customer_data import move_customer_data, plan_customer_data
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import (
    Customer,
    CustomerStatus,
)
from api.customers.qualification import evaluate_level
from api.customers.reactions import CustomersWiring
from api.db import utcnow
from api.errors import DomainError, Problem

MAX_SOURCES = 10


@dataclass(slots=True)
class MergeOutcome:
    target: Customer
    source_ids: list[int]
    moves: list[MergeMove]
    conflicts: list[MergeConflict]
    dry_run: bool


def _check_ids(target_id: int, source_ids: Sequence[int]) -> None:
    problems: list[Problem] = []
    if not source_ids:
        problems.append(
            Problem(CustomerErrorCode.REQUIRED, "Name at least one source.", ("sourceIds",))
        )
    if len(source_ids) > MAX_SOURCES:
        problems.append(
            Problem(
                CustomerErrorCode.MERGE_INVALID,
                f"At most {MAX_SOURCES} sources per merge.",
                ("sourceIds",),
            )
        )
    seen: set[int] = set()
    for index, source in enumerate(source_ids):
        if source == target_id:
            problems.append(
                Problem(
                    CustomerErrorCode.MERGE_INVALID,
                    "A customer cannot be merged into itself.",
                    ("sourceIds", str(index)),
                )
            )
        elif source in seen:
            problems.append(
                Problem(
                    CustomerErrorCode.MERGE_INVALID,
                    "This source is listed twice.",
                    ("sourceIds", str(index)),
                )
            )
        seen.add(source)
    if problems:
        raise DomainError(problems)


async def _lock(
    session: AsyncSession, principal: Principal, target_id: int, source_ids: Sequence[int]
) -> tuple[Customer, list[Customer]]:
    """Lock target and sources in ascending id order (every multi-customer writer does, so
    two merges never deadlock); refuse missing, invisible or already merged ones."""
    stmt = (
        select(Customer)
        .where(Customer.id.in_([target_id, *source_ids]))
        .order_by(Customer.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rows = {c.id: c for c in await session.scalars(restrict(stmt, Customer, principal))}
    problems: list[Problem] = []
    paths = [(target_id, ("targetId",))] + [
        (s, ("sourceIds", str(i))) for i, s in enumerate(source_ids)
    ]
    for customer_id, path in paths:
        row = rows.get(customer_id)
        if row is None:
            problems.append(Problem(CustomerErrorCode.NOT_FOUND, "No such customer.", path))
        elif row.status is CustomerStatus.MERGED:
            problems.append(
                Problem(
                    CustomerErrorCode.MERGE_INVALID,
                    "This customer was merged already; its id redirects to the survivor.",
                    path,
                )
            )
    if problems:
        raise DomainError(problems)
    return rows[target_id], [rows[s] for s in source_ids]


async def merge_customers(
    session: AsyncSession,
    principal: Principal,
    target_id: int,
    source_ids: Sequence[int],
    *,
    dry_run: bool,
    wiring: CustomersWiring,
    now: datetime | None = None,
) -> MergeOutcome:
    """``customersMerge``: preview (``dry_run``) or merge ``source_ids`` into ``target_id``.

    Everything happens in the caller's one transaction; any failure rolls it all back.
    """
    require_hq(principal, "merge customers")
    now = now or utcnow()
    _check_ids(target_id, source_ids)
    target, sources = await _lock(session, principal, target_id, source_ids)
    own = await plan_customer_data(session, target, sources)
    plan = MergePlan(
        session=session,
        target_id=target.id,
        source_ids=[s.id for s in sources],
        actor=principal.subject,
        now=now,
    )
    moves, conflicts = list(own.moves), list(own.conflicts)
    steps = wiring.merge_steps
    for step in steps:
        step_moves, step_conflicts = await step.preview(plan)
        moves += step_moves
        conflicts += step_conflicts
    outcome = MergeOutcome(target, plan.source_ids, moves, conflicts, dry_run)
    if dry_run:
        return outcome

    await move_customer_data(session, own, target, sources, principal.subject, now)
    for step in steps:
        await step.apply(plan)
    for source in sources:
        source.status = CustomerStatus.MERGED
        source.merged_into_id = target.id
        # The survivor holds the membership now; a merged row must not count twice.
        source.member_since = None
        source.level_id = None
        source.manual_level_id = None
        source.level_period_ends_at = None
        source.level_grace_ends_at = None
        source.updated_at = now
    await session.flush()
    # Customers merged into a source earlier now redirect straight to the target (one hop).
    await session.execute(
        update(Customer)
        .where(Customer.merged_into_id.in_(plan.source_ids))
        .values(merged_into_id=target.id, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    # The combined spend and points may qualify for more.
    await evaluate_level(session, target.id, now, actor=principal.subject)
    await session.refresh(target)
    return outcome
