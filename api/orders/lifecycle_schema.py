"""GraphQL surface of the order lifecycle: thin wrappers over its steps (api/orders/lifecycle/).

``LifecycleMutation`` is merged into the orders domain's mutation type. ``Order`` and
``OrderError`` live in ``api.orders.schema``, which imports this module: they are referenced
lazily here so neither import needs the other finished.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from api.db import utcnow
from api.errors import DomainError
from api.graphql.context import Info
from api.graphql.errors import user_errors
from api.graphql.ids import encode_id, input_pk
from api.graphql.money import Money
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.permissions import requires
from api.orders.errors import OrderErrorCode
from api.orders.lifecycle import cancel, pickup, refund
from api.orders.models import Order as OrderRow
from api.orders.models import OrderRefund as OrderRefundRow
from api.orders.models import OrderRefundLine as OrderRefundLineRow
from api.orders.pickup_codes import request_pickup_secret

if TYPE_CHECKING:
    from api.orders.schema import Order, OrderError

_ORDERS = "api.orders.schema"
OrderRef = Annotated["Order", strawberry.lazy(_ORDERS)]
OrderErrorRef = Annotated["OrderError", strawberry.lazy(_ORDERS)]


def _errors(error: DomainError) -> list[OrderError]:
    from api.orders.schema import OrderError

    return user_errors(OrderError, error)


def _order(row: OrderRow, info: Info) -> Order:
    from api.orders.schema import Order

    return Order.from_row(row, info.context)


def _pk(global_id: strawberry.ID, type_name: str, *path: str) -> int:
    return input_pk(global_id, type_name, *path, invalid=OrderErrorCode.INVALID)


# --- types ------------------------------------------------------------------------------------


@strawberry.type(description="One line of a refund: how many units and what they gave back.")
class OrderRefundLine:
    line_id: strawberry.ID = strawberry.field(description="The order line (OrderLine id).")
    quantity: int
    amount: Money
    restocked: bool = strawberry.field(description="Put back into the store's stock.")


@strawberry.type(description="A refund of a whole order or some of its lines.")
class OrderRefund:
    id: strawberry.ID = strawberry.field(
        description="The refund's id: a retry with the same key returns the same refund."
    )
    amount: Money
    points_reversed: int = strawberry.field(
        description="Points the order earned that this refund took back."
    )
    points_returned: int = strawberry.field(
        description="Points the order was paid with that this refund gave back."
    )
    reason: str
    created_at: datetime
    lines: list[OrderRefundLine]

    @classmethod
    def from_rows(
        cls, row: OrderRefundRow, lines: list[OrderRefundLineRow], currency: str
    ) -> OrderRefund:
        return cls(
            id=strawberry.ID(encode_id("OrderRefund", row.id)),
            amount=Money(amount=row.amount, currency=currency),
            points_reversed=row.points_reversed,
            points_returned=row.points_returned,
            reason=row.reason,
            created_at=row.created_at,
            lines=[
                OrderRefundLine(
                    line_id=strawberry.ID(encode_id("OrderLine", line.order_line_id)),
                    quantity=line.quantity,
                    amount=Money(amount=line.amount, currency=currency),
                    restocked=line.restocked,
                )
                for line in lines
            ],
        )


# --- inputs and payloads ----------------------------------------------------------------------


@strawberry.input
class OrderMarkReadyInput:
    order_id: strawberry.ID


@strawberry.input(
    description="The pickup code (6 digits) or the member's QR payload: exactly one of them."
)
class OrderPickupInput:
    code: str | None = None
    qr_payload: str | None = None
    order_id: strawberry.ID | None = strawberry.field(
        default=None, description="With a code: the order it must open (optional)."
    )
    store_id: strawberry.ID | None = strawberry.field(
        default=None, description="The pickup store (default: store staff's own)."
    )


@strawberry.input
class OrderCancelInput:
    order_id: strawberry.ID
    reason: str


@strawberry.input
class OrderRefundLineInput:
    line_id: strawberry.ID
    quantity: int


@strawberry.input
class OrderRefundInput:
    order_id: strawberry.ID
    reason: str
    idempotency_key: str = strawberry.field(
        description="A retry with the same key returns the first refund; the same key for "
        "another request is IDEMPOTENCY_KEY_REUSED."
    )
    lines: list[OrderRefundLineInput] | None = strawberry.field(
        default=None, description="Omitted: everything not refunded yet."
    )
    restock: bool = strawberry.field(
        default=True, description="Put the units back into the order's store's stock."
    )


@strawberry.type
class OrderMarkReadyPayload:
    order: OrderRef | None = None
    errors: list[OrderErrorRef] = strawberry.field(default_factory=list)


@strawberry.type
class OrderPickupPayload:
    order: OrderRef | None = None
    errors: list[OrderErrorRef] = strawberry.field(default_factory=list)


@strawberry.type
class OrderCancelPayload:
    order: OrderRef | None = None
    errors: list[OrderErrorRef] = strawberry.field(default_factory=list)


@strawberry.type
class OrderRefundPayload:
    order: OrderRef | None = None
    refund: OrderRefund | None = None
    created: bool = strawberry.field(
        default=False, description="false: a retry with the same key, the first refund."
    )
    errors: list[OrderErrorRef] = strawberry.field(default_factory=list)


# --- mutations --------------------------------------------------------------------------------


@strawberry.type
class LifecycleMutation:
    @strawberry.mutation(
        description="The store has a pickup order ready (PLACED → READY_FOR_PICKUP); the "
        "member is notified.",
        permission_classes=[requires("orders:write")],
    )
    async def order_mark_ready(
        self, info: Info, input: OrderMarkReadyInput
    ) -> OrderMarkReadyPayload:
        async def change(work: UnitOfWork) -> OrderMarkReadyPayload:
            order_pk = _pk(input.order_id, "Order", "orderId")
            row = await pickup.mark_ready(work.session, work.principal, order_pk, now=utcnow())
            work.touched("Order", row.id)
            return OrderMarkReadyPayload(order=_order(row, info))

        return await run_mutation(info, OrderMarkReadyPayload, change)

    @strawberry.mutation(
        description="Hand a pickup order over at the store, verified by its pickup code or QR "
        "payload: the reservation becomes a sale and the order earns its points. Ten wrong "
        "codes in 15 minutes lock a store's pickups for the rest of the window.",
        permission_classes=[requires("orders:write")],
    )
    async def order_pickup(self, info: Info, input: OrderPickupInput) -> OrderPickupPayload:
        async def change(work: UnitOfWork) -> OrderPickupPayload:
            proof = pickup.PickupProof(
                code=input.code,
                qr_payload=input.qr_payload,
                order_id=_pk(input.order_id, "Order", "orderId") if input.order_id else None,
            )
            store_pk = _pk(input.store_id, "Store", "storeId") if input.store_id else None
            secret = request_pickup_secret(work.context)
            row = await pickup.pickup(
                work.session,
                work.context.cache,
                work.principal,
                proof,
                store_id=store_pk,
                secret=secret,
                now=utcnow(),
                wiring=work.context.wiring.orders,
            )
            work.touched("Order", row.id)
            return OrderPickupPayload(order=_order(row, info))

        return await run_mutation(info, OrderPickupPayload, change)

    @strawberry.mutation(
        description="Cancel an order that is not completed: its reservation, points and "
        "coupons are given back. Members cancel their own pickup orders until they are ready.",
        permission_classes=[requires("orders:write")],
    )
    async def order_cancel(self, info: Info, input: OrderCancelInput) -> OrderCancelPayload:
        async def change(work: UnitOfWork) -> OrderCancelPayload:
            order_pk = _pk(input.order_id, "Order", "orderId")
            row = await cancel.cancel(
                work.session,
                work.principal,
                order_pk,
                reason=input.reason,
                now=utcnow(),
                wiring=work.context.wiring.orders,
            )
            work.touched("Order", row.id)
            return OrderCancelPayload(order=_order(row, info))

        return await run_mutation(info, OrderCancelPayload, change)

    @strawberry.mutation(
        description="Refund a completed order, whole or some lines: money pro rata, goods "
        "restocked, points earned taken back and points spent given back in proportion.",
        permission_classes=[requires("orders:write")],
    )
    async def order_refund(self, info: Info, input: OrderRefundInput) -> OrderRefundPayload:
        async def change(work: UnitOfWork) -> OrderRefundPayload:
            order_pk = _pk(input.order_id, "Order", "orderId")
            lines = None
            if input.lines is not None:
                lines = tuple(
                    refund.RefundLineDraft(
                        line_id=_pk(line.line_id, "OrderLine", "lines", str(i), "lineId"),
                        quantity=line.quantity,
                    )
                    for i, line in enumerate(input.lines)
                )
            draft = refund.RefundDraft(
                idempotency_key=input.idempotency_key,
                reason=input.reason,
                lines=lines,
                restock=input.restock,
            )
            result = await refund.refund(
                work.session,
                work.principal,
                order_pk,
                draft,
                now=utcnow(),
                wiring=work.context.wiring.orders,
            )
            work.touched("Order", result.order.id)
            return OrderRefundPayload(
                order=_order(result.order, info),
                refund=OrderRefund.from_rows(result.refund, result.lines, result.order.currency),
                created=result.created,
            )

        return await run_mutation(info, OrderRefundPayload, change)


__all__ = ["LifecycleMutation"]
