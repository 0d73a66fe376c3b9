"""What a purchase order's approval costs: ``python -m bench.purchasing``.

Two sides, in one process and one run, on the same database and engine:

* **A, service**: one prepared draft purchase order (one line) taken through
  ``api.purchasing.service.submit`` (credit taken by the guarded UPDATE), ``approve`` and an
  allocation run (``api.purchasing.allocation.allocate``: its units reserved at the
  warehouse), in one transaction (``Database.transaction``: BEGIN IMMEDIATE on SQLite), with
  everything the real steps do: scoped reads, status moves, outbox messages, the movement.
* **B, bare conditional UPDATEs**: the least an approval could write, on another partner's
  credit row and another stock row, in one transaction (same BEGIN): ``UPDATE partner_credit
  SET used_cents = used_cents + :t WHERE partner_id = :p AND used_cents + :t <= limit_cents
  RETURNING`` and ``UPDATE stock_level SET reserved = reserved + :q WHERE store_id = :s AND
  sku_id = :k AND on_hand - reserved >= :q RETURNING``.

A and B alternate (AB BA AB ...) after a warm-up; the table gives per side the median and p90
in ms, approvals per second, **A ÷ B** and the SQL statements of one call. Then the books are
checked: A's credit used equals the total of its approved orders, and the warehouse's
reserved units equal their allocated units.

```sh
.venv/bin/python -m bench.purchasing                   # temporary SQLite, 300 pairs
# PostgreSQL: the database is DROPPED and recreated, so its name must contain "bench".
.venv/bin/python -m bench.purchasing --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/qudao_bench
```
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from rich.table import Table
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from api.auth.principal import Principal, Role
from api.catalog import editing as catalog_editing
from api.catalog import queries as catalog_queries
from api.catalog import rules as catalog_rules
from api.db import Database, count_statements, utcnow
from api.inventory import movements as inventory
from api.inventory.models import StockLevel
from api.partners import service as partners
from api.partners.models import PartnerTier, PartnerType, StoreKind
from api.purchasing import allocation, credit_lines, pricing, service
from api.purchasing.models import PartnerCredit, PurchaseOrder, PurchaseOrderLine
from bench import data

HQ = Principal("bench", Role.HQ_ADMIN)
UNITS = 2
CREDIT_SQL = text(
    "UPDATE partner_credit SET used_cents = used_cents + :t "
    "WHERE partner_id = :p AND used_cents + :t <= limit_cents RETURNING used_cents"
)
STOCK_SQL = text(
    "UPDATE stock_level SET reserved = reserved + :q "
    "WHERE store_id = :s AND sku_id = :k AND on_hand - reserved >= :q RETURNING reserved"
)


@dataclass
class ApprovalResult:
    service_ms: list[float]
    bare_ms: list[float]
    service_statements: int
    bare_statements: int
    books_balance: bool


@dataclass(frozen=True)
class _World:
    buyer: int  # A's partner
    other: int  # B's partner
    warehouse: int  # A's warehouse
    spare: int  # B's warehouse
    sku: int
    drafts: list[int]


async def _world(db: Database, orders: int) -> _World:
    now = utcnow()
    async with db.transaction() as session:
        ids = []
        for code in ("bench-buyer", "bench-other"):
            draft = partners.PartnerDraft(
                code=code, name=code, type=PartnerType.DISTRIBUTOR, tier=PartnerTier.A
            )
            ids.append((await partners.create_partner(session, HQ, draft)).id)
        stores = []
        for code, owner, kind in (
            ("bench-shop", ids[0], StoreKind.STORE),
            ("bench-wh-a", None, StoreKind.WAREHOUSE),
            ("bench-wh-b", None, StoreKind.WAREHOUSE),
        ):
            store = partners.StoreDraft(
                code=code, name=code, region_code="310115", address="a", partner_id=owner, kind=kind
            )
            stores.append((await partners.create_store(session, HQ, store)).id)
        sku_draft = catalog_rules.SkuDraft(
            code="bench-sku", name="s", suggested_retail_price=Decimal(10), cost_price=Decimal(4)
        )
        product = await catalog_editing.create_product(
            session,
            HQ,
            catalog_editing.ProductDraft(code="bench-p", name="p", skus=[sku_draft]),
            now=now,
        )
        sku = (await catalog_queries.skus_of_products(session, [product.id]))[product.id][0].id
        await pricing.create_price_list(
            session,
            HQ,
            pricing.PriceListDraft(
                name="bench",
                valid_from=now - timedelta(days=1),
                tier=PartnerTier.A,
                items=[pricing.ItemDraft(sku, 1000)],
            ),
        )
        for partner in ids:
            await credit_lines.set_credit(
                session, HQ, partner, limit_cents=10**12, payment_terms_days=30, now=now
            )
        for warehouse in stores[1:]:
            await inventory.receive(
                session,
                warehouse,
                items={sku: 10**8},
                source_type="bench",
                source_id="opening",
                reason="opening stock",
                actor=None,
                now=now,
            )
        drafts = []
        for n in range(orders):
            order = service.OrderDraft(
                store_id=stores[0], lines=[(sku, UNITS)], idempotency_key=f"bench-{n}"
            )
            drafts.append(
                (await service.create_order(session, HQ, _for(order, ids[0]), now=now)).order.id
            )
    return _World(ids[0], ids[1], stores[1], stores[2], sku, drafts)


def _for(order: service.OrderDraft, partner_id: int) -> service.OrderDraft:
    return service.OrderDraft(
        store_id=order.store_id,
        lines=order.lines,
        idempotency_key=order.idempotency_key,
        partner_id=partner_id,
    )


async def _books_balance(db: Database, world: _World) -> bool:
    async with db.read() as session:
        used = await session.scalar(
            select(PartnerCredit.used_cents).where(PartnerCredit.partner_id == world.buyer)
        )
        owed = await session.scalar(
            select(func.coalesce(func.sum(PurchaseOrder.total_cents), 0)).where(
                PurchaseOrder.partner_id == world.buyer, PurchaseOrder.submitted_at.is_not(None)
            )
        )
        reserved = await session.scalar(
            select(StockLevel.reserved).where(
                StockLevel.store_id == world.warehouse, StockLevel.sku_id == world.sku
            )
        )
        allocated = await session.scalar(select(func.sum(PurchaseOrderLine.allocated)))
    return used == owed and reserved == allocated


async def measure(url: str, args: argparse.Namespace) -> ApprovalResult:
    db = Database(url)
    write_engine = db.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    try:
        world = await _world(db, args.iterations + args.warmup + 1)
        pending = iter(world.drafts)

        async def approve() -> None:
            order_id = next(pending)
            now = utcnow()
            async with db.transaction() as session:
                await service.submit(session, HQ, order_id, now=now)
                await service.approve(session, HQ, order_id, now=now)
                done = await allocation.allocate(session, HQ, world.warehouse, world.sku, now=now)
                assert [a.order_id for a in done] == [order_id], "allocation is broken"

        async def bare() -> None:
            async with write_engine.begin() as conn:
                credit = await conn.execute(CREDIT_SQL, {"t": UNITS * 1000, "p": world.other})
                assert credit.first() is not None, "the credit guard refused: broken"
                stock = await conn.execute(
                    STOCK_SQL, {"q": UNITS, "s": world.spare, "k": world.sku}
                )
                assert stock.first() is not None, "the stock guard refused: broken"

        with count_statements(db) as service_counter:
            await approve()
        with count_statements(db) as bare_counter:
            await bare()
        for _ in range(args.warmup):
            await approve()
            await bare()
        sides: tuple[Callable[[], Awaitable[None]], ...] = (approve, bare)
        timings: tuple[list[float], list[float]] = ([], [])
        gc.collect()
        for i in range(args.iterations):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                started = time.perf_counter_ns()
                await sides[side]()
                timings[side].append((time.perf_counter_ns() - started) / 1e6)
        balanced = await _books_balance(db, world)
    finally:
        await db.dispose()
    return ApprovalResult(
        timings[0],
        timings[1],
        len(service_counter.statements),
        len(bare_counter.statements),
        balanced,
    )


def print_result(result: ApprovalResult, args: argparse.Namespace, shown: str) -> None:
    from bench.__main__ import console, p90

    a, b = statistics.median(result.service_ms), statistics.median(result.bare_ms)
    table = Table(
        title=f"Purchase-order approval on {shown}: submit + approve + allocate (A) vs bare "
        f"conditional UPDATEs of the credit and stock rows (B), {args.iterations} interleaved "
        "runs each, one transaction per call",
        title_justify="left",
    )
    table.add_column("side", no_wrap=True)
    for column in ("median ms", "p90 ms", "approvals/s", "SQL stmts"):
        table.add_column(column, justify="right")
    for label, samples, statements in (
        ("A submit+approve+allocate", result.service_ms, result.service_statements),
        ("B 2 × UPDATE … RETURNING", result.bare_ms, result.bare_statements),
    ):
        table.add_row(
            label,
            f"{statistics.median(samples):.3f}",
            f"{p90(samples):.3f}",
            f"{len(samples) / (sum(samples) / 1000):.0f}",
            str(statements),
        )
    console.print(table)
    throughput = (sum(result.service_ms) / len(result.service_ms)) / (
        sum(result.bare_ms) / len(result.bare_ms)
    )
    console.print(
        f"[bold]A ÷ B = {a / b:.2f}x[/] (median latency); B approvals/s ÷ A approvals/s = "
        f"{throughput:.2f}x"
    )
    if not result.books_balance:
        console.print("credit used or reserved stock disagree with the orders!", style="red")
        raise SystemExit(1)
    console.print("books: credit used = approved totals; reserved = allocated units.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.purchasing",
        description="Purchase-order approval throughput: the services vs bare UPDATEs.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(data.ENV_URL),
        help="PostgreSQL database to DROP, create and fill (its name must contain 'bench'); "
        f"default ${data.ENV_URL}, else a temporary SQLite file",
    )
    parser.add_argument("--iterations", type=int, default=300, help="timed calls of each side")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls of each side first")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from bench.__main__ import console

    with tempfile.TemporaryDirectory(prefix="qudao-bench-") as tmp:
        url = args.database_url or data.sqlite_url(tmp)
        started = time.perf_counter()
        data.create_database(url, partners=1, stores=1)
        shown = make_url(url).render_as_string(hide_password=True)
        console.print(f"[bold]{shown}[/]: migrated in {time.perf_counter() - started:.1f} s")
        result = asyncio.run(measure(url, args))
    print_result(result, args, shown)


if __name__ == "__main__":
    main()
