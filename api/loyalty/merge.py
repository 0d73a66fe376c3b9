"""What a customer merge does to points (a step of ``Wiring.customers.merge_steps``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.loyalty.balances import balances_of
from api.loyalty.ledger import Move, consume, lock_account_row, settle, write_entry
from api.loyalty.models import EntryKind, PointsLot

MERGE_SOURCE = "customer_merge"  # TRANSFER entries name the other customer


@dataclass(slots=True)
class _Holdings:
    balance: int = 0
    pending: int = 0
    debt: int = 0
    lots: int = 0  # lots with points remaining


async def _holdings(
    session: AsyncSession, customer_ids: Sequence[int], now: datetime
) -> dict[int, _Holdings]:
    """What each customer holds at ``now``: what the merge will move once it has settled
    their lots (expired points do not move; matured pending points move as spendable)."""
    balances = await balances_of(session, customer_ids, now)
    held = {cid: _Holdings(b.balance, b.pending, b.debt) for cid, b in balances.items()}
    lots = await session.execute(
        select(PointsLot.customer_id, func.count())
        .where(
            PointsLot.customer_id.in_(customer_ids),
            PointsLot.remaining > 0,
            or_(PointsLot.expires_at.is_(None), PointsLot.expires_at > now),
        )
        .group_by(PointsLot.customer_id)
    )
    for cid, n in lots.all():
        held[cid].lots = n
    return held


class PointsMergeStep:
    """Moves every source's points to the target: TRANSFER entries on both sides (so each
    ledger still sums to its balance) and the lots themselves (so expiry, FIFO order and
    later reversals carry over). Debt on one side is settled from points on the other."""

    name = "points"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        held = await _holdings(plan.session, [plan.target_id, *plan.source_ids], plan.now)
        sources = [held[s] for s in plan.source_ids]
        points = sum(h.balance for h in sources)
        lots = sum(h.lots for h in sources)
        pending = sum(h.pending for h in sources)
        debt = sum(h.debt for h in sources)
        moves, conflicts = [], []
        if points or pending or debt or lots:
            parts = [f"{points} points in {lots} lots"]
            if pending:
                parts.append(f"{pending} pending")
            if debt:
                parts.append(f"{debt} owed")
            moves.append(MergeMove("points", points, ", ".join(parts)))
        target = held[plan.target_id]
        total_debt, total_points = debt + target.debt, points + target.balance
        if total_debt and total_points:
            conflicts.append(
                MergeConflict(
                    "points",
                    f"{total_debt} owed points are settled from the merged balance of "
                    f"{total_points} ({min(total_debt, total_points)} points).",
                )
            )
        return moves, conflicts

    async def apply(self, plan: MergePlan) -> None:
        session, now = plan.session, plan.now
        accounts = {
            cid: await lock_account_row(session, cid, now)
            for cid in sorted({plan.target_id, *plan.source_ids})
        }
        target = accounts[plan.target_id]
        await settle(session, target, now)
        for source_id in sorted(set(plan.source_ids) - {plan.target_id}):
            source = accounts[source_id]
            await settle(session, source, now)
            moved = Move(source.balance, source.pending, source.debt)
            await session.execute(
                update(PointsLot)
                .where(PointsLot.customer_id == source_id)
                .values(customer_id=plan.target_id),
                execution_options={"synchronize_session": False},
            )
            if moved == Move():
                continue
            await write_entry(
                session,
                source,
                EntryKind.TRANSFER,
                Move(-moved.amount, -moved.pending_delta, -moved.debt_delta),
                reason=f"merged into customer {plan.target_id}",
                source_type=MERGE_SOURCE,
                source_id=str(plan.target_id),
                actor=plan.actor,
                now=now,
            )
            # One balance and one debt make no sense side by side: settle what can be.
            settled = min(target.debt + moved.debt_delta, target.balance + moved.amount)
            if settled:
                taken = await consume(session, plan.target_id, settled, now)
                if taken != settled:
                    raise RuntimeError(f"merge into {plan.target_id}: lots disagree with balance")
            await write_entry(
                session,
                target,
                EntryKind.TRANSFER,
                Move(moved.amount - settled, moved.pending_delta, moved.debt_delta - settled),
                reason=f"merged from customer {source_id}",
                source_type=MERGE_SOURCE,
                source_id=str(source_id),
                actor=plan.actor,
                now=now,
            )
