"""The GraphQL types of purchasing (价格表, 授信, 采购单, 进销存) and how ``node`` loads them.

Amounts are exact cents inside and ``Money`` (a decimal to the cent) here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import strawberry

from api.catalog import loaders as catalog_loaders
from api.catalog.schema import Sku
from api.graphql.context import Context, Info
from api.graphql.ids import encode_id
from api.graphql.money import Money
from api.graphql.relay import Node
from api.partners import loaders as partner_loaders
from api.partners.models import PartnerTier, PartnerType
from api.partners.schema import Partner, Store
from api.purchasing import credit_lines, loaders, models, pricing
from api.purchasing.errors import PurchasingErrorCode as Code

# strawberry.enum registers the GraphQL enum on the domain enum class itself (and returns
# it): fields are annotated with the class, which is a type to mypy too.
PurchaseOrderStatus = models.PurchaseOrderStatus
strawberry.enum(
    PurchaseOrderStatus,
    description="DRAFT → SUBMITTED (credit held) → APPROVED → ALLOCATED (its units reserved "
    "at a warehouse) → SHIPPED → RECEIVED → CLOSED "
    "(paid, credit back); REJECTED by HQ or CANCELLED before shipment give the credit back.",
)
PriceBasis = pricing.PriceBasis
strawberry.enum(
    PriceBasis,
    description="Why a price list applied, most specific first: CONTRACT (the partner's own), "
    "TIER_AND_TYPE, TIER, TYPE.",
)
PurchasingErrorCode = Code
strawberry.enum(PurchasingErrorCode)


def money(cents: int, currency: str) -> Money:
    return Money(amount=Decimal(cents).scaleb(-2), currency=currency)


# --- types ------------------------------------------------------------------------------------


@strawberry.type(description="A quantity break: from `minQuantity` units, a discount.")
class PriceBreak:
    min_quantity: int
    discount_basis_points: int = strawberry.field(description="300 means 3% off.")


@strawberry.type(description="One SKU's price on a list, its minimum order and pack size.")
class PriceListItem:
    unit_price: Money
    min_quantity: int
    pack_size: int = strawberry.field(description="Orders are whole packs (箱规) of this.")
    breaks: list[PriceBreak]
    sku_pk: strawberry.Private[int]

    @strawberry.field
    async def sku(self, info: Info) -> Sku | None:
        row = await info.context.loader(catalog_loaders.skus_by_pk).load(self.sku_pk)
        return Sku.from_row(row, info.context) if row else None


@strawberry.type(
    description="A price list (价格表), HQ's. Never edited: a new edition "
    "supersedes it by its validity."
)
class PriceList(Node):
    name: str
    currency: str
    tier: PartnerTier | None
    partner_type: PartnerType | None
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime
    pk: strawberry.Private[int]
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.PriceList) -> PriceList:
        return cls(
            id=strawberry.ID(encode_id("PriceList", row.id)),
            pk=row.id,
            partner_pk=row.partner_id,
            name=row.name,
            currency=row.currency,
            tier=row.tier,
            partner_type=row.partner_type,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            created_at=row.created_at,
        )

    @strawberry.field(description="A contract list's partner; null for a tier or type list.")
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field(description="Its SKUs in SKU order (one statement for every list).")
    async def items(self, info: Info) -> list[PriceListItem]:
        found = await info.context.loader(loaders.items_by_list).load(self.pk)
        return [
            PriceListItem(
                sku_pk=item.sku_id,
                unit_price=money(item.unit_price_cents, self.currency),
                min_quantity=item.min_quantity,
                pack_size=item.pack_size,
                breaks=[
                    PriceBreak(min_quantity=b.min_quantity, discount_basis_points=b.discount_bp)
                    for b in breaks
                ],
            )
            for item, breaks in found
        ]


@strawberry.type(description="A partner's credit line (授信): what it may owe at once.")
class PartnerCredit:
    limit: Money
    used: Money = strawberry.field(
        description="Held by its submitted, approved, shipped and received orders not yet paid."
    )
    available: Money
    payment_terms_days: int
    partner_pk: strawberry.Private[int]

    @classmethod
    def of(cls, credit: credit_lines.Credit) -> PartnerCredit:
        return cls(
            partner_pk=credit.partner_id,
            limit=money(credit.limit_cents, credit.currency),
            used=money(credit.used_cents, credit.currency),
            available=money(credit.available_cents, credit.currency),
            payment_terms_days=credit.payment_terms_days,
        )

    @strawberry.field
    async def partner(self, info: Info) -> Partner | None:
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None


@strawberry.type(description="What a partner pays for a quantity of a SKU, and why.")
class PurchasePrice:
    quantity: int
    unit_price: Money | None
    line_total: Money | None
    list_price: Money | None = strawberry.field(description="Before the quantity break.")
    discount_basis_points: int
    break_min_quantity: int | None = strawberry.field(description="The break that applied.")
    min_quantity: int | None
    pack_size: int | None
    basis: PriceBasis | None
    price_list_name: str | None
    problem: PurchasingErrorCode | None = strawberry.field(
        description="NO_PRICE or PRICE_LIST_EXPIRED: no price applies (the amounts are null)."
    )
    explanation: str


@strawberry.type(
    description="进销存 of one location and SKU over a period: closing = opening + purchased "
    "− sold + returned − dispatched + adjusted."
)
class SellThroughRow:
    opening: int
    purchased: int = strawberry.field(description="Received (purchase orders).")
    sold: int
    returned: int = strawberry.field(description="Put back by refunds and returns.")
    dispatched: int = strawberry.field(description="Sent to other locations.")
    adjusted: int = strawberry.field(description="Counts and corrections, net.")
    closing: int
    turnover: Decimal | None = strawberry.field(
        description="Sold ÷ average stock ((opening + closing) ÷ 2), half-up to 0.01; null "
        "without stock."
    )
    days_of_inventory: Decimal | None = strawberry.field(
        description="Average stock × days ÷ sold, half-up to 0.01; null when nothing sold."
    )
    store_pk: strawberry.Private[int]
    sku_pk: strawberry.Private[int]

    @strawberry.field
    async def store(self, info: Info) -> Store | None:
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field
    async def sku(self, info: Info) -> Sku | None:
        row = await info.context.loader(catalog_loaders.skus_by_pk).load(self.sku_pk)
        return Sku.from_row(row, info.context) if row else None


@strawberry.type(description="A purchase order's line, priced when the order was created.")
class PurchaseOrderLine:
    quantity: int
    list_price: Money
    discount_basis_points: int
    unit_price: Money = strawberry.field(description="List price less the break, half-up.")
    line_total: Money
    allocated: int = strawberry.field(description="Units reserved for it at its warehouse.")
    backordered: int = strawberry.field(
        description="Units an approved order still waits for (a later allocation fills them)."
    )
    sku_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.PurchaseOrderLine, currency: str) -> PurchaseOrderLine:
        return cls(
            sku_pk=row.sku_id,
            quantity=row.quantity,
            list_price=money(row.list_price_cents, currency),
            discount_basis_points=row.discount_bp,
            unit_price=money(row.unit_price_cents, currency),
            line_total=money(row.line_total_cents, currency),
            allocated=row.allocated,
            backordered=row.quantity - row.allocated,
        )

    @strawberry.field
    async def sku(self, info: Info) -> Sku | None:
        row = await info.context.loader(catalog_loaders.skus_by_pk).load(self.sku_pk)
        return Sku.from_row(row, info.context) if row else None


@strawberry.type(description="A partner's order for stock from the brand (采购单).")
class PurchaseOrder(Node):
    status: PurchaseOrderStatus
    total: Money
    idempotency_key: str
    note: str | None
    created_at: datetime
    submitted_at: datetime | None
    decided_at: datetime | None
    rejection_reason: str | None
    shipped_at: datetime | None
    tracking_number: str | None
    received_at: datetime | None
    cancelled_at: datetime | None
    paid_at: datetime | None
    pk: strawberry.Private[int]
    currency: strawberry.Private[str]
    partner_pk: strawberry.Private[int]
    store_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.PurchaseOrder) -> PurchaseOrder:
        return cls(
            id=strawberry.ID(encode_id("PurchaseOrder", row.id)),
            pk=row.id,
            currency=row.currency,
            partner_pk=row.partner_id,
            store_pk=row.store_id,
            status=row.status,
            total=money(row.total_cents, row.currency),
            idempotency_key=row.idempotency_key,
            note=row.note,
            created_at=row.created_at,
            submitted_at=row.submitted_at,
            decided_at=row.decided_at,
            rejection_reason=row.rejection_reason,
            shipped_at=row.shipped_at,
            tracking_number=row.tracking_number,
            received_at=row.received_at,
            cancelled_at=row.cancelled_at,
            paid_at=row.paid_at,
        )

    @strawberry.field
    async def partner(self, info: Info) -> Partner | None:
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field(description="The partner's location it is delivered to.")
    async def store(self, info: Info) -> Store | None:
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(description="Its lines (one statement for every order in the response).")
    async def lines(self, info: Info) -> list[PurchaseOrderLine]:
        rows = await info.context.loader(loaders.lines_by_order).load(self.pk)
        return [PurchaseOrderLine.from_row(r, self.currency) for r in rows]


async def load_orders(ctx: Context, pks: Sequence[int]) -> list[PurchaseOrder | None]:
    rows = await ctx.loader(loaders.orders_by_pk).load_many(pks)
    return [PurchaseOrder.from_row(r) if r else None for r in rows]


async def load_price_lists(ctx: Context, pks: Sequence[int]) -> list[PriceList | None]:
    if not ctx.principal.is_hq:  # a partner's node(id:) answers like for a missing one
        return [None for _ in pks]
    rows = await ctx.loader(loaders.price_lists_by_pk).load_many(pks)
    return [PriceList.from_row(r) if r else None for r in rows]
