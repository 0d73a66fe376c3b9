"""What analytics does when orders change and when customers merge (both listed in
``api/wiring.py``): keep the metrics current, attribute new orders, move attributions to the
survivor of a merge."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.attribution import AttributionPolicy, attribute_orders
from api.analytics.metrics import claim_rows, for_ids, refresh_customer_metrics
from api.analytics.models import OrderAttribution
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.orders.reactions import OrderChange, OrdersChanged

# Changes that only add or complete counted orders: nobody loses their last one, so the rows
# are upserted without looking for rows to remove. Any other change (cancel, expiry, refund,
# and whatever is added later) may empty a row.
_ONLY_ADDS = frozenset({OrderChange.CREATED, OrderChange.COMPLETED, OrderChange.IMPORTED})


@dataclass(frozen=True, slots=True)
class MetricsAndAttribution:
    """The reaction to orders (api/wiring.py): keep the changed customers' metrics current
    and attribute new orders under ``policy``: a fixed number of statements per call, for
    one order or an import batch (at most five: an import batch under a window)."""

    policy: AttributionPolicy

    async def __call__(self, session: AsyncSession, changed: OrdersChanged) -> None:
        if not changed.customer_ids:
            return
        customers = changed.customer_ids
        # Import batches (and the orders an import withdraws) hold no customer lock: claim.
        imported = changed.change in (OrderChange.IMPORTED, OrderChange.WITHDRAWN)
        if imported:
            # The buyers' rows, created empty where missing (``claim_rows``): what is left empty
            # (a buyer merged meanwhile) the refresh removes.
            await claim_rows(session, for_ids(customers), changed.now)
        await refresh_customer_metrics(
            session,
            customers,
            prune=imported or changed.change not in _ONLY_ADDS,
            now=changed.now,
        )
        if changed.change in (OrderChange.CREATED, OrderChange.IMPORTED):
            await attribute_orders(
                session,
                changed.order_ids,
                self.policy.rule,
                self.policy.window_days,
                now=changed.now,
            )


class MetricsMergeStep:
    """After the orders moved to the survivor (the "orders" step: steps run in name order,
    and this name sorts after it): their attributions follow, keeping whom they count for,
    the survivor's metrics are recomputed and the merged customers' rows removed."""

    name = "orders.metrics"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        moving = await plan.session.scalar(
            select(func.count())
            .select_from(OrderAttribution)
            .where(OrderAttribution.customer_id.in_(plan.source_ids))
        )
        if not moving:
            return [], []
        plural = "s" if moving != 1 else ""
        return [
            MergeMove(
                "attributions",
                moving,
                f"{moving} attributed order{plural} (still counting for their store and guide)",
            )
        ], []

    async def apply(self, plan: MergePlan) -> None:
        # The metrics rows first, in ascending id order like a rebuild's claim: deleting the
        # source's row before upserting the (usually lower-id) target's deadlocked with one.
        await claim_rows(
            plan.session, for_ids(sorted([plan.target_id, *plan.source_ids])), plan.now
        )
        await plan.session.execute(
            update(OrderAttribution)
            .where(OrderAttribution.customer_id.in_(plan.source_ids))
            .values(customer_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
        await refresh_customer_metrics(
            plan.session, [plan.target_id, *plan.source_ids], now=plan.now
        )
