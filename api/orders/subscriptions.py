"""``orderUpdates(orderId, storeId)``: an order's status changes, pushed as they happen.

Events are published per customer and per store (``api/events.py``), never per partner or
brand-wide: a subscription follows one order, one store, or (with neither) the caller's own
orders (a member) or store (store staff).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from api import events
from api.auth.principal import Principal
from api.errors import InputError
from api.graphql.context import Info
from api.graphql.ids import decode_id_of
from api.graphql.permissions import requires
from api.graphql.subscriptions import NotFound, follow, operation_context
from api.orders import queries
from api.orders.models import Order as OrderRow
from api.orders.schema import Order
from api.partners.service import stores_by_id


def _order_channel(principal: Principal, order: OrderRow) -> str:
    """Where the order's events go that this principal follows: a member's own channel, else
    its store's (a store's staff and partner see those), else its customer's."""
    if order.customer_id is not None and (principal.is_member or order.store_id is None):
        return events.customer_orders_channel(order.customer_id)
    if order.store_id is not None:
        return events.store_orders_channel(order.store_id)
    # Neither customer nor store: nobody is told of it (api.orders.notify.publish).
    raise InputError("This order has no updates to follow: it has no customer and no store.")


@strawberry.type
class OrderSubscription:
    @strawberry.subscription(
        description="Status changes of orders you may see, each order read when it is sent: "
        "`orderId` one order; `storeId` a store's orders (staff and partners); neither: a "
        "member's own orders, or store staff's store.",
        permission_classes=[requires("orders:read")],
    )
    async def order_updates(
        self,
        info: Info,
        order_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[Order, None]:
        context = operation_context(info)
        principal = context.principal
        order_pk = decode_id_of(order_id, "Order") if order_id is not None else None
        store_pk = decode_id_of(store_id, "Store") if store_id is not None else None
        if order_pk is not None:
            async with context.db.read() as session:
                order = (await queries.orders_by_id(session, principal, [order_pk])).get(order_pk)
            if order is None or (store_pk is not None and order.store_id != store_pk):
                raise NotFound("Order")
            channel = _order_channel(principal, order)
        elif store_pk is not None:
            if principal.is_member:  # a store's orders are its staff's, never a member's
                raise NotFound("Store")
            async with context.db.read() as session:
                if not await stores_by_id(session, principal, [store_pk]):
                    raise NotFound("Store")
            channel = events.store_orders_channel(store_pk)
        elif principal.is_member and principal.customer_id is not None:
            channel = events.customer_orders_channel(principal.customer_id)
        elif principal.store_id is not None:
            channel = events.store_orders_channel(principal.store_id)
        else:
            raise InputError("Name the order (orderId) or the store (storeId) to follow.")

        async def read(session: AsyncSession, event: dict[str, Any]) -> Order | None:
            if order_pk is not None and event["orderId"] != order_pk:
                return None
            found = await queries.orders_by_id(session, principal, [event["orderId"]])
            row = found.get(event["orderId"])
            return Order.from_row(row, context) if row is not None else None

        return follow(context, channel, read)


__all__ = ["OrderSubscription"]
