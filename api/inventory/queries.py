"""Reading stock: levels, movements and alerts as a principal may see them, and whether a
pickup store has a SKU (a yes or no for members)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.inventory.models import MovementKind, StockAlert, StockLevel, StockMovement
from api.partners.models import Store, StoreKind, StoreStatus

LEVEL_KEYSET = (StockLevel.id,)
MOVEMENT_KEYSET = (StockMovement.id,)
ALERT_KEYSET = (StockAlert.id,)


@dataclass(slots=True)
class LevelFilter:
    store_ids: Sequence[int] = ()
    sku_ids: Sequence[int] = ()
    below_safety: bool | None = None  # True: available < safety level


@dataclass(slots=True)
class MovementFilter:
    store_ids: Sequence[int] = ()
    sku_ids: Sequence[int] = ()
    kinds: Sequence[MovementKind] = ()


@dataclass(slots=True)
class AlertFilter:
    store_ids: Sequence[int] = ()
    sku_ids: Sequence[int] = ()
    include_resolved: bool = False


def levels_query(principal: Principal, where: LevelFilter | None = None) -> Select[Any]:
    stmt = restrict(select(StockLevel), StockLevel, principal)
    if where is None:
        return stmt
    if where.store_ids:
        stmt = stmt.where(StockLevel.store_id.in_(where.store_ids))
    if where.sku_ids:
        stmt = stmt.where(StockLevel.sku_id.in_(where.sku_ids))
    if where.below_safety is not None:
        low = StockLevel.on_hand - StockLevel.reserved < StockLevel.safety_level
        stmt = stmt.where(low if where.below_safety else ~low)
    return stmt


def movements_query(principal: Principal, where: MovementFilter | None = None) -> Select[Any]:
    stmt = restrict(select(StockMovement), StockMovement, principal)
    if where is None:
        return stmt
    if where.store_ids:
        stmt = stmt.where(StockMovement.store_id.in_(where.store_ids))
    if where.sku_ids:
        stmt = stmt.where(StockMovement.sku_id.in_(where.sku_ids))
    if where.kinds:
        stmt = stmt.where(StockMovement.kind.in_(where.kinds))
    return stmt


def alerts_query(principal: Principal, where: AlertFilter | None = None) -> Select[Any]:
    stmt = restrict(select(StockAlert), StockAlert, principal)
    where = where or AlertFilter()
    if not where.include_resolved:
        stmt = stmt.where(StockAlert.resolved_at.is_(None))
    if where.store_ids:
        stmt = stmt.where(StockAlert.store_id.in_(where.store_ids))
    if where.sku_ids:
        stmt = stmt.where(StockAlert.sku_id.in_(where.sku_ids))
    return stmt


async def levels_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StockLevel]:
    if not ids:
        return {}
    rows = await session.scalars(levels_query(principal).where(StockLevel.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def movements_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StockMovement]:
    if not ids:
        return {}
    rows = await session.scalars(movements_query(principal).where(StockMovement.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def alerts_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, StockAlert]:
    if not ids:
        return {}
    stmt = alerts_query(principal, AlertFilter(include_resolved=True))
    rows = await session.scalars(stmt.where(StockAlert.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def pickup_availability(
    session: AsyncSession, principal: Principal, pairs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], int | None]:
    """Units available of each (store, SKU), for a yes/no "can I pick this up there".

    None where the store is not one to ask about: not an open store offering pickup, or, for
    staff and partners, not one of theirs. Members may ask about any pickup store (that is
    how they choose one); they are only ever told yes or no, never a count.
    """
    if not pairs:
        return {}
    store_ids = {store for store, _ in pairs}
    stores = select(Store.id).where(
        Store.id.in_(store_ids),
        Store.offers_pickup.is_(True),
        Store.kind == StoreKind.STORE,
        Store.status == StoreStatus.OPEN,
    )
    if not principal.is_member:
        stores = restrict(stores, Store, principal)
    askable = set(await session.scalars(stores))
    found: dict[tuple[int, int], int] = {}
    if askable:
        rows = await session.execute(
            select(
                StockLevel.store_id, StockLevel.sku_id, StockLevel.on_hand - StockLevel.reserved
            ).where(
                tuple_(StockLevel.store_id, StockLevel.sku_id).in_(
                    [pair for pair in set(pairs) if pair[0] in askable]
                )
            )
        )
        found = {(store, sku): available for store, sku, available in rows}
    return {pair: (found.get(pair, 0) if pair[0] in askable else None) for pair in pairs}
