"""The growth domain's step of a customer merge (listed in ``api/wiring.py``)."""

from __future__ import annotations

from sqlalchemy import func, select, update

from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.growth.models import Touchpoint


class TouchpointMergeStep:
    """Moves the sources' touchpoints to the target: the funnel counts one person once."""

    name = "touchpoints"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        moving = await plan.session.scalar(
            select(func.count())
            .select_from(Touchpoint)
            .where(Touchpoint.customer_id.in_(plan.source_ids))
        )
        if not moving:
            return [], []
        plural = "s" if moving != 1 else ""
        return [MergeMove("touchpoints", moving, f"{moving} touchpoint{plural}")], []

    async def apply(self, plan: MergePlan) -> None:
        await plan.session.execute(
            update(Touchpoint)
            .where(Touchpoint.customer_id.in_(plan.source_ids))
            .values(customer_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
