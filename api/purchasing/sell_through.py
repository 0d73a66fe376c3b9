"""Sell-through (进销存) per location and SKU over a period, read off the stock movement log.

For ``[start, end)``:

* opening / closing stock: on hand after the last movement before ``start`` / ``end`` (0
  where there was none);
* purchased: units received (RECEIPT), sold: units sold (SALE), returned: units put back
  (RESTOCK), dispatched: units sent elsewhere (DISPATCH), adjusted: counts and corrections
  (ADJUST), each summed over the period; so closing = opening + purchased − sold + returned
  − dispatched + adjusted;
* turnover = sold ÷ average stock, average stock = (opening + closing) ÷ 2; days of inventory
  = average stock × days in the period ÷ sold. Both rounded half-up to 0.01, null when the
  divisor is 0.

A partner sees its own locations (``restrict`` over the movement log), HQ every one. Three
statements whatever the size: opening levels, closing levels, the period's sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.errors import InputError
from api.inventory.models import MovementKind, StockMovement

MAX_PERIOD = timedelta(days=366)
MAX_ROWS = 1000
_CENT = Decimal("0.01")
Key = tuple[int, int]  # (store id, SKU id)


@dataclass(frozen=True, slots=True)
class SellThrough:
    store_id: int
    sku_id: int
    opening: int
    purchased: int
    sold: int
    returned: int
    dispatched: int
    adjusted: int
    closing: int
    days: Decimal

    @property
    def average_stock(self) -> Decimal:
        return Decimal(self.opening + self.closing) / 2

    @property
    def turnover(self) -> Decimal | None:
        if not self.average_stock:
            return None
        return (Decimal(self.sold) / self.average_stock).quantize(_CENT, ROUND_HALF_UP)

    @property
    def days_of_inventory(self) -> Decimal | None:
        if not self.sold:
            return None
        return (self.average_stock * self.days / self.sold).quantize(_CENT, ROUND_HALF_UP)


def _scoped(principal: Principal, store_ids: Sequence[int], sku_ids: Sequence[int]) -> Select[Any]:
    stmt = restrict(select(StockMovement), StockMovement, principal)
    if store_ids:
        stmt = stmt.where(StockMovement.store_id.in_(store_ids))
    if sku_ids:
        stmt = stmt.where(StockMovement.sku_id.in_(sku_ids))
    return stmt


async def _levels_before(
    session: AsyncSession, scoped: Select[Any], moment: datetime
) -> dict[Key, int]:
    """On hand after each (location, SKU)'s last movement before ``moment``."""
    last = (
        scoped.where(StockMovement.created_at < moment)
        .with_only_columns(func.max(StockMovement.id).label("id"))
        .group_by(StockMovement.store_id, StockMovement.sku_id)
        .subquery()
    )
    rows = await session.execute(
        select(StockMovement.store_id, StockMovement.sku_id, StockMovement.on_hand_after).join(
            last, last.c.id == StockMovement.id
        )
    )
    return {(store, sku): on_hand for store, sku, on_hand in rows}


async def sell_through(
    session: AsyncSession,
    principal: Principal,
    *,
    start: datetime,
    end: datetime,
    store_ids: Sequence[int] = (),
    sku_ids: Sequence[int] = (),
) -> list[SellThrough]:
    """Each (location, SKU) with stock or movement in the period, by location then SKU."""
    if not start < end or end - start > MAX_PERIOD:  # (no date arithmetic that can overflow)
        raise InputError("A period runs forward, at most 366 days.")
    scoped = _scoped(principal, store_ids, sku_ids)
    opening = await _levels_before(session, scoped, start)
    closing = await _levels_before(session, scoped, end)
    sums: dict[Key, dict[MovementKind, int]] = {}
    rows = await session.execute(
        scoped.where(StockMovement.created_at >= start, StockMovement.created_at < end)
        .with_only_columns(
            StockMovement.store_id,
            StockMovement.sku_id,
            StockMovement.kind,
            func.sum(StockMovement.on_hand_delta),
        )
        .group_by(StockMovement.store_id, StockMovement.sku_id, StockMovement.kind)
    )
    for store, sku, kind, delta in rows:
        sums.setdefault((store, sku), {})[kind] = int(delta)
    keys = sorted(set(closing) | set(sums))[:MAX_ROWS]
    days = Decimal((end - start).total_seconds()) / 86_400
    found = []
    for key in keys:
        moved = sums.get(key, {})
        found.append(
            SellThrough(
                store_id=key[0],
                sku_id=key[1],
                opening=opening.get(key, 0),
                purchased=moved.get(MovementKind.RECEIPT, 0),
                sold=-moved.get(MovementKind.SALE, 0),
                returned=moved.get(MovementKind.RESTOCK, 0),
                dispatched=-moved.get(MovementKind.DISPATCH, 0),
                adjusted=moved.get(MovementKind.ADJUST, 0),
                closing=closing.get(key, 0),
                days=days,
            )
        )
    return found
