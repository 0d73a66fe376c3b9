"""Undoing what an open order did (a cancel, an expiry): its reservation, the points it paid
with, its coupons; and giving back an order's coupons (also after a refund in full)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.coupons import release as coupon_release
from api.inventory import movements
from api.loyalty import spending as loyalty_spending
from api.loyalty.rules import PointsPolicy
from api.orders.lifecycle.common import MAX_REASON, history, order_lines, sku_items
from api.orders.models import ORDER_SOURCE, Fulfillment, Order, OrderCoupon

CLOSE_SOURCE = "order_close"  # points given back when an open order is cancelled or expires


async def unwind(
    session: AsyncSession,
    order: Order,
    note: str,
    actor: str,
    now: datetime,
    policy: PointsPolicy,
) -> None:
    """Undo an open order: its reservation, the points it paid with, its coupon_release. (An open
    order has earned nothing yet: points are earned when it completes.)"""
    if order.fulfillment is Fulfillment.PICKUP and order.store_id is not None:
        await movements.release_reservation(
            session,
            order.store_id,
            items=sku_items(await order_lines(session, order.id)),
            source_type=ORDER_SOURCE,
            source_id=str(order.id),
            reason=f"{order.status.value}: {note}"[:MAX_REASON],
            actor=actor,
            now=now,
        )
    if order.points_used > 0 and order.customer_id is not None:
        await loyalty_spending.return_spent(
            session,
            redemption_source_type=ORDER_SOURCE,
            redemption_source_id=str(order.id),
            points=order.points_used,
            source_type=CLOSE_SOURCE,
            source_id=str(order.id),
            reason=f"order {order.id} {order.status.value}"[:MAX_REASON],
            actor=actor,
            now=now,
            customer_id=order.customer_id,
            policy=policy,
        )
    await release_coupons(session, order, now)
    history(session, order, note, actor, now)


async def release_coupons(session: AsyncSession, order: Order, now: datetime) -> None:
    """Restore or void the coupons the order used, per their templates: exactly those of
    its ``order_coupon`` rows (never a coupon redeemed elsewhere under a reference that
    reads like this order's id)."""
    used = await session.scalars(
        select(OrderCoupon.coupon_id).where(OrderCoupon.order_id == order.id)
    )
    await coupon_release.release_order_coupons(session, order.id, list(used), now=now)
