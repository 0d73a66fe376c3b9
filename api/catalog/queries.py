"""Reading the catalog: products (the whole catalog, for every signed-in caller), their SKUs,
bands and exclusive channels in one statement for many, and SKUs as an order prices them on
a channel (``skus_for_order``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog.models import (
    PriceBand,
    Product,
    ProductStatus,
    SalesChannel,
    Sku,
    SkuExclusiveChannel,
)

MAX_SEARCH = 100

PRODUCT_KEYSET = (Product.id,)


@dataclass(frozen=True, slots=True)
class Band:
    floor: Decimal
    ceiling: Decimal
    list_price: Decimal | None = None


@dataclass(slots=True)
class ProductFilter:
    search: str | None = None  # part of a product name or code, or of a SKU code
    statuses: Sequence[ProductStatus] = ()
    # Active, with an active SKU that may be sold on this channel.
    sellable_on: SalesChannel | None = None


@dataclass(frozen=True, slots=True)
class PricedSku:
    """A SKU as an order prices it on one channel."""

    sku_id: int
    code: str
    product_id: int
    name: str
    currency: str
    suggested_retail_price: Decimal
    cost_price: Decimal
    active: bool  # the SKU and its product are both on sale
    exclusive_channels: frozenset[SalesChannel]  # empty: sellable on every channel
    band: Band | None  # the band of the asked channel, if any

    @property
    def default_price(self) -> Decimal:
        """What a line without a price is charged: the band's list price, else the SRP."""
        if self.band is not None and self.band.list_price is not None:
            return self.band.list_price
        return self.suggested_retail_price

    def sellable_on(self, channel: SalesChannel) -> bool:
        return not self.exclusive_channels or channel in self.exclusive_channels


def _like(text: str) -> str:
    """A LIKE pattern for a substring, with the pattern's own wildcards taken out."""
    cleaned = text.strip().lower()[:MAX_SEARCH]
    return "%" + cleaned.replace("\\", "").replace("%", "").replace("_", "") + "%"


def sellable_skus(channel: SalesChannel) -> Any:
    """SQL: the SKU (``Sku``) is active and not exclusive to other channels."""
    return and_(
        Sku.active.is_(True),
        or_(
            ~exists().where(SkuExclusiveChannel.sku_id == Sku.id),
            exists().where(
                SkuExclusiveChannel.sku_id == Sku.id, SkuExclusiveChannel.channel == channel
            ),
        ),
    )


def products_query(where: ProductFilter | None = None) -> Select[Any]:
    """Products every signed-in caller may read: the whole catalog, archived ones too (the
    orders that name them still show them); filter by status to browse what is on sale."""
    stmt = select(Product)
    if where is None:
        return stmt
    if where.statuses:
        stmt = stmt.where(Product.status.in_(where.statuses))
    if where.sellable_on is not None:
        stmt = stmt.where(
            Product.status == ProductStatus.ACTIVE,
            exists().where(Sku.product_id == Product.id, sellable_skus(where.sellable_on)),
        )
    if where.search and where.search.strip():
        pattern = _like(where.search)
        stmt = stmt.where(
            or_(
                func.lower(Product.name).like(pattern),
                func.lower(Product.code).like(pattern),
                exists().where(Sku.product_id == Product.id, func.lower(Sku.code).like(pattern)),
            )
        )
    return stmt


async def products_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Product]:
    if not ids:
        return {}
    rows = await session.scalars(select(Product).where(Product.id.in_(set(ids))))
    return {p.id: p for p in rows}


async def skus_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Sku]:
    if not ids:
        return {}
    rows = await session.scalars(select(Sku).where(Sku.id.in_(set(ids))))
    return {s.id: s for s in rows}


async def skus_by_code(session: AsyncSession, codes: Sequence[str]) -> dict[str, Sku]:
    if not codes:
        return {}
    rows = await session.scalars(select(Sku).where(Sku.code.in_(set(codes))))
    return {s.code: s for s in rows}


async def skus_of_products(
    session: AsyncSession, product_ids: Sequence[int]
) -> dict[int, list[Sku]]:
    """Every SKU of each product, in creation order: one statement for all the products."""
    found: dict[int, list[Sku]] = {pid: [] for pid in product_ids}
    if not product_ids:
        return found
    rows = await session.scalars(
        select(Sku).where(Sku.product_id.in_(set(product_ids))).order_by(Sku.product_id, Sku.id)
    )
    for sku in rows:
        found[sku.product_id].append(sku)
    return found


async def bands_of(session: AsyncSession, sku_ids: Sequence[int]) -> dict[int, list[PriceBand]]:
    """Each SKU's price bands in channel order (as SalesChannel lists them)."""
    found: dict[int, list[PriceBand]] = {sid: [] for sid in sku_ids}
    if not sku_ids:
        return found
    rows = await session.scalars(select(PriceBand).where(PriceBand.sku_id.in_(set(sku_ids))))
    order = {channel: i for i, channel in enumerate(SalesChannel)}
    for band in sorted(rows, key=lambda b: (b.sku_id, order[b.channel])):
        found[band.sku_id].append(band)
    return found


async def exclusive_channels_of(
    session: AsyncSession, sku_ids: Sequence[int]
) -> dict[int, list[SalesChannel]]:
    """The channels each SKU is exclusive to (empty: sold everywhere), in channel order."""
    found: dict[int, list[SalesChannel]] = {sid: [] for sid in sku_ids}
    if not sku_ids:
        return found
    rows = await session.execute(
        select(SkuExclusiveChannel.sku_id, SkuExclusiveChannel.channel).where(
            SkuExclusiveChannel.sku_id.in_(set(sku_ids))
        )
    )
    order = {channel: i for i, channel in enumerate(SalesChannel)}
    for sku_id, channel in sorted(rows, key=lambda r: (r[0], order[r[1]])):
        found[sku_id].append(channel)
    return found


async def skus_for_order(
    session: AsyncSession,
    channel: SalesChannel,
    *,
    ids: Sequence[int] = (),
    codes: Sequence[str] = (),
) -> list[PricedSku]:
    """The SKUs named by id or code, priced for ``channel``, in id order; unknown ones are
    left out. Two statements however many SKUs: the SKUs with their product's status and
    the channel's band (one join), then their exclusive channels."""
    if not ids and not codes:
        return []
    named = []
    if ids:
        named.append(Sku.id.in_(set(ids)))
    if codes:
        named.append(Sku.code.in_(set(codes)))
    rows = (
        await session.execute(
            select(Sku, Product.status, PriceBand.floor, PriceBand.ceiling, PriceBand.list_price)
            .join(Product, Product.id == Sku.product_id)
            .outerjoin(PriceBand, and_(PriceBand.sku_id == Sku.id, PriceBand.channel == channel))
            .where(or_(*named))
            .order_by(Sku.id)
        )
    ).all()
    if not rows:
        return []
    exclusive = await exclusive_channels_of(session, [row[0].id for row in rows])
    return [
        PricedSku(
            sku_id=sku.id,
            code=sku.code,
            product_id=sku.product_id,
            name=sku.name,
            currency=sku.currency,
            suggested_retail_price=sku.suggested_retail_price,
            cost_price=sku.cost_price,
            active=sku.active and status is ProductStatus.ACTIVE,
            exclusive_channels=frozenset(exclusive[sku.id]),
            band=_band(floor, ceiling, list_price),
        )
        for sku, status, floor, ceiling, list_price in rows
    ]


def _band(
    floor: Decimal | None, ceiling: Decimal | None, list_price: Decimal | None
) -> Band | None:
    """The channel's band off the outer join: its columns are all None when there is none."""
    if floor is None or ceiling is None:
        return None
    return Band(floor, ceiling, list_price)
