"""Who hears of an order's change: its customer's and its store's subscribers (an event after
the commit, or never), and the recipient of its outbox messages."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api import events
from api.orders.models import Order


def publish(session: AsyncSession, order: Order, event: str) -> None:
    """Tell the order's customer and store subscribers (after the commit, or never)."""
    payload = {"orderId": order.id, "status": order.status.value, "event": event}
    if order.customer_id is not None:
        events.emit(session, events.customer_orders_channel(order.customer_id), payload)
    if order.store_id is not None:
        events.emit(session, events.store_orders_channel(order.store_id), payload)


def recipient(order: Order) -> str | None:
    """Who an outbox message about the order goes to: its customer, if it has one."""
    return f"customer:{order.customer_id}" if order.customer_id is not None else None
