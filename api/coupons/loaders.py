"""Batch loads of the coupons domain. Each batch opens its own session: strawberry resolves
sibling fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from api.coupons import access, stats, templates
from api.coupons.models import Coupon, CouponTemplate
from api.db import utcnow
from api.graphql.context import Context
from api.pagination import Page, PageRequest, count_grouped, fetch_grouped_pages


async def templates_by_pk(ctx: Context, keys: Sequence[int]) -> list[CouponTemplate | None]:
    async with ctx.db.read() as session:
        found = await access.templates_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def coupons_by_pk(ctx: Context, keys: Sequence[int]) -> list[Coupon | None]:
    async with ctx.db.read() as session:
        found = await access.coupons_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def coupon_pages_by_customer(
    ctx: Context, request: PageRequest, keys: Sequence[int]
) -> list[Page[Coupon]]:
    """Newest first: one ROW_NUMBER statement pages every customer of the request."""
    async with ctx.db.read() as session:
        pages = await fetch_grouped_pages(
            session,
            access.coupons_query(ctx.principal),
            Coupon,
            Coupon.customer_id,
            keys,
            access.COUPON_KEYSET,
            request,
            reverse=True,
        )
    return [pages[k] for k in keys]


async def coupon_counts_by_customer(ctx: Context, keys: Sequence[int]) -> list[int]:
    async with ctx.db.read() as session:
        counts = await count_grouped(
            session, access.coupons_query(ctx.principal), Coupon.customer_id, keys
        )
    return [counts[k] for k in keys]


async def restrictions_by_template(
    ctx: Context, keys: Sequence[int]
) -> list[tuple[list[int], list[int]]]:
    async with ctx.db.read() as session:
        stores, partners = await templates.restrictions_of(session, keys)
    return [(stores[k], partners[k]) for k in keys]


async def stats_by_template(ctx: Context, keys: Sequence[int]) -> list[stats.TemplateStats]:
    async with ctx.db.read() as session:
        found = await stats.template_stats(session, keys, now=utcnow())
    return [found[k] for k in keys]
