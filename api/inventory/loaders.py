"""Batch loads of stock. Each batch opens its own session (sibling fields resolve
concurrently) and reads through the principal's scope: another partner's stock is missing."""

from __future__ import annotations

from collections.abc import Sequence

from api.graphql.context import Context
from api.inventory import queries
from api.inventory.models import StockAlert, StockLevel, StockMovement


async def levels_by_pk(ctx: Context, keys: Sequence[int]) -> list[StockLevel | None]:
    async with ctx.db.read() as session:
        found = await queries.levels_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def movements_by_pk(ctx: Context, keys: Sequence[int]) -> list[StockMovement | None]:
    async with ctx.db.read() as session:
        found = await queries.movements_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def alerts_by_pk(ctx: Context, keys: Sequence[int]) -> list[StockAlert | None]:
    async with ctx.db.read() as session:
        found = await queries.alerts_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def pickup_availability(ctx: Context, keys: Sequence[tuple[int, int]]) -> list[int | None]:
    """(store pk, SKU pk) → units available, or None where the store is not askable."""
    async with ctx.db.read() as session:
        found = await queries.pickup_availability(session, ctx.principal, keys)
    return [found[k] for k in keys]
