"""GraphQL surface of purchasing (进货): price lists, credit lines (授信), purchase orders
(采购单). Thin wrappers over pricing.py and service.py. Amounts are exact cents inside and
``Money`` (a decimal to the cent) here; an input amount finer than a cent is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Annotated

import strawberry

from api.db import utcnow
from api.errors import DomainError, InputError
from api.graphql.context import Info
from api.graphql.errors import PermissionDenied, UserError
from api.graphql.ids import decode_id_of, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Rows, connection
from api.partners.models import PartnerTier, PartnerType
from api.purchasing import allocation, credit_lines, loaders, models, pricing, sell_through, service
from api.purchasing.errors import PurchasingErrorCode as Code
from api.purchasing.types import (
    PartnerCredit,
    PriceList,
    PurchaseOrder,
    PurchaseOrderStatus,
    PurchasePrice,
    PurchasingErrorCode,
    SellThroughRow,
    load_orders,
    load_price_lists,
    money,
)

_pk = partial(input_pk, invalid=Code.INVALID)
_HQ_LISTS = "Price lists are HQ's; a partner asks purchasePrice for its own prices."


def _cents(amount: Decimal, *path: str) -> int:
    """An input amount as cents: finite, not negative, exact to the cent."""
    try:
        cents = amount * 100
        if not amount.is_finite() or amount < 0 or cents != cents.to_integral_value():
            raise InvalidOperation
    except InvalidOperation:
        raise DomainError.one(
            Code.INVALID, "An amount is not negative and exact to the cent (0.01).", *path
        ) from None
    return int(cents)


# --- queries ----------------------------------------------------------------------------------


@strawberry.input
class PurchaseOrderFilter:
    statuses: list[PurchaseOrderStatus] | None = None
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="HQ: one partner's. A partner sees only its own anyway."
    )

    def to_service(self) -> service.OrderFilter:
        return service.OrderFilter(
            statuses=self.statuses or (),
            partner_ids=[decode_id_of(self.partner_id, "Partner")] if self.partner_id else (),
        )


def _partner_pk(info: Info, partner_id: strawberry.ID | None) -> int | None:
    """The partner a read is about: HQ names it; a partner reads its own (naming another
    finds nothing, like a missing one)."""
    principal = info.context.principal
    if partner_id is not None:
        pk = decode_id_of(partner_id, "Partner")
        return pk if principal.is_hq or pk == principal.partner_id else None
    return None if principal.is_hq else principal.partner_id


@strawberry.type
class PurchasingQuery:
    @connection(
        Connection[PurchaseOrder],
        description="Purchase orders, oldest first (reverse: newest first): HQ all, a partner "
        "its own.",
        permission_classes=[requires("purchasing:read")],
    )
    async def purchase_orders(
        self, info: Info, filter: PurchaseOrderFilter | None = None, reverse: bool = False
    ) -> Rows[PurchaseOrder]:
        stmt = service.orders_query(info.context.principal, filter.to_service() if filter else None)
        return Rows(stmt, service.PURCHASE_ORDER_KEYSET, PurchaseOrder.from_row, reverse=reverse)

    @strawberry.field(permission_classes=[requires("purchasing:read")])
    async def purchase_order(self, info: Info, id: strawberry.ID) -> PurchaseOrder | None:
        found = await info.context.loader(loaders.orders_by_pk).load(
            decode_id_of(id, "PurchaseOrder")
        )
        return PurchaseOrder.from_row(found) if found else None

    @connection(
        Connection[PriceList],
        description="Price lists, oldest first. HQ only: " + _HQ_LISTS,
        permission_classes=[requires("purchasing:manage")],
    )
    async def price_lists(self, info: Info, reverse: bool = False) -> Rows[PriceList]:
        if not info.context.principal.is_hq:
            raise PermissionDenied(_HQ_LISTS)
        stmt = pricing.price_lists_query(info.context.principal)
        return Rows(stmt, pricing.PRICE_LIST_KEYSET, PriceList.from_row, reverse=reverse)

    @strawberry.field(
        description="Sell-through (进销存) per location and SKU over [from, to) (at most 366 "
        "days, 1000 rows, by location then SKU): HQ every location, a partner its own.",
        permission_classes=[requires("purchasing:read")],
    )
    async def sell_through(
        self,
        info: Info,
        period_from: Annotated[datetime, strawberry.argument(name="from")],
        period_to: Annotated[datetime, strawberry.argument(name="to")],
        store_ids: list[strawberry.ID] | None = None,
        sku_ids: list[strawberry.ID] | None = None,
    ) -> list[SellThroughRow]:
        async with info.context.db.read() as session:
            found = await sell_through.sell_through(
                session,
                info.context.principal,
                start=period_from,
                end=period_to,
                store_ids=[decode_id_of(s, "Store") for s in store_ids or ()],
                sku_ids=[decode_id_of(s, "Sku") for s in sku_ids or ()],
            )
        return [
            SellThroughRow(
                store_pk=row.store_id,
                sku_pk=row.sku_id,
                opening=row.opening,
                purchased=row.purchased,
                sold=row.sold,
                returned=row.returned,
                dispatched=row.dispatched,
                adjusted=row.adjusted,
                closing=row.closing,
                turnover=row.turnover,
                days_of_inventory=row.days_of_inventory,
            )
            for row in found
        ]

    @strawberry.field(
        description="A partner's credit line (default: yours); null when it has none.",
        permission_classes=[requires("purchasing:read")],
    )
    async def partner_credit(
        self, info: Info, partner_id: strawberry.ID | None = None
    ) -> PartnerCredit | None:
        pk = _partner_pk(info, partner_id)
        if pk is None:
            return None
        async with info.context.db.read() as session:
            found = await credit_lines.credit_of(session, info.context.principal, pk)
        return PartnerCredit.of(found) if found else None

    @strawberry.field(
        description="What `quantity` units of a SKU cost a partner (default: you) now: the "
        "list and quantity break that applied, or why none did. Null for another partner.",
        permission_classes=[requires("purchasing:read")],
    )
    async def purchase_price(
        self,
        info: Info,
        sku_id: strawberry.ID,
        quantity: int,
        partner_id: strawberry.ID | None = None,
    ) -> PurchasePrice | None:
        pk = _partner_pk(info, partner_id)
        sku_pk = decode_id_of(sku_id, "Sku")
        if not 0 < quantity <= pricing.MAX_QUANTITY:
            raise InputError(f"A quantity is 1 to {pricing.MAX_QUANTITY}.")
        if pk is None:
            return None
        async with info.context.db.read() as session:
            found = await pricing.quote_one(session, pk, sku_pk, quantity, utcnow())
        if found is None:
            return None
        if isinstance(found, DomainError):
            problem = found.problems[0]
            assert isinstance(problem.code, PurchasingErrorCode)  # pricing raises only its own
            return PurchasePrice(
                quantity=quantity,
                unit_price=None,
                line_total=None,
                list_price=None,
                discount_basis_points=0,
                break_min_quantity=None,
                min_quantity=None,
                pack_size=None,
                basis=None,
                price_list_name=None,
                problem=problem.code,
                explanation=problem.message,
            )
        return PurchasePrice(
            quantity=quantity,
            unit_price=money(found.unit_price_cents, found.currency),
            line_total=money(found.line_total_cents, found.currency),
            list_price=money(found.list_price_cents, found.currency),
            discount_basis_points=found.discount_bp,
            break_min_quantity=found.break_min_quantity,
            min_quantity=found.min_quantity,
            pack_size=found.pack_size,
            basis=found.basis,
            price_list_name=found.price_list_name,
            problem=None,
            explanation=found.explain(),
        )


# --- mutations --------------------------------------------------------------------------------


@strawberry.type
class PurchasingError(UserError):
    code: PurchasingErrorCode


@strawberry.input
class PriceBreakInput:
    min_quantity: int
    discount_basis_points: int = strawberry.field(description="300 means 3% off.")


@strawberry.input
class PriceListItemInput:
    sku_id: strawberry.ID
    unit_price: Decimal = strawberry.field(description="Exact to the cent.")
    min_quantity: int = 1
    pack_size: int = 1
    breaks: list[PriceBreakInput] = strawberry.field(default_factory=list)


@strawberry.input(
    description="Whom it is for: one partner (a contract list), or a tier and/or a partner type."
)
class PriceListCreateInput:
    name: str
    valid_from: datetime
    items: list[PriceListItemInput]
    valid_until: datetime | None = None
    partner_id: strawberry.ID | None = None
    tier: PartnerTier | None = None
    partner_type: PartnerType | None = None
    currency: str = "CNY"

    def to_service(self) -> pricing.PriceListDraft:
        return pricing.PriceListDraft(
            name=self.name,
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            partner_id=_pk(self.partner_id, "Partner", "partnerId") if self.partner_id else None,
            tier=self.tier,
            partner_type=self.partner_type,
            currency=self.currency,
            items=[
                pricing.ItemDraft(
                    sku_id=_pk(item.sku_id, "Sku", "items", str(i), "skuId"),
                    unit_price_cents=_cents(item.unit_price, "items", str(i), "unitPrice"),
                    min_quantity=item.min_quantity,
                    pack_size=item.pack_size,
                    breaks=[
                        pricing.BreakDraft(b.min_quantity, b.discount_basis_points)
                        for b in item.breaks
                    ],
                )
                for i, item in enumerate(self.items)
            ],
        )


@strawberry.input
class PartnerCreditSetInput:
    partner_id: strawberry.ID
    limit: Decimal = strawberry.field(description="In CNY, exact to the cent.")
    payment_terms_days: int = 30


@strawberry.input
class PurchaseOrderLineInput:
    sku_id: strawberry.ID
    quantity: int


@strawberry.input
class PurchaseOrderCreateInput:
    store_id: strawberry.ID = strawberry.field(description="Your location it is delivered to.")
    lines: list[PurchaseOrderLineInput]
    idempotency_key: str = strawberry.field(
        description="Retrying with the same key returns the first order (created: false)."
    )
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="HQ: the partner it orders for. A partner orders for itself."
    )
    note: str | None = None
    submit: bool = strawberry.field(
        default=False, description="Submit at once (holding credit), as purchaseOrderSubmit."
    )


@strawberry.input
class PurchaseOrderInput:
    id: strawberry.ID


@strawberry.input
class PurchaseOrderRejectInput:
    id: strawberry.ID
    reason: str


@strawberry.input
class PurchaseOrderShipInput:
    id: strawberry.ID
    warehouse_id: strawberry.ID = strawberry.field(description="The HQ location it leaves.")
    tracking_number: str


@strawberry.input
class PurchaseAllocateInput:
    warehouse_id: strawberry.ID = strawberry.field(description="The HQ location holding stock.")
    sku_id: strawberry.ID


@strawberry.type(description="Units one run allocated to one order.")
class PurchaseAllocation:
    purchase_order: PurchaseOrder
    quantity: int
    backordered: int = strawberry.field(description="What the order's line still lacks.")


@strawberry.type
class PurchaseAllocatePayload:
    allocations: list[PurchaseAllocation] = strawberry.field(default_factory=list)
    errors: list[PurchasingError] = strawberry.field(default_factory=list)


@strawberry.type
class PriceListCreatePayload:
    price_list: PriceList | None = None
    errors: list[PurchasingError] = strawberry.field(default_factory=list)


@strawberry.type
class PartnerCreditSetPayload:
    credit: PartnerCredit | None = None
    errors: list[PurchasingError] = strawberry.field(default_factory=list)


@strawberry.type
class PurchaseOrderCreatePayload:
    purchase_order: PurchaseOrder | None = None
    created: bool = strawberry.field(
        default=False, description="false: a retry with the same key, the first order."
    )
    errors: list[PurchasingError] = strawberry.field(default_factory=list)


@strawberry.type
class PurchaseOrderPayload:
    purchase_order: PurchaseOrder | None = None
    errors: list[PurchasingError] = strawberry.field(default_factory=list)


_Step = Callable[..., Awaitable[models.PurchaseOrder]]


async def _step(
    info: Info, input_id: strawberry.ID, step: _Step, **kwargs: str
) -> PurchaseOrderPayload:
    """Run one state change of an order as a mutation."""

    async def change(work: UnitOfWork) -> PurchaseOrderPayload:
        order_id = _pk(input_id, "PurchaseOrder", "id")
        row = await step(work.session, work.principal, order_id, now=utcnow(), **kwargs)
        work.touched("PurchaseOrder", row.id)
        return PurchaseOrderPayload(purchase_order=PurchaseOrder.from_row(row))

    return await run_mutation(info, PurchaseOrderPayload, change)


@strawberry.type
class PurchasingMutation:
    @strawberry.mutation(
        description="Publish a price list (HQ).",
        permission_classes=[requires("purchasing:manage")],
    )
    async def price_list_create(
        self, info: Info, input: PriceListCreateInput
    ) -> PriceListCreatePayload:
        async def change(work: UnitOfWork) -> PriceListCreatePayload:
            row = await pricing.create_price_list(work.session, work.principal, input.to_service())
            work.touched("PriceList", row.id)
            return PriceListCreatePayload(price_list=PriceList.from_row(row))

        return await run_mutation(info, PriceListCreatePayload, change)

    @strawberry.mutation(
        description="Give a partner a credit line or change it (HQ). Not below what its open "
        "orders use (LIMIT_BELOW_USED).",
        permission_classes=[requires("purchasing:manage")],
    )
    async def partner_credit_set(
        self, info: Info, input: PartnerCreditSetInput
    ) -> PartnerCreditSetPayload:
        async def change(work: UnitOfWork) -> PartnerCreditSetPayload:
            partner_pk = _pk(input.partner_id, "Partner", "partnerId")
            credit = await credit_lines.set_credit(
                work.session,
                work.principal,
                partner_pk,
                limit_cents=_cents(input.limit, "limit"),
                payment_terms_days=input.payment_terms_days,
                now=utcnow(),
            )
            work.touched("Partner", partner_pk)
            return PartnerCreditSetPayload(credit=PartnerCredit.of(credit))

        return await run_mutation(info, PartnerCreditSetPayload, change)

    @strawberry.mutation(
        description="Create a purchase order priced now (DRAFT, or SUBMITTED with submit). "
        "Refusals: NO_PRICE, PRICE_LIST_EXPIRED, BELOW_MINIMUM, WRONG_PACK_SIZE, and with "
        "submit NO_CREDIT or CREDIT_EXCEEDED (nothing is created then).",
        permission_classes=[requires("purchasing:write")],
    )
    async def purchase_order_create(
        self, info: Info, input: PurchaseOrderCreateInput
    ) -> PurchaseOrderCreatePayload:
        async def change(work: UnitOfWork) -> PurchaseOrderCreatePayload:
            draft = service.OrderDraft(
                store_id=_pk(input.store_id, "Store", "storeId"),
                lines=[
                    (_pk(line.sku_id, "Sku", "lines", str(i), "skuId"), line.quantity)
                    for i, line in enumerate(input.lines)
                ],
                idempotency_key=input.idempotency_key,
                partner_id=_pk(input.partner_id, "Partner", "partnerId")
                if input.partner_id
                else None,
                note=input.note,
            )
            now = utcnow()
            result = await service.create_order(work.session, work.principal, draft, now=now)
            order = result.order
            if input.submit and result.created:
                order = await service.submit(work.session, work.principal, order.id, now=now)
            work.touched("PurchaseOrder", order.id)
            return PurchaseOrderCreatePayload(
                purchase_order=PurchaseOrder.from_row(order), created=result.created
            )

        return await run_mutation(info, PurchaseOrderCreatePayload, change)

    @strawberry.mutation(
        description="Send a draft to HQ, holding its total on your credit line "
        "(CREDIT_EXCEEDED: it does not fit; nothing changes).",
        permission_classes=[requires("purchasing:write")],
    )
    async def purchase_order_submit(
        self, info: Info, input: PurchaseOrderInput
    ) -> PurchaseOrderPayload:
        return await _step(info, input.id, service.submit)

    @strawberry.mutation(
        description="Withdraw an order before it ships; held credit comes back.",
        permission_classes=[requires("purchasing:write")],
    )
    async def purchase_order_cancel(
        self, info: Info, input: PurchaseOrderInput
    ) -> PurchaseOrderPayload:
        return await _step(info, input.id, service.cancel)

    @strawberry.mutation(
        description="Take a shipped order in at its location: its stock moves in, once.",
        permission_classes=[requires("purchasing:write")],
    )
    async def purchase_order_receive(
        self, info: Info, input: PurchaseOrderInput
    ) -> PurchaseOrderPayload:
        return await _step(info, input.id, service.receive)

    @strawberry.mutation(
        description="Approve a submitted order (HQ).",
        permission_classes=[requires("purchasing:manage")],
    )
    async def purchase_order_approve(
        self, info: Info, input: PurchaseOrderInput
    ) -> PurchaseOrderPayload:
        return await _step(info, input.id, service.approve)

    @strawberry.mutation(
        description="Reject a submitted order (HQ); its credit comes back.",
        permission_classes=[requires("purchasing:manage")],
    )
    async def purchase_order_reject(
        self, info: Info, input: PurchaseOrderRejectInput
    ) -> PurchaseOrderPayload:
        return await _step(info, input.id, service.reject, reason=input.reason)

    @strawberry.mutation(
        description="Ship an approved order from an HQ location (HQ): the units leave there "
        "(OUT_OF_STOCK: not enough; nothing changes).",
        permission_classes=[requires("purchasing:manage")],
    )
    async def purchase_order_ship(
        self, info: Info, input: PurchaseOrderShipInput
    ) -> PurchaseOrderPayload:
        async def change(work: UnitOfWork) -> PurchaseOrderPayload:
            row = await service.ship(
                work.session,
                work.principal,
                _pk(input.id, "PurchaseOrder", "id"),
                warehouse_id=_pk(input.warehouse_id, "Store", "warehouseId"),
                tracking_number=input.tracking_number,
                now=utcnow(),
            )
            work.touched("PurchaseOrder", row.id)
            return PurchaseOrderPayload(purchase_order=PurchaseOrder.from_row(row))

        return await run_mutation(info, PurchaseOrderPayload, change)

    @strawberry.mutation(
        description="Allocate a warehouse's available units of a SKU to approved orders short "
        "of it (HQ): tier A before B before C, then by submission; a line left short is "
        "back-ordered until a later run. Never more than the warehouse has available.",
        permission_classes=[requires("purchasing:manage")],
    )
    async def purchase_allocate(
        self, info: Info, input: PurchaseAllocateInput
    ) -> PurchaseAllocatePayload:
        async def change(work: UnitOfWork) -> PurchaseAllocatePayload:
            warehouse_pk = _pk(input.warehouse_id, "Store", "warehouseId")
            done = await allocation.allocate(
                work.session,
                work.principal,
                warehouse_pk,
                _pk(input.sku_id, "Sku", "skuId"),
                now=utcnow(),
            )
            found = await service.orders_by_id(
                work.session, work.principal, [a.order_id for a in done]
            )
            work.touched("Store", warehouse_pk)
            return PurchaseAllocatePayload(
                allocations=[
                    PurchaseAllocation(
                        purchase_order=PurchaseOrder.from_row(found[a.order_id]),
                        quantity=a.quantity,
                        backordered=a.backordered,
                    )
                    for a in done
                ]
            )

        return await run_mutation(info, PurchaseAllocatePayload, change)

    @strawberry.mutation(
        description="Record a received order paid (HQ finance): it closes, credit comes back.",
        permission_classes=[requires("purchasing:manage")],
    )
    async def purchase_order_payment_record(
        self, info: Info, input: PurchaseOrderInput
    ) -> PurchaseOrderPayload:
        return await _step(info, input.id, service.record_payment)


__all__ = ["PriceList", "PurchaseOrder", "PurchasingMutation", "PurchasingQuery"]


schema_parts = SchemaParts(
    query=PurchasingQuery,
    mutation=PurchasingMutation,
    types=[PurchaseOrder, PriceList],
    nodes={"PurchaseOrder": load_orders, "PriceList": load_price_lists},
)
