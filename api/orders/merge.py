"""The orders' step of a customer merge (listed in ``api/wiring.py``)."""

from __future__ import annotations

from sqlalchemy import func, select, update

from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.orders.models import Order


class OrderMergeStep:
    """Moves the sources' orders to the target: one person, one order history (and the
    target's spend, points and coupons already follow through their own steps)."""

    name = "orders"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        moving = await plan.session.scalar(
            select(func.count()).select_from(Order).where(Order.customer_id.in_(plan.source_ids))
        )
        if not moving:
            return [], []
        plural = "s" if moving != 1 else ""
        return [MergeMove("orders", moving, f"{moving} order{plural}")], []

    async def apply(self, plan: MergePlan) -> None:
        await plan.session.execute(
            update(Order)
            .where(Order.customer_id.in_(plan.source_ids))
            .values(customer_id=plan.target_id, updated_at=plan.now),
            execution_options={"synchronize_session": False},
        )
