"""What a batch writes for its orders: the SKUs they name (cached for the run), the orders,
their lines and history, and the violations their prices and SKUs record; each one statement
for the whole batch (the violations one each)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog import queries as catalog
from api.catalog.models import SalesChannel
from api.conflicts.models import ViolationKind
from api.conflicts.service import record_violation
from api.db import Base
from api.orders.importer.mapping import CENT, ZERO, note
from api.orders.importer.records import ImportedOrder, Line, RejectReason
from api.orders.models import Fulfillment, Order, OrderEvent, OrderLine, OrderStatus

if TYPE_CHECKING:
    from api.orders.importer.running import ImportOptions

CURRENCY = "CNY"  # marketplaces settle in yuan
NOTE_CHARS = 200
TAKEN_BY_CHARS = 100


class OrderRows:
    """Writes a run's orders, batch by batch, with the SKUs it has looked up so far."""

    def __init__(self, options: ImportOptions, insert: Any, now: datetime) -> None:
        self.options = options
        self.insert = insert
        self.now = now
        self.actor = options.actor[:TAKEN_BY_CHARS]
        # (channel, code) → SKU. Bounded by the catalog, not by the file; unknown codes are
        # not remembered (a file of garbage codes would grow it).
        self.skus: dict[tuple[SalesChannel, str], catalog.PricedSku] = {}

    def sku(self, order: ImportedOrder, line: Line) -> catalog.PricedSku:
        return self.skus[(order.ident[0], line.sku_code)]

    async def check_skus(self, session: AsyncSession, orders: list[ImportedOrder]) -> None:
        """Look up the SKUs the cache lacks (two statements a channel), then reject the lines
        of unknown SKUs or of SKUs priced in another currency."""
        wanted: dict[SalesChannel, set[str]] = {}
        for order in orders:
            channel = order.ident[0]
            for line in order.lines:
                if (channel, line.sku_code) not in self.skus:
                    wanted.setdefault(channel, set()).add(line.sku_code)
        for channel, codes in sorted(wanted.items(), key=lambda item: item[0].value):
            for priced in await catalog.skus_for_order(session, channel, codes=sorted(codes)):
                self.skus[(channel, priced.code)] = priced
        for order in orders:
            for line in order.lines:
                sku = self.skus.get((order.ident[0], line.sku_code))
                if sku is None:
                    problem = (
                        RejectReason.UNKNOWN_SKU,
                        f"{line.where}: no SKU has the code {line.sku_code!r}.",
                    )
                elif sku.currency != CURRENCY:
                    problem = (
                        RejectReason.CURRENCY_MISMATCH,
                        f"{line.where}: SKU {sku.code} is priced in {sku.currency}; marketplace "
                        f"orders are paid in {CURRENCY}.",
                    )
                else:
                    continue
                note(line.row, [problem])

    # --- customers ---

    async def insert_orders(
        self, session: AsyncSession, orders: list[ImportedOrder], customer_ids: dict[str, int]
    ) -> dict[tuple[SalesChannel, str], int]:
        """Insert the orders; (channel, order id) → id of those this batch inserted (one a
        concurrent import inserted first is left out: skipped)."""
        table = table_of(Order)
        partner_id = self.options.partner_id
        rows = []
        for order in orders:
            cost = ZERO
            for line in order.lines:
                sku = self.sku(order, line)
                cost += sku.cost_price * line.quantity
            rows.append(
                {
                    "channel": order.channel,
                    "fulfillment": Fulfillment.DELIVERY,
                    "status": OrderStatus.COMPLETED,
                    "customer_id": customer_ids[order.buyer],
                    "partner_id": partner_id,
                    "store_id": None,
                    "reported_by_partner": partner_id is not None,
                    "taken_by": self.actor,
                    "currency": CURRENCY,
                    "subtotal": order.paid,
                    "coupon_discount": ZERO,
                    "points_used": 0,
                    "points_discount": ZERO,
                    "total": order.paid,
                    "cost_total": cost.quantize(CENT),
                    "refunded_amount": ZERO,
                    "points_earned": 0,
                    "external_id": order.external_id,
                    "placed_at": order.paid_at,
                    "completed_at": order.paid_at,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
            )
        result = await session.execute(
            self.insert(table)
            .on_conflict_do_nothing(index_elements=["channel", "external_id"])
            .returning(table.c.id, table.c.channel, table.c.external_id),
            rows,
        )
        return {(channel, external_id): order_id for order_id, channel, external_id in result}

    async def insert_lines(
        self,
        session: AsyncSession,
        orders: list[ImportedOrder],
        order_ids: dict[tuple[SalesChannel, str], int],
    ) -> None:
        if not orders:
            return
        lines = []
        events = []
        origin = self.options.source or "a marketplace export"
        for order in orders:
            order_id = order_ids[order.ident]
            for number, line in enumerate(order.lines, start=1):
                sku = self.sku(order, line)
                lines.append(
                    {
                        "order_id": order_id,
                        "line_no": number,
                        "sku_id": sku.sku_id,
                        "sku_code": sku.code,
                        "product_id": sku.product_id,
                        "quantity": line.quantity,
                        "unit_price": unit_price(line),
                        "unit_cost": sku.cost_price,
                        "subtotal": line.paid,
                        "discount": ZERO,
                        "total": line.paid,
                        "refunded_quantity": 0,
                    }
                )
            events.append(
                {
                    "order_id": order_id,
                    "status": OrderStatus.COMPLETED,
                    "note": f"Imported from {origin}, line {order.first_line}."[:NOTE_CHARS],
                    "actor": self.actor,
                    "created_at": self.now,
                }
            )
        await session.execute(table_of(OrderLine).insert(), lines)
        await session.execute(table_of(OrderEvent).insert(), events)

    async def violations(
        self,
        session: AsyncSession,
        orders: list[ImportedOrder],
        order_ids: dict[tuple[SalesChannel, str], int],
    ) -> int:
        """Sales outside the channel's price band (乱价) and channel-exclusive SKUs sold on
        the marketplace, recorded as partner-reported orders record them (same kinds and
        source keys as ``api/orders/placing.py``); the order stands: it happened."""
        recorded = 0
        for order in orders:
            channel = order.ident[0]
            for number, line in enumerate(order.lines, start=1):
                sku = self.sku(order, line)
                found: list[tuple[ViolationKind, str, str, Decimal | None, Decimal | None]] = []
                if not sku.sellable_on(channel):
                    where = ", ".join(sorted(c.name for c in sku.exclusive_channels))
                    found.append(
                        (
                            ViolationKind.EXCLUSIVE_SKU,
                            "exclusive",
                            f"{sku.code} is exclusive to {where}; sold on {channel.name}.",
                            None,
                            None,
                        )
                    )
                band = sku.band
                # Compared as totals: the rounded unit price could hide a cent under the floor.
                if band is not None and not (
                    band.floor * line.quantity <= line.paid <= band.ceiling * line.quantity
                ):
                    below = line.paid < band.floor * line.quantity
                    kind = (
                        ViolationKind.PRICE_BELOW_FLOOR
                        if below
                        else ViolationKind.PRICE_ABOVE_CEILING
                    )
                    limit = band.floor if below else band.ceiling
                    unit = unit_price(line)
                    words = "below the floor" if below else "above the ceiling"
                    found.append(
                        (
                            kind,
                            kind.value,
                            f"{sku.code} sold at {unit} on {channel.name}, {words} {limit}.",
                            limit,
                            unit,
                        )
                    )
                if not found:
                    continue
                order_id = order_ids[order.ident]
                for kind, key, detail, expected, actual in found:
                    await record_violation(
                        session,
                        kind=kind,
                        source_key=f"order:{order_id}:line:{number}:{key}",
                        detail=detail,
                        now=self.now,
                        partner_id=self.options.partner_id,
                        channel=channel,
                        order_id=order_id,
                        sku_id=sku.sku_id,
                        expected_amount=expected,
                        actual_amount=actual,
                    )
                    recorded += 1
        return recorded


def unit_price(line: Line) -> Decimal:
    """What a unit was paid, rounded to the cent (the line's total stays exact)."""
    return (line.paid / line.quantity).quantize(CENT, ROUND_HALF_UP)


def bucketed(values: Sequence[str]) -> list[str]:
    """``values`` padded to the next power of two (repeating the last): an IN list of any
    length then renders one of a dozen statement texts, which the driver's prepared-statement
    cache and the server reuse, instead of a new statement (and cache entry) per length."""
    size = 1
    while size < len(values):
        size *= 2
    return [*values, *[values[-1]] * (size - len(values))] if values else []


def order_match(orders: Iterable[ImportedOrder]) -> Any:
    """SQL: the orders with these (channel, marketplace order id) pairs."""
    by_channel: dict[SalesChannel, set[str]] = {}
    for order in orders:
        channel, external_id = order.ident
        by_channel.setdefault(channel, set()).add(external_id)
    return or_(
        *(
            and_(Order.channel == channel, Order.external_id.in_(bucketed(sorted(ids))))
            for channel, ids in sorted(by_channel.items(), key=lambda item: item[0].value)
        )
    )


def table_of(model: type[Base]) -> Table:
    """The model's Table: the batch writes rows through Core (one executemany, no ORM unit
    of work), and a declarative class types its ``__table__`` only as a FromClause."""
    table = model.__table__
    assert isinstance(table, Table)
    return table
