"""What Qudao records itself (recorded_scope "system"): an order's touch (FIRST_ORDER,
REPURCHASE or MARKETPLACE_PURCHASE) while the order counts, and MEMBER_REGISTERED when a
customer joins. Both are reactions in ``api/wiring.py``."""

from __future__ import annotations

import typing
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.catalog.models import MARKETPLACES
from api.customers.reactions import MemberJoined
from api.db import dialect_insert
from api.growth.models import SYSTEM_SCOPE, Touchpoint, TouchpointStep
from api.orders.models import COUNTED_STATUSES, Order
from api.orders.reactions import OrderChange, OrdersChanged

_PRIVATE_STEPS = (TouchpointStep.FIRST_ORDER, TouchpointStep.REPURCHASE)


def _repeat(order: Any) -> ColumnElement[bool]:
    """Whether the order's customer has an earlier counted private-domain order (by
    placed_at, then id): its order is then a REPURCHASE, else the FIRST_ORDER."""
    earlier = aliased(Order, name="earlier_order")
    return exists().where(
        earlier.customer_id == order.customer_id,
        earlier.id != order.id,
        earlier.channel.not_in(MARKETPLACES),
        earlier.status.in_(COUNTED_STATUSES),
        or_(
            earlier.placed_at < order.placed_at,
            and_(earlier.placed_at == order.placed_at, earlier.id < order.id),
        ),
    )


async def record_order_touchpoints(session: AsyncSession, changed: OrdersChanged) -> None:
    """The order hook. Placed and imported orders become touchpoints, in one statement
    whatever the batch's size: a counted order of a customer is a MARKETPLACE_PURCHASE on a
    marketplace channel, else FIRST_ORDER or REPURCHASE (``_repeat``). Idempotent: event
    "order:<id>". An order that stops counting (cancelled, expired, wholly refunded) is
    undone: ``_withdraw_order_touchpoints``."""
    if changed.change in (OrderChange.CANCELLED, OrderChange.EXPIRED, OrderChange.REFUNDED):
        await _withdraw_order_touchpoints(session, changed)
        return
    if changed.change not in (OrderChange.CREATED, OrderChange.IMPORTED):
        return
    step = case(
        (Order.channel.in_(MARKETPLACES), TouchpointStep.MARKETPLACE_PURCHASE.value),
        (_repeat(Order), TouchpointStep.REPURCHASE.value),
        else_=TouchpointStep.FIRST_ORDER.value,
    )
    source = select(
        literal(SYSTEM_SCOPE, String(64)),
        literal("order:", String(100)).concat(cast(Order.id, String)),
        Order.customer_id,
        step,
        cast(Order.channel, String),
        Order.partner_id,
        Order.store_id,
        Order.id,
        Order.placed_at,
        literal(SYSTEM_SCOPE, String(100)),
        literal(changed.now, Touchpoint.created_at.type),
    ).where(
        Order.id.in_(changed.order_ids),
        Order.customer_id.is_not(None),
        Order.status.in_(COUNTED_STATUSES),
    )
    columns = [
        "recorded_scope",
        "event_id",
        "customer_id",
        "step",
        "source_channel",
        "partner_id",
        "store_id",
        "order_id",
        "occurred_at",
        "recorded_by",
        "created_at",
    ]
    await session.execute(
        dialect_insert(session)(Touchpoint)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["recorded_scope", "event_id"])
    )


async def _withdraw_order_touchpoints(session: AsyncSession, changed: OrdersChanged) -> None:
    """A system order touch exists exactly while its order counts: an order that no longer
    does takes its touch with it (one DELETE; a partial refund still counts and deletes
    nothing). Its customer's remaining order touches are then classified again (one UPDATE,
    only when a touch went): a later order placed while this one still counted was recorded
    as a REPURCHASE and is now the first order.

    Deleting rather than filtering on the order's status when reading keeps every reader of
    touchpoints (the funnel's single statement and its index probes, attribution) free of a
    join to the orders."""
    undone = select(Order.id).where(
        Order.id.in_(changed.order_ids), Order.status.not_in(COUNTED_STATUSES)
    )
    # A DELETE's result is a CursorResult (with a rowcount); AsyncSession types it Result.
    deleted = typing.cast(
        CursorResult[Any],
        await session.execute(
            delete(Touchpoint)
            .where(Touchpoint.recorded_scope == SYSTEM_SCOPE, Touchpoint.order_id.in_(undone))
            .execution_options(synchronize_session=False)
        ),
    )
    if not deleted.rowcount or not changed.customer_ids:
        return
    order = aliased(Order, name="touch_order")
    repeat = exists(select(order.id).where(order.id == Touchpoint.order_id, _repeat(order)))
    await session.execute(
        update(Touchpoint)
        .where(
            Touchpoint.recorded_scope == SYSTEM_SCOPE,
            Touchpoint.customer_id.in_(changed.customer_ids),
            Touchpoint.step.in_(_PRIVATE_STEPS),
            Touchpoint.order_id.is_not(None),
        )
        .values(
            step=case(
                (repeat, TouchpointStep.REPURCHASE.value),
                else_=TouchpointStep.FIRST_ORDER.value,
            )
        )
        .execution_options(synchronize_session=False)
    )


async def record_member_registered(session: AsyncSession, joined: MemberJoined) -> None:
    """The membership hook: MEMBER_REGISTERED at the recruiting store (and guide), once per
    customer (event "member:<customer id>")."""
    await session.execute(
        dialect_insert(session)(Touchpoint)
        .values(
            recorded_scope=SYSTEM_SCOPE,
            event_id=f"member:{joined.customer_id}",
            customer_id=joined.customer_id,
            step=TouchpointStep.MEMBER_REGISTERED,
            partner_id=joined.partner_id,
            store_id=joined.store_id,
            guide_id=joined.guide_id,
            occurred_at=joined.now,
            recorded_by=SYSTEM_SCOPE,
            created_at=joined.now,
        )
        .on_conflict_do_nothing(index_elements=["recorded_scope", "event_id"])
    )
