"""Allocation when stock is short (分配): who gets a warehouse's units of one SKU.

An allocation run (``purchaseAllocate``, HQ) for one (HQ warehouse, SKU) reserves what the
warehouse has available for the approved orders still short of it, in priority order:

1. the partner's tier, A before B before C before none (优先供货权 for top partners);
2. then the earliest submission, then the lowest order id.

Each line gets min(what it still lacks, what is left); a line left short is back-ordered and
filled by a later run, after stock arrives. An order whose every line is allocated becomes
ALLOCATED and ships from that warehouse, out of its reservation.

Never more than the warehouse holds: every reservation is the inventory service's guarded
``reserved += q WHERE on_hand - reserved >= q``. Runs for the same (warehouse, SKU) are
serialized (an advisory lock on PostgreSQL; SQLite's writers queue on BEGIN IMMEDIATE), so
the priority order holds under races too. Lock order: the advisory lock, each order's row
(the conditional UPDATE that pins it to the warehouse, which also waits out a concurrent
cancel), the stock row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.db import advisory_lock, update_returning
from api.errors import DomainError
from api.inventory import movements as inventory
from api.inventory.models import StockLevel
from api.outbox.service import enqueue
from api.partners.models import Partner, PartnerTier, Store
from api.purchasing.errors import PurchasingErrorCode as Code
from api.purchasing.errors import require_hq
from api.purchasing.models import PurchaseOrder, PurchaseOrderLine
from api.purchasing.models import PurchaseOrderStatus as Status

SOURCE = "purchase_allocation"
_TIER_RANK = case(
    (Partner.tier == PartnerTier.A, 0),
    (Partner.tier == PartnerTier.B, 1),
    (Partner.tier == PartnerTier.C, 2),
    else_=3,
)


@dataclass(frozen=True, slots=True)
class Allocation:
    order_id: int
    quantity: int  # allocated by this run
    backordered: int  # still short after it


async def allocate(
    session: AsyncSession, principal: Principal, warehouse_id: int, sku_id: int, *, now: datetime
) -> list[Allocation]:
    """One allocation run for (warehouse, SKU); what it allocated, in priority order."""
    require_hq(principal, "Only HQ allocates stock.")
    warehouse = await session.get(Store, warehouse_id)
    if warehouse is None or warehouse.partner_id is not None:
        raise DomainError.one(Code.NOT_FOUND, "No such HQ location.", "warehouseId")
    await advisory_lock(session, f"purchase_allocation:{warehouse_id}:{sku_id}")
    left = await session.scalar(
        select(StockLevel.on_hand - StockLevel.reserved).where(
            StockLevel.store_id == warehouse_id, StockLevel.sku_id == sku_id
        )
    )
    left = left or 0
    short = (
        await session.execute(
            select(
                PurchaseOrderLine.id,
                PurchaseOrderLine.purchase_order_id,
                PurchaseOrderLine.quantity - PurchaseOrderLine.allocated,
            )
            .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
            .join(Partner, Partner.id == PurchaseOrder.partner_id)
            .where(
                PurchaseOrderLine.sku_id == sku_id,
                PurchaseOrderLine.allocated < PurchaseOrderLine.quantity,
                PurchaseOrder.status == Status.APPROVED,
                PurchaseOrder.ship_from_store_id.is_(None)
                | (PurchaseOrder.ship_from_store_id == warehouse_id),
            )
            .order_by(_TIER_RANK, PurchaseOrder.submitted_at, PurchaseOrder.id)
        )
    ).all()
    done: list[Allocation] = []
    for line_id, order_id, lacking in short:
        take = min(lacking, left)
        if take <= 0:
            break
        if not await _pin(session, order_id, warehouse_id, now):
            continue  # cancelled meanwhile
        try:
            await _reserve(session, warehouse_id, sku_id, line_id, take, now)
        except inventory.InsufficientStock as less:
            # Stock left the warehouse since it was read (a count, a dispatch): take what is.
            take = min(take, less.available)
            if take <= 0:
                break
            await _reserve(session, warehouse_id, sku_id, line_id, take, now)
        await session.execute(
            update(PurchaseOrderLine)
            .where(PurchaseOrderLine.id == line_id)
            .values(allocated=PurchaseOrderLine.allocated + take)
        )
        await _mark_allocated(session, order_id, now)
        left -= take
        done.append(Allocation(order_id, take, lacking - take))
    return done


async def _pin(session: AsyncSession, order_id: int, warehouse_id: int, now: datetime) -> bool:
    """Pin the order to this warehouse while it is still APPROVED; False when a cancel won
    its row first (nothing to allocate then)."""
    pinned = await update_returning(
        session,
        update(PurchaseOrder)
        .where(
            PurchaseOrder.id == order_id,
            PurchaseOrder.status == Status.APPROVED,
            PurchaseOrder.ship_from_store_id.is_(None)
            | (PurchaseOrder.ship_from_store_id == warehouse_id),
        )
        .values(ship_from_store_id=warehouse_id, updated_at=now)
        .returning(PurchaseOrder.id),
    )
    return pinned is not None


async def _reserve(
    session: AsyncSession, warehouse_id: int, sku_id: int, line_id: int, take: int, now: datetime
) -> None:
    # Each run's reservation for a line is its own movement: the source names the line and
    # how much it had before (unique per run, since runs for it are serialized).
    before = await session.scalar(
        select(PurchaseOrderLine.allocated).where(PurchaseOrderLine.id == line_id)
    )
    await inventory.reserve(
        session,
        warehouse_id,
        items={sku_id: take},
        source_type=SOURCE,
        source_id=f"{line_id}:{before}",
        reason=f"allocated to purchase order line {line_id}",
        actor="allocation",
        now=now,
    )


async def _mark_allocated(session: AsyncSession, order_id: int, now: datetime) -> None:
    """APPROVED → ALLOCATED once no line of the order is short any more."""
    short = exists().where(
        PurchaseOrderLine.purchase_order_id == order_id,
        PurchaseOrderLine.allocated < PurchaseOrderLine.quantity,
    )
    done = await update_returning(
        session,
        update(PurchaseOrder)
        .where(PurchaseOrder.id == order_id, PurchaseOrder.status == Status.APPROVED, ~short)
        .values(status=Status.ALLOCATED, updated_at=now)
        .returning(PurchaseOrder.partner_id, PurchaseOrder.total_cents),
    )
    if done is not None:
        await enqueue(
            session,
            f"purchase_order.{Status.ALLOCATED.value}",
            f"partner:{done.partner_id}",
            {
                "purchaseOrderId": order_id,
                "status": Status.ALLOCATED.value,
                "total": done.total_cents,
            },
            now=now,
        )


async def allocated_items(session: AsyncSession, order_id: int) -> dict[int, int]:
    """(SKU → units) reserved for an order at its warehouse."""
    rows = await session.execute(
        select(PurchaseOrderLine.sku_id, PurchaseOrderLine.allocated).where(
            PurchaseOrderLine.purchase_order_id == order_id, PurchaseOrderLine.allocated > 0
        )
    )
    return {sku_id: allocated for sku_id, allocated in rows}
