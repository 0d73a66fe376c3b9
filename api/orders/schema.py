"""GraphQL surface of orders: ``orderCreate``, ``orders``, ``order`` and the ``Order`` node.
Thin wrappers over placing.py, queries.py and loaders.py.

Every list under an order (lines, their SKU and product, coupons, history) and every object
it names (customer, store, partner) loads through a DataLoader, so a page of orders costs a
fixed number of statements whatever its size. ``customer_orders`` is what the customers domain
wires into ``Customer.orders``. This module must not import ``api.customers.graphql`` at module
level (that one imports this): the customer types are lazy.

Who sees what on an order, beyond the order itself (scoped like every partner-owned row):
the brand's cost (``costTotal``, ``grossMargin``) is HQ's only; the pickup code and its QR
payload are the owning member's only: the staff who verify a code must not be able to read
it off the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.tools import merge_types

from api.catalog import loaders as catalog_loaders
from api.catalog.schema import Product, SalesChannel, Sku
from api.customers.profile import CustomerDraft
from api.db import utcnow
from api.graphql.context import Context, Info
from api.graphql.errors import UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.money import Money
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Children, Connection, Node, Rows, connection
from api.orders import errors, loaders, models, placing, queries, validation
from api.orders.drafts import LineDraft, OrderDraft
from api.orders.pickup_codes import qr_payload, request_pickup_secret
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.coupons.graphql.types import Coupon
    from api.customers.graphql.types import Customer, IdentityInput

OrderStatus = strawberry.enum(
    models.OrderStatus,
    description="PLACED (paid; a pickup order waits to be prepared), READY_FOR_PICKUP, "
    "COMPLETED (picked up, sold at the counter, or shipped), CANCELLED, EXPIRED (not picked "
    "up in time), PARTIALLY_REFUNDED, REFUNDED.",
)
Fulfillment = strawberry.enum(
    models.Fulfillment,
    description="DELIVERY (shipped, from a named location or none), PICKUP (线上下单、门店自提: "
    "stock reserved at the store until picked up), IN_STORE (sold at the counter).",
)
OrderErrorCode = strawberry.enum(errors.OrderErrorCode)


def _money(amount: Decimal, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


def _shown_code(code: str, holder: bool) -> str:
    # A coupon code is a bearer secret (see Coupon.code): whole for its holder and HQ only.
    return code if holder else "*" * (len(code) - 4) + code[-4:]


# --- types ---------------------------------------------------------------------------------


@strawberry.type(description="One line of an order, with its share of the order's discounts.")
class OrderLine:
    id: strawberry.ID = strawberry.field(description="Names the line in orderRefund's lines.")
    line_no: int
    sku_code: str = strawberry.field(description="The SKU's code when the order was placed.")
    quantity: int
    unit_price: Money
    subtotal: Money = strawberry.field(description="unitPrice × quantity.")
    discount: Money = strawberry.field(
        description="Its share of the coupons and points, to the cent (shares add up to the "
        "order's discounts exactly)."
    )
    total: Money = strawberry.field(description="What was paid for the line: subtotal - discount.")
    refunded_quantity: int
    sku_pk: strawberry.Private[int]
    product_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.OrderLine, currency: str) -> OrderLine:
        return cls(
            id=strawberry.ID(encode_id("OrderLine", row.id)),
            line_no=row.line_no,
            sku_code=row.sku_code,
            quantity=row.quantity,
            unit_price=_money(row.unit_price, currency),
            subtotal=_money(row.subtotal, currency),
            discount=_money(row.discount, currency),
            total=_money(row.total, currency),
            refunded_quantity=row.refunded_quantity,
            sku_pk=row.sku_id,
            product_pk=row.product_id,
        )

    @strawberry.field
    async def sku(self, info: Info) -> Sku | None:
        row = await info.context.loader(catalog_loaders.skus_by_pk).load(self.sku_pk)
        return Sku.from_row(row, info.context) if row else None

    @strawberry.field
    async def product(self, info: Info) -> Product | None:
        row = await info.context.loader(catalog_loaders.products_by_pk).load(self.product_pk)
        return Product.from_row(row) if row else None


@strawberry.type(description="A coupon the order used, and the discount it gave.")
class OrderCouponUse:
    code: str = strawberry.field(
        description="Whole for the order's member and HQ; others see only the last 4 characters."
    )
    discount: Money
    coupon_pk: strawberry.Private[int]

    @strawberry.field(description="The coupon; null if you may not see it.")
    async def coupon(
        self, info: Info
    ) -> Annotated[Coupon, strawberry.lazy("api.coupons.graphql.types")] | None:
        found = await info.context.load_node("Coupon", self.coupon_pk)
        return found


@strawberry.type(description="A status change of an order: what, who and when.")
class OrderEvent:
    status: OrderStatus  # type: ignore[valid-type]  # strawberry.enum() value
    note: str | None = strawberry.field(description="Staff's note; null for members.")
    actor: str | None = strawberry.field(description="Who did it; null for members.")
    created_at: datetime


@strawberry.type(description="An order from any channel (订单).")
class Order(Node):
    channel: SalesChannel  # type: ignore[valid-type]  # strawberry.enum() value
    fulfillment: Fulfillment  # type: ignore[valid-type]  # strawberry.enum() value
    status: OrderStatus  # type: ignore[valid-type]  # strawberry.enum() value
    reported_by_partner: bool = strawberry.field(
        description="A sale the partner reported itself (its POS, its marketplace shop): where "
        "prices outside the band are recorded as violations instead of refused."
    )
    taken_by: str | None = strawberry.field(
        description="The staff member or system that took the order; null for members."
    )
    delivery_region_code: str | None
    subtotal: Money
    coupon_discount: Money
    points_used: int
    points_discount: Money = strawberry.field(description="What the points paid.")
    total: Money = strawberry.field(description="What the customer paid.")
    refunded_amount: Money
    points_earned: int
    cost_total: Money | None = strawberry.field(description="The brand's cost: HQ only.")
    gross_margin: Money | None = strawberry.field(description="total - costTotal: HQ only.")
    pickup_code: str | None = strawberry.field(
        description="The 6-digit code (取货码) of an open pickup order: its member only."
    )
    pickup_qr: str | None = strawberry.field(
        description="The signed payload the member's QR code encodes: its member only."
    )
    pickup_expires_at: datetime | None
    placed_at: datetime = strawberry.field(description="When the customer paid.")
    ready_at: datetime | None
    completed_at: datetime | None
    closed_at: datetime | None = strawberry.field(description="Cancelled or expired.")
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[int]
    currency: strawberry.Private[str]
    customer_pk: strawberry.Private[int | None]
    store_pk: strawberry.Private[int | None]
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.Order, ctx: Context) -> Order:
        principal = ctx.principal
        currency = row.currency
        owner = principal.is_member and principal.customer_id == row.customer_id
        code = row.pickup_code if owner and row.status in models.OPEN_PICKUP else None
        qr = qr_payload(request_pickup_secret(ctx), row.id, code) if code is not None else None
        return cls(
            id=strawberry.ID(encode_id("Order", row.id)),
            pk=row.id,
            currency=currency,
            customer_pk=row.customer_id,
            store_pk=row.store_id,
            partner_pk=row.partner_id,
            channel=row.channel,
            fulfillment=row.fulfillment,
            status=row.status,
            reported_by_partner=row.reported_by_partner,
            taken_by=None if principal.is_member else row.taken_by,
            delivery_region_code=row.delivery_region_code,
            subtotal=_money(row.subtotal, currency),
            coupon_discount=_money(row.coupon_discount, currency),
            points_used=row.points_used,
            points_discount=_money(row.points_discount, currency),
            total=_money(row.total, currency),
            refunded_amount=_money(row.refunded_amount, currency),
            points_earned=row.points_earned,
            cost_total=_money(row.cost_total, currency) if principal.is_hq else None,
            gross_margin=_money(row.total - row.cost_total, currency) if principal.is_hq else None,
            pickup_code=code,
            pickup_qr=qr,
            pickup_expires_at=row.pickup_expires_at,
            placed_at=row.placed_at,
            ready_at=row.ready_at,
            completed_at=row.completed_at,
            closed_at=row.closed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @strawberry.field(description="Null when there is none, or you may not see the customer.")
    async def customer(
        self, info: Info
    ) -> Annotated[Customer, strawberry.lazy("api.customers.graphql.types")] | None:
        if self.customer_pk is None:
            return None
        found = await info.context.load_node("Customer", self.customer_pk)
        return found

    @strawberry.field(description="Where it is picked up, sold or shipped from.")
    async def store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(description="The seller; null for HQ's own sales.")
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field
    async def lines(self, info: Info) -> list[OrderLine]:
        rows = await info.context.loader(loaders.lines_by_order).load(self.pk)
        return [OrderLine.from_row(r, self.currency) for r in rows]

    @strawberry.field(description="The coupons it used.")
    async def coupons(self, info: Info) -> list[OrderCouponUse]:
        rows = await info.context.loader(loaders.coupons_by_order).load(self.pk)
        principal = info.context.principal
        holder = principal.is_hq or (
            principal.is_member and principal.customer_id == self.customer_pk
        )
        return [
            OrderCouponUse(
                code=_shown_code(r.code, holder),
                discount=_money(r.discount, self.currency),
                coupon_pk=r.coupon_id,
            )
            for r in rows
        ]

    @strawberry.field(description="Its history, oldest first.")
    async def events(self, info: Info) -> list[OrderEvent]:
        rows = await info.context.loader(loaders.events_by_order).load(self.pk)
        # Staff names and their notes (a cancel's reason) are the business's, not the member's.
        staff = not info.context.principal.is_member
        return [
            OrderEvent(
                status=r.status,
                note=r.note if staff else None,
                actor=r.actor if staff else None,
                created_at=r.created_at,
            )
            for r in rows
        ]


async def _load_orders(ctx: Context, pks: Sequence[int]) -> list[Order | None]:
    rows = await ctx.loader(loaders.orders_by_pk).load_many(pks)
    return [Order.from_row(r, ctx) if r else None for r in rows]


def customer_orders(info: Info, customer_pk: int) -> Children[Order]:
    """``Customer.orders``, newest first: one statement pages every customer's orders (and
    one more counts them, only when ``totalCount`` is asked for)."""
    ctx = info.context
    return Children(
        loaders.order_pages_by_customer,
        loaders.order_counts_by_customer,
        customer_pk,
        lambda row: Order.from_row(row, ctx),
    )


# --- queries -------------------------------------------------------------------------------


@strawberry.input(description="Every given condition must hold; a list matches any of its values.")
class OrderFilter:
    status: list[OrderStatus] | None = None  # type: ignore[valid-type]  # strawberry.enum() value
    channel: list[SalesChannel] | None = None  # type: ignore[valid-type]  # strawberry.enum() value
    fulfillment: list[Fulfillment] | None = None  # type: ignore[valid-type]  # strawberry.enum() value
    store_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A store's orders. With status [PLACED, READY_FOR_PICKUP]: its pickup "
        "queue, oldest (so soonest to expire) first.",
    )
    customer_id: strawberry.ID | None = None
    placed_from: datetime | None = strawberry.field(default=None, description="Inclusive.")
    placed_to: datetime | None = strawberry.field(default=None, description="Exclusive.")

    def to_service(self) -> queries.OrderFilter:
        return queries.OrderFilter(
            statuses=self.status or (),
            channels=self.channel or (),
            fulfillments=self.fulfillment or (),
            store_ids=[decode_id_of(self.store_id, "Store")] if self.store_id else (),
            customer_ids=[decode_id_of(self.customer_id, "Customer")] if self.customer_id else (),
            placed_from=self.placed_from,
            placed_to=self.placed_to,
        )


@strawberry.type
class OrderQuery:
    @connection(
        Connection[Order],
        description="Orders you may see, oldest first (reverse: newest first): HQ all; a "
        "partner its stores' and its own; a store its own; a member their own.",
        permission_classes=[requires("orders:read")],
    )
    async def orders(
        self, info: Info, filter: OrderFilter | None = None, reverse: bool = False
    ) -> Rows[Order]:
        ctx = info.context
        stmt = queries.orders_query(ctx.principal, filter.to_service() if filter else None)
        return Rows(
            stmt, queries.ORDER_KEYSET, lambda row: Order.from_row(row, ctx), reverse=reverse
        )

    @strawberry.field(
        description="An order by ID; null when it does not exist or is not yours.",
        permission_classes=[requires("orders:read")],
    )
    async def order(self, info: Info, id: strawberry.ID) -> Order | None:
        return (await _load_orders(info.context, [decode_id_of(id, "Order")]))[0]


# --- mutations -----------------------------------------------------------------------------


@strawberry.type
class OrderError(UserError):
    code: OrderErrorCode  # type: ignore[valid-type]  # strawberry.enum() value


@strawberry.input
class OrderLineInput:
    quantity: int
    sku_id: strawberry.ID | None = strawberry.field(default=None, description="Or `sku`.")
    sku: str | None = strawberry.field(default=None, description="The SKU's code.")
    unit_price: Decimal | None = strawberry.field(
        default=None,
        description="Default: the channel's list price. Members always pay it; others' prices "
        "are checked against the channel's band (refused first-party, recorded as a "
        "violation for a partner's own sales).",
    )


@strawberry.input(
    description="The customer as the channel knows them: found by any of the "
    "identities, else created."
)
class OrderCustomerInput:
    identities: list[Annotated[IdentityInput, strawberry.lazy("api.customers.graphql.types")]]
    name: str | None = None


@strawberry.input(
    description="HQ places any order; a member their own in the mini-program or web shop "
    "(DELIVERY or PICKUP); store staff at their store's counter (STORE_POS: IN_STORE or "
    "PICKUP); a partner at its own stores, any channel."
)
class OrderCreateInput:
    channel: SalesChannel  # type: ignore[valid-type]  # strawberry.enum() value
    fulfillment: Fulfillment  # type: ignore[valid-type]  # strawberry.enum() value
    lines: list[OrderLineInput]
    store_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Required for PICKUP (a store that offers it) and IN_STORE; for DELIVERY "
        "the location it ships from (stock is deducted there). Store staff: default theirs.",
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Or `customer`. A member: omit it (or give their own)."
    )
    customer: OrderCustomerInput | None = None
    coupon_codes: list[str] = strawberry.field(
        default_factory=list,
        description="The customer's coupons, applied in this order, each on what the ones "
        "before left.",
    )
    points_to_use: int = strawberry.field(
        default=0,
        description="Points to pay with (积分抵现), a share of what is left after coupons "
        "at most (POINTS_LIMIT).",
    )
    delivery_region_code: str | None = strawberry.field(
        default=None, description="Where a DELIVERY order goes (GB/T 2260)."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="A retry with the same key returns the first order (created: false); "
        "the same key for a different order is IDEMPOTENCY_KEY_REUSED.",
    )
    placed_at: datetime | None = strawberry.field(
        default=None, description="When the customer paid: a partner reporting a past sale."
    )


@strawberry.type
class OrderCreatePayload:
    order: Order | None = None
    created: bool = strawberry.field(
        default=False, description="false: a retry with the same idempotencyKey."
    )
    errors: list[OrderError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=errors.OrderErrorCode.INVALID)


def _draft(input: OrderCreateInput) -> OrderDraft:
    customer = None
    if input.customer is not None:
        customer = CustomerDraft(
            identities=[(i.kind, i.value) for i in input.customer.identities],
            name=input.customer.name,
        )
    return OrderDraft(
        channel=input.channel,
        fulfillment=input.fulfillment,
        lines=[
            LineDraft(
                quantity=line.quantity,
                sku_id=_pk(line.sku_id, "Sku", "lines", str(i), "skuId") if line.sku_id else None,
                sku_code=line.sku,
                unit_price=line.unit_price,
            )
            # One past the cap is enough for the service to refuse the size; no more ids are
            # decoded than that.
            for i, line in enumerate(input.lines[: validation.MAX_LINES + 1])
        ],
        store_id=_pk(input.store_id, "Store", "storeId") if input.store_id else None,
        customer_id=_pk(input.customer_id, "Customer", "customerId") if input.customer_id else None,
        customer=customer,
        coupon_codes=input.coupon_codes,
        points_to_use=input.points_to_use,
        delivery_region_code=input.delivery_region_code,
        idempotency_key=input.idempotency_key,
        placed_at=input.placed_at,
    )


@strawberry.type
class OrderMutation:
    @strawberry.mutation(
        description="Place an order from any channel; see OrderCreateInput for who may place "
        "what. Stock, coupons, points and the sale's points earned happen in one transaction.",
        permission_classes=[requires("orders:write")],
    )
    async def order_create(self, info: Info, input: OrderCreateInput) -> OrderCreatePayload:
        async def change(work: UnitOfWork) -> OrderCreatePayload:
            draft = _draft(input)
            result = await placing.create_order(
                work.session, work.principal, draft, wiring=work.context.wiring.orders, now=utcnow()
            )
            work.touched("Order", result.order.id)
            return OrderCreatePayload(
                order=Order.from_row(result.order, work.context), created=result.created
            )

        return await run_mutation(info, OrderCreatePayload, change)


__all__ = [
    "Fulfillment",
    "Order",
    "OrderMutation",
    "OrderQuery",
    "OrderStatus",
    "SalesChannel",
    "customer_orders",
]


# Last: the subscription reads this module's Order.
from api.orders.lifecycle_schema import LifecycleMutation  # noqa: E402
from api.orders.subscriptions import OrderSubscription  # noqa: E402

schema_parts = SchemaParts(
    query=OrderQuery,
    mutation=merge_types("OrderMutation", (OrderMutation, LifecycleMutation)),
    subscription=OrderSubscription,
    types=[Order],
    nodes={"Order": _load_orders},
)
