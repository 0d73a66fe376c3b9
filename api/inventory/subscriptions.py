"""``stockAlerts(storeId)``: a location's low-stock alerts, pushed as they are raised."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from api import events
from api.graphql.context import Info
from api.graphql.ids import decode_id_of
from api.graphql.subscriptions import NotFound, follow, operation_context
from api.inventory import queries
from api.inventory.schema import StockAlert, StockReaders
from api.partners.service import stores_by_id


@strawberry.type
class InventorySubscription:
    @strawberry.subscription(
        description="库存预警 as they are raised at a location you may see (HQ: any; a "
        "partner: its own; store staff: theirs): each alert, read when it is sent.",
        permission_classes=[StockReaders],
    )
    async def stock_alerts(
        self, info: Info, store_id: strawberry.ID
    ) -> AsyncGenerator[StockAlert, None]:
        context = operation_context(info)
        principal = context.principal
        store_pk = decode_id_of(store_id, "Store")
        async with context.db.read() as session:
            if not await stores_by_id(session, principal, [store_pk]):
                raise NotFound("Store")

        async def read(session: AsyncSession, event: dict[str, Any]) -> StockAlert | None:
            alerts = await queries.alerts_by_id(session, principal, [event["alertId"]])
            alert = alerts.get(event["alertId"])
            return StockAlert.from_row(alert) if alert is not None else None

        return follow(context, events.stock_alerts_channel(store_pk), read)


__all__ = ["InventorySubscription"]
