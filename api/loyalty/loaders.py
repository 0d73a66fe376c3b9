"""Batch loads of the points ledger. Each batch opens its own session: strawberry resolves
sibling fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from api.db import utcnow
from api.graphql.context import Context
from api.loyalty import balances, earning
from api.loyalty.models import PointsEarningRule, PointsEntry
from api.pagination import Page, PageRequest, count_grouped, fetch_grouped_pages


async def balances_by_customer(ctx: Context, keys: Sequence[int]) -> list[balances.Balance]:
    """Point-in-time balances (see ``balances.balances_of``): one statement per batch."""
    async with ctx.db.read() as session:
        found = await balances.balances_of(session, keys, utcnow())
    return [found[k] for k in keys]


async def entry_pages_by_customer(
    ctx: Context, request: PageRequest, keys: Sequence[int]
) -> list[Page[tuple[PointsEntry, datetime | None]]]:
    """A ledger page per customer, newest first, each entry with its lot's expiry: two
    statements per batch however many customers (ROW_NUMBER pages, then the lots)."""
    async with ctx.db.read() as session:
        pages = await fetch_grouped_pages(
            session,
            balances.entries_query(ctx.principal),
            PointsEntry,
            PointsEntry.customer_id,
            keys,
            balances.ENTRY_KEYSET,
            request,
            reverse=True,
        )
        lot_ids = {e.lot_id for p in pages.values() for e in p.items if e.lot_id is not None}
        expiries = await balances.lot_expiries(session, sorted(lot_ids))
    return [_with_expiry(pages[k], expiries) for k in keys]


def _with_expiry(
    page: Page[PointsEntry], expiries: dict[int, datetime | None]
) -> Page[tuple[PointsEntry, datetime | None]]:
    items = [(e, expiries.get(e.lot_id) if e.lot_id is not None else None) for e in page.items]
    return Page(items, page.cursors, page.has_next, page.has_previous)


async def entry_counts_by_customer(ctx: Context, keys: Sequence[int]) -> list[int]:
    async with ctx.db.read() as session:
        counts = await count_grouped(
            session, balances.entries_query(ctx.principal), PointsEntry.customer_id, keys
        )
    return [counts[k] for k in keys]


async def entries_by_pk(
    ctx: Context, keys: Sequence[int]
) -> list[tuple[PointsEntry, datetime | None] | None]:
    async with ctx.db.read() as session:
        found = await balances.entries_by_id(session, ctx.principal, keys)
        lot_ids = sorted({e.lot_id for e in found.values() if e.lot_id is not None})
        expiries = await balances.lot_expiries(session, lot_ids)

    def with_expiry(entry: PointsEntry) -> tuple[PointsEntry, datetime | None]:
        lot_id = entry.lot_id
        return entry, expiries.get(lot_id) if lot_id else None

    return [with_expiry(found[k]) if k in found else None for k in keys]


async def earning_rules_by_pk(ctx: Context, keys: Sequence[int]) -> list[PointsEarningRule | None]:
    async with ctx.db.read() as session:
        found = await earning.earning_rules_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]
