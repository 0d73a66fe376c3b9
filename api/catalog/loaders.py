"""Batch loads of the catalog. Each batch opens its own session: strawberry resolves sibling
fields concurrently, and an AsyncSession must not be shared between them. The catalog is
brand-wide, so no load here is scoped to the principal."""

from __future__ import annotations

from collections.abc import Sequence

from api.catalog import queries
from api.catalog.models import PriceBand, Product, SalesChannel, Sku
from api.graphql.context import Context


async def products_by_pk(ctx: Context, keys: Sequence[int]) -> list[Product | None]:
    async with ctx.db.read() as session:
        found = await queries.products_by_id(session, keys)
    return [found.get(k) for k in keys]


async def skus_by_pk(ctx: Context, keys: Sequence[int]) -> list[Sku | None]:
    async with ctx.db.read() as session:
        found = await queries.skus_by_id(session, keys)
    return [found.get(k) for k in keys]


async def skus_by_code(ctx: Context, keys: Sequence[str]) -> list[Sku | None]:
    async with ctx.db.read() as session:
        found = await queries.skus_by_code(session, keys)
    return [found.get(k) for k in keys]


async def skus_by_product(ctx: Context, keys: Sequence[int]) -> list[list[Sku]]:
    async with ctx.db.read() as session:
        found = await queries.skus_of_products(session, keys)
    return [found[k] for k in keys]


async def bands_by_sku(ctx: Context, keys: Sequence[int]) -> list[list[PriceBand]]:
    async with ctx.db.read() as session:
        found = await queries.bands_of(session, keys)
    return [found[k] for k in keys]


async def exclusive_channels_by_sku(ctx: Context, keys: Sequence[int]) -> list[list[SalesChannel]]:
    async with ctx.db.read() as session:
        found = await queries.exclusive_channels_of(session, keys)
    return [found[k] for k in keys]
