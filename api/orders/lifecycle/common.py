"""What the lifecycle steps share: which statuses allow what, who may act and why a step is
refused; the history entry each step writes, and the lines and store they read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.errors import DomainError
from api.orders.errors import OrderErrorCode
from api.orders.models import Order, OrderEvent, OrderLine, OrderStatus
from api.partners.models import Store

SYSTEM_ACTOR = "system:orders"
MAX_REASON = 200

COMPLETED_STATUSES = (
    OrderStatus.COMPLETED,
    OrderStatus.PARTIALLY_REFUNDED,
    OrderStatus.REFUNDED,
)
REFUNDABLE = (OrderStatus.COMPLETED, OrderStatus.PARTIALLY_REFUNDED)

_STATUS_PROBLEM = {
    OrderStatus.PLACED: "The order is not completed yet: cancel it instead.",
    OrderStatus.READY_FOR_PICKUP: "The order is waiting for pickup: cancel it instead.",
    OrderStatus.COMPLETED: "The order is completed: refund it instead.",
    OrderStatus.PARTIALLY_REFUNDED: "The order is completed: refund it instead.",
    OrderStatus.REFUNDED: "The order is refunded in full.",
    OrderStatus.CANCELLED: "The order is cancelled.",
    OrderStatus.EXPIRED: "The order expired: it was not picked up in time.",
}


def invalid_status(status: OrderStatus, message: str | None = None) -> DomainError:
    return DomainError.one(
        OrderErrorCode.INVALID_STATUS, message or _STATUS_PROBLEM[status], "orderId"
    )


def not_found() -> DomainError:
    return DomainError.one(OrderErrorCode.NOT_FOUND, "No such order.", "orderId")


def staff_only(principal: Principal, what: str) -> None:
    if principal.is_member or not principal.is_authenticated:
        raise DomainError.one(OrderErrorCode.FORBIDDEN, f"Members cannot {what}.")


def check_reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON:
        raise DomainError.one(
            OrderErrorCode.INVALID, f"A reason of 1 to {MAX_REASON} characters.", "reason"
        )
    return text


async def order_lines(session: AsyncSession, order_id: int) -> list[OrderLine]:
    stmt = select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.line_no)
    return list((await session.scalars(stmt)).all())


def sku_items(
    lines: Sequence[OrderLine], quantities: dict[int, int] | None = None
) -> dict[int, int]:
    """sku id → quantity, summed over lines (``quantities``: line id → units, else all)."""
    items: Counter[int] = Counter()
    for line in lines:
        units = line.quantity if quantities is None else quantities.get(line.id, 0)
        if units:
            items[line.sku_id] += units
    return dict(items)


def history(
    session: AsyncSession, order: Order, note: str | None, actor: str | None, now: datetime
) -> None:
    session.add(
        OrderEvent(
            order_id=order.id,
            status=order.status,
            note=note[:MAX_REASON] if note else None,
            actor=actor,
            created_at=now,
        )
    )


async def store_row(session: AsyncSession, store_id: int | None) -> Any:
    if store_id is None:
        return None
    stmt = select(Store.id, Store.name, Store.address).where(Store.id == store_id)
    return (await session.execute(stmt)).first()
