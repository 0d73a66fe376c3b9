"""Cancelling an order that is not completed yet (a PLACED or READY pickup order)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.errors import DomainError
from api.orders.errors import OrderErrorCode
from api.orders.lifecycle.common import check_reason, invalid_status
from api.orders.lifecycle.locking import claim_as_owner, explain, scoped_ids
from api.orders.lifecycle.undoing import unwind
from api.orders.models import OPEN_PICKUP, Fulfillment, Order, OrderStatus
from api.orders.notify import publish, recipient
from api.orders.reactions import OrderChange, OrdersWiring
from api.outbox.service import enqueue


async def cancel(
    session: AsyncSession,
    principal: Principal,
    order_id: int,
    *,
    reason: str,
    now: datetime,
    wiring: OrdersWiring,
) -> Order:
    """Cancel an order that is not completed (a PLACED or READY pickup order: orders of the
    other fulfilments complete when they are placed) and undo what it did: release the
    reservation, give back the points it paid with, restore or void its coupons. A member
    cancels their own pickup order until the store has made it ready; staff and HQ any such
    order in their scope. Completed orders are refunded instead (INVALID_STATUS says so)."""
    note = check_reason(reason)
    member = principal.is_member
    guard = [Order.id == order_id, Order.id.in_(scoped_ids(principal))]
    if member:
        guard += [Order.fulfillment == Fulfillment.PICKUP, Order.status == OrderStatus.PLACED]
    else:
        guard.append(Order.status.in_(OPEN_PICKUP))
    order = await claim_as_owner(
        session, guard, {"status": OrderStatus.CANCELLED, "closed_at": now, "updated_at": now}
    )
    if order is None:
        found = await explain(session, principal, order_id)
        if member and found.status in OPEN_PICKUP:
            if found.fulfillment is not Fulfillment.PICKUP:
                raise DomainError.one(
                    OrderErrorCode.FORBIDDEN, "Ask the seller to cancel this order.", "orderId"
                )
            raise invalid_status(
                found.status, "The store has your order ready: ask the store to cancel it."
            )
        raise invalid_status(found.status)
    await unwind(session, order, note, principal.subject, now, wiring.settings.points_policy)
    await wiring.changed(session, OrderChange.CANCELLED, [order.id], [order.customer_id], now)
    publish(session, order, "cancelled")
    await enqueue(
        session,
        "order.cancelled",
        recipient(order),
        {"orderId": order.id, "reason": note, "cancelledBy": "member" if member else "staff"},
        now=now,
    )
    return order
