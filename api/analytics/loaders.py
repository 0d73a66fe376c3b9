"""Batch loads of the analytics domain. Each batch opens its own session: strawberry resolves
sibling fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from api.analytics import metrics, spend
from api.analytics.models import ChannelSpend, CustomerMetrics
from api.analytics.reports import attributed_sales
from api.auth.models import StaffUser
from api.graphql.context import Context


async def metrics_by_customer(ctx: Context, keys: Sequence[int]) -> list[CustomerMetrics | None]:
    """``Customer.metrics`` for a page of customers: one statement. The customers were read
    through the caller's scope already; the schema decides who may see metrics at all."""
    async with ctx.db.read() as session:
        found = await metrics.metrics_of(session, keys)
    return [found.get(k) for k in keys]


async def guides_by_pk(ctx: Context, keys: Sequence[int]) -> list[StaffUser | None]:
    async with ctx.db.read() as session:
        found = await attributed_sales.guides_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def spends_by_pk(ctx: Context, keys: Sequence[int]) -> list[ChannelSpend | None]:
    async with ctx.db.read() as session:
        found = await spend.spends_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]
