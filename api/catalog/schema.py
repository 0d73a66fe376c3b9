"""GraphQL surface of the catalog: thin wrappers over queries.py, editing.py and loaders.py.

Every signed-in caller reads the catalog (members browse it); only HQ writes it. A SKU's
cost price is the brand's secret: HQ sees it, everyone else reads null.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

import strawberry
from strawberry import UNSET as GQL_UNSET

from api.catalog import editing, loaders, models, queries, rules
from api.db import utcnow
from api.errors import DomainError, InputError, Problem
from api.graphql.context import Context, Info
from api.graphql.errors import UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.money import Money
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import Authenticated, requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.inventory import loaders as inventory_loaders
from api.inventory.adjusting import MAX_QUANTITY

# What a member may ask pickupAvailable about: a basket's worth. A yes/no over any quantity
# would let them read a store's exact stock by bisection.
MEMBER_PICKUP_QUANTITY = 5

SalesChannel = strawberry.enum(
    models.SalesChannel,
    description="Where an order is taken: the mini-program, the web shop, a store's POS, a "
    "marketplace (Tmall, JD, Douyin) or a group buy (团购).",
)
ProductStatus = strawberry.enum(
    models.ProductStatus, description="ARCHIVED: no longer sold, kept for the orders naming it."
)
CatalogErrorCode = strawberry.enum(rules.CatalogErrorCode)


# --- types ----------------------------------------------------------------------------------


@strawberry.type(description="The price range a SKU may sell at on one channel.")
class PriceBand:
    channel: SalesChannel  # type: ignore[valid-type]  # strawberry.enum() value
    floor: Money = strawberry.field(description="Below it is 乱价 (selling under the floor).")
    ceiling: Money
    list_price: Money | None = strawberry.field(
        description="The channel's default price; null: the suggested retail price."
    )

    @classmethod
    def from_row(cls, row: models.PriceBand, currency: str) -> PriceBand:
        return cls(
            channel=row.channel,
            floor=Money(amount=row.floor, currency=currency),
            ceiling=Money(amount=row.ceiling, currency=currency),
            list_price=Money.of(row.list_price, currency),
        )


@strawberry.type(description="A sellable variant of a product (a size, a colour).")
class Sku(Node):
    code: str
    name: str
    active: bool = strawberry.field(description="false: not sold, whatever its product.")
    suggested_retail_price: Money = strawberry.field(description="建议零售价.")
    cost_price: Money | None = strawberry.field(
        description="What it costs the brand (for gross margin): HQ only, null for others."
    )
    created_at: datetime
    pk: strawberry.Private[int]
    product_pk: strawberry.Private[int]
    currency: strawberry.Private[str]

    @classmethod
    def from_row(cls, row: models.Sku, ctx: Context) -> Sku:
        return cls(
            id=strawberry.ID(encode_id("Sku", row.id)),
            pk=row.id,
            product_pk=row.product_id,
            currency=row.currency,
            code=row.code,
            name=row.name,
            active=row.active,
            suggested_retail_price=Money(amount=row.suggested_retail_price, currency=row.currency),
            cost_price=Money.of(row.cost_price, row.currency) if ctx.principal.is_hq else None,
            created_at=row.created_at,
        )

    @strawberry.field
    async def product(self, info: Info) -> Product:
        row = await info.context.loader(loaders.products_by_pk).load(self.product_pk)
        return Product.from_row(row)

    @strawberry.field(description="Per-channel price bands, in channel order.")
    async def price_bands(self, info: Info) -> list[PriceBand]:
        rows = await info.context.loader(loaders.bands_by_sku).load(self.pk)
        return [PriceBand.from_row(r, self.currency) for r in rows]

    @strawberry.field(
        description="线上专供款: the only channels it is sold on. Empty: sold on every channel."
    )
    async def exclusive_channels(self, info: Info) -> list[SalesChannel]:  # type: ignore[valid-type]  # strawberry.enum() value
        return await info.context.loader(loaders.exclusive_channels_by_sku).load(self.pk)

    @strawberry.field(
        description="What an order on `channel` charges when it names no price: the band's "
        "list price, else the suggested retail price. Null where it is not on sale there "
        "(inactive, archived, or exclusive to other channels)."
    )
    async def default_price(
        self,
        info: Info,
        channel: SalesChannel,  # type: ignore[valid-type]  # strawberry.enum() value
    ) -> Money | None:
        ctx = info.context
        product = await ctx.loader(loaders.products_by_pk).load(self.product_pk)
        exclusive = await ctx.loader(loaders.exclusive_channels_by_sku).load(self.pk)
        if (
            not self.active
            or product.status is not models.ProductStatus.ACTIVE
            or (exclusive and channel not in exclusive)
        ):
            return None
        bands = await ctx.loader(loaders.bands_by_sku).load(self.pk)
        band = next((b for b in bands if b.channel is channel), None)
        if band is not None and band.list_price is not None:
            return Money(amount=band.list_price, currency=self.currency)
        return self.suggested_retail_price

    @strawberry.field(
        description="Whether `quantity` units can be picked up at `storeId` now (yes or no: "
        "stock counts are the location's business). Members may ask about any open store "
        f"offering pickup, for at most {MEMBER_PICKUP_QUANTITY} units; staff and partners "
        "about their own; null for any other store."
    )
    async def pickup_available(
        self, info: Info, store_id: strawberry.ID, quantity: int = 1
    ) -> bool | None:
        most = MEMBER_PICKUP_QUANTITY if info.context.principal.is_member else MAX_QUANTITY
        if not 0 < quantity <= most:
            raise InputError(f"`quantity` must be between 1 and {most}.")
        store_pk = decode_id_of(store_id, "Store")
        loader = info.context.loader(inventory_loaders.pickup_availability)
        available = await loader.load((store_pk, self.pk))
        return None if available is None else available >= quantity


@strawberry.type(description="A product and its SKUs.")
class Product(Node):
    code: str
    name: str
    description: str | None
    status: ProductStatus  # type: ignore[valid-type]  # strawberry.enum() value
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.Product) -> Product:
        return cls(
            id=strawberry.ID(encode_id("Product", row.id)),
            pk=row.id,
            code=row.code,
            name=row.name,
            description=row.description,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @strawberry.field(description=f"All its SKUs (at most {rules.MAX_SKUS}), oldest first.")
    async def skus(self, info: Info) -> list[Sku]:
        rows = await info.context.loader(loaders.skus_by_product).load(self.pk)
        return [Sku.from_row(r, info.context) for r in rows]


async def _load_products(ctx: Context, pks: Sequence[int]) -> list[Product | None]:
    rows = await ctx.loader(loaders.products_by_pk).load_many(pks)
    return [Product.from_row(r) if r else None for r in rows]


async def _load_skus(ctx: Context, pks: Sequence[int]) -> list[Sku | None]:
    rows = await ctx.loader(loaders.skus_by_pk).load_many(pks)
    return [Sku.from_row(r, ctx) if r else None for r in rows]


# --- queries --------------------------------------------------------------------------------


@strawberry.input
class ProductFilter:
    search: str | None = strawberry.field(
        default=None, description="Part of a product's name or code, or of a SKU code."
    )
    statuses: list[ProductStatus] | None = None  # type: ignore[valid-type]  # strawberry.enum() value
    sellable_on: SalesChannel | None = strawberry.field(  # type: ignore[valid-type]  # strawberry.enum() value
        default=None,
        description="Active products with an active SKU that may be sold on this channel.",
    )

    def to_service(self) -> queries.ProductFilter:
        return queries.ProductFilter(
            search=self.search, statuses=self.statuses or (), sellable_on=self.sellable_on
        )


@strawberry.type
class CatalogQuery:
    @connection(
        Connection[Product],
        description="The catalog, for every signed-in caller.",
        permission_classes=[Authenticated],
    )
    async def products(
        self, info: Info, filter: ProductFilter | None = None, reverse: bool = False
    ) -> Rows[Product]:
        stmt = queries.products_query(filter.to_service() if filter else None)
        return Rows(stmt, queries.PRODUCT_KEYSET, Product.from_row, reverse=reverse)

    @strawberry.field(
        description="A SKU by its code (what a scanner or an import names); null if none.",
        permission_classes=[Authenticated],
    )
    async def sku(self, info: Info, code: str) -> Sku | None:
        row = await info.context.loader(loaders.skus_by_code).load(code.strip())
        return Sku.from_row(row, info.context) if row else None


# --- mutations ------------------------------------------------------------------------------


@strawberry.type
class CatalogError(UserError):
    code: CatalogErrorCode  # type: ignore[valid-type]  # strawberry.enum() value


@strawberry.input(
    description="Amounts in the SKU's currency, in cents at most. A list price lies inside "
    "its band; a band leaving out the suggested retail price must name one."
)
class PriceBandInput:
    channel: SalesChannel  # type: ignore[valid-type]  # strawberry.enum() value
    floor: Decimal
    ceiling: Decimal
    list_price: Decimal | None = None

    def to_service(self) -> rules.BandDraft:
        return rules.BandDraft(self.channel, self.floor, self.ceiling, self.list_price)


@strawberry.input
class SkuInput:
    code: str
    name: str
    suggested_retail_price: Decimal
    cost_price: Decimal
    currency: str = "CNY"
    exclusive_channels: list[SalesChannel] = strawberry.field(  # type: ignore[valid-type]  # strawberry.enum() value
        default_factory=list,
        description="线上专供款: sold only on these channels. Empty: on every channel.",
    )
    price_bands: list[PriceBandInput] = strawberry.field(
        default_factory=list, description="At most one per channel."
    )

    def to_service(self) -> rules.SkuDraft:
        return rules.SkuDraft(
            code=self.code.strip(),
            name=self.name,
            suggested_retail_price=self.suggested_retail_price,
            cost_price=self.cost_price,
            currency=self.currency,
            exclusive_channels=self.exclusive_channels,
            price_bands=[b.to_service() for b in self.price_bands],
        )


@strawberry.input
class ProductCreateInput:
    code: str
    name: str
    skus: list[SkuInput] = strawberry.field(description=f"At least one, at most {rules.MAX_SKUS}.")
    description: str | None = None


@strawberry.input(description="Only the fields given change.")
class ProductUpdateInput:
    id: strawberry.ID
    name: str | None = GQL_UNSET
    description: str | None = strawberry.field(default=GQL_UNSET, description="null clears it.")
    status: ProductStatus | None = GQL_UNSET  # type: ignore[valid-type]  # strawberry.enum() value


@strawberry.input
class SkuCreateInput:
    product_id: strawberry.ID
    sku: SkuInput


@strawberry.input(
    description="Only the fields given change; `priceBands` and `exclusiveChannels` replace "
    "the SKU's (an empty list removes them all)."
)
class SkuUpdateInput:
    id: strawberry.ID
    name: str | None = GQL_UNSET
    suggested_retail_price: Decimal | None = GQL_UNSET
    cost_price: Decimal | None = GQL_UNSET
    active: bool | None = GQL_UNSET
    exclusive_channels: list[SalesChannel] | None = GQL_UNSET  # type: ignore[valid-type]  # strawberry.enum() value
    price_bands: list[PriceBandInput] | None = GQL_UNSET


@strawberry.type
class ProductCreatePayload:
    product: Product | None = None
    errors: list[CatalogError] = strawberry.field(default_factory=list)


@strawberry.type
class ProductUpdatePayload:
    product: Product | None = None
    errors: list[CatalogError] = strawberry.field(default_factory=list)


@strawberry.type
class SkuCreatePayload:
    sku: Sku | None = None
    errors: list[CatalogError] = strawberry.field(default_factory=list)


@strawberry.type
class SkuUpdatePayload:
    sku: Sku | None = None
    errors: list[CatalogError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=rules.CatalogErrorCode.INVALID)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _changes(input: Any, target: Any, names: Sequence[str], nullable: Sequence[str] = ()) -> None:
    """Copy the input fields given onto ``target``; null is refused unless ``nullable``."""
    for name in names:
        value = getattr(input, name)
        if value is GQL_UNSET:
            continue
        if value is None and name not in nullable:
            raise DomainError.one(
                rules.CatalogErrorCode.REQUIRED, f"{_camel(name)} cannot be null.", _camel(name)
            )
        setattr(target, name, value)


@strawberry.type
class CatalogMutation:
    @strawberry.mutation(
        description="A product with its SKUs, their price bands and exclusive channels (HQ).",
        permission_classes=[requires("catalog:write")],
    )
    async def product_create(self, info: Info, input: ProductCreateInput) -> ProductCreatePayload:
        async def change(work: UnitOfWork) -> ProductCreatePayload:
            draft = editing.ProductDraft(
                code=input.code.strip(),
                name=input.name,
                description=input.description,
                skus=[s.to_service() for s in input.skus],
            )
            row = await editing.create_product(work.session, work.principal, draft, now=utcnow())
            work.touched("Product", row.id)
            return ProductCreatePayload(product=Product.from_row(row))

        return await run_mutation(info, ProductCreatePayload, change)

    @strawberry.mutation(
        description="Rename, describe, archive (stop selling) or reactivate a product (HQ).",
        permission_classes=[requires("catalog:write")],
    )
    async def product_update(self, info: Info, input: ProductUpdateInput) -> ProductUpdatePayload:
        async def change(work: UnitOfWork) -> ProductUpdatePayload:
            changes = editing.ProductChanges()
            product_pk = _pk(input.id, "Product", "id")
            _changes(input, changes, ("name", "description", "status"), nullable=("description",))
            row = await editing.update_product(
                work.session, work.principal, product_pk, changes, now=utcnow()
            )
            work.touched("Product", row.id)
            return ProductUpdatePayload(product=Product.from_row(row))

        return await run_mutation(info, ProductUpdatePayload, change)

    @strawberry.mutation(
        description="Add a SKU to a product (HQ).",
        permission_classes=[requires("catalog:write")],
    )
    async def sku_create(self, info: Info, input: SkuCreateInput) -> SkuCreatePayload:
        async def change(work: UnitOfWork) -> SkuCreatePayload:
            product_pk = _pk(input.product_id, "Product", "productId")
            try:
                row = await editing.create_sku(
                    work.session, work.principal, product_pk, input.sku.to_service(), now=utcnow()
                )
            except DomainError as error:
                # The SKU's own fields are under the input's `sku`.
                raise DomainError(
                    [
                        p
                        if p.field is None or p.field[0] == "productId"
                        else Problem(p.code, p.message, ("sku", *p.field))
                        for p in error.problems
                    ]
                ) from None
            work.touched("Sku", row.id)
            return SkuCreatePayload(sku=Sku.from_row(row, work.context))

        return await run_mutation(info, SkuCreatePayload, change)

    @strawberry.mutation(
        description="Change a SKU's name, prices or availability, or replace its price bands "
        "or exclusive channels (HQ).",
        permission_classes=[requires("catalog:write")],
    )
    async def sku_update(self, info: Info, input: SkuUpdateInput) -> SkuUpdatePayload:
        async def change(work: UnitOfWork) -> SkuUpdatePayload:
            changes = editing.SkuChanges()
            sku_pk = _pk(input.id, "Sku", "id")
            _changes(
                input,
                changes,
                ("name", "suggested_retail_price", "cost_price", "active", "exclusive_channels"),
            )
            if input.price_bands is not GQL_UNSET:
                if input.price_bands is None:
                    raise DomainError.one(
                        rules.CatalogErrorCode.REQUIRED,
                        "priceBands cannot be null; [] removes them.",
                        "priceBands",
                    )
                changes.price_bands = [b.to_service() for b in input.price_bands]
            row = await editing.update_sku(work.session, work.principal, sku_pk, changes)
            work.touched("Sku", row.id)
            return SkuUpdatePayload(sku=Sku.from_row(row, work.context))

        return await run_mutation(info, SkuUpdatePayload, change)


__all__ = ["CatalogMutation", "CatalogQuery", "PriceBand", "Product", "SalesChannel", "Sku"]


schema_parts = SchemaParts(
    query=CatalogQuery,
    mutation=CatalogMutation,
    types=[Product, Sku],
    nodes={"Product": _load_products, "Sku": _load_skus},
)
