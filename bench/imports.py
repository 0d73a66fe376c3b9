"""Marketplace order import throughput and memory: ``python -m bench.imports``.

Generates a marketplace export of ``--rows`` order lines (streamed to disk: the generator
holds one order at a time), then, in one process, on one freshly migrated database with a
catalog of 200 SKUs (banded on every marketplace) and ``--customers`` customers already on
file (a CRM in use; one in twenty holds the phone of a buyer in the file):

* **B, bare bulk insert**: the least an import could do. The same file read with the ``csv``
  module, an order's rows grouped, and its ``customer_order`` and ``order_line`` rows put in
  with multi-row INSERTs (SQLAlchemy Core executemany, RETURNING the order ids for the lines),
  ``--batch-size`` orders per transaction. No checks, no customers, no events, no violations,
  no idempotency.
* **A, the importer**: ``api.orders.importer.running.import_orders``, what ``qudao import orders``
  runs, with the same batch size: every check, customers found by buyer id or phone or
  created, an event per order, price-band violations, the skip-if-imported check, the
  scratch file of order ids seen.

B runs first; the order tables are then emptied (and the customers B did not need, A's, do
not exist yet) and A imports the file into them, so both write into the same empty order
tables, and the file is in the OS cache for both (it was just written). The table gives per
side the seconds, rows and orders per second and **A ÷ B**: how many times longer the
importer takes than the bare insert (the bare insert's rows/s over the importer's). Then
memory: ``ru_maxrss`` (the process's peak resident size, before and after A) and, in a second
import of the same file into emptied tables, traced by ``tracemalloc``, the peak of Python
allocations: the figure that must not grow with the file (compare ``--rows`` 100000 and
1000000).

```sh
.venv/bin/python -m bench.imports                      # 1 000 000 rows, temporary SQLite
.venv/bin/python -m bench.imports --rows 100000 --no-tracemalloc
# PostgreSQL: the database is DROPPED and recreated, so its name must contain "bench".
.venv/bin/python -m bench.imports --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/qudao_bench_e
```
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from rich.table import Table
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from api.catalog.models import PriceBand, Product, SalesChannel, Sku
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import Database, utcnow
from api.orders.importer import records, running
from api.orders.models import Fulfillment, Order, OrderLine, OrderStatus
from bench import data

DEFAULT_ROWS = 1_000_000
SKUS = 200
MARKETPLACES = ("tmall", "jd", "douyin")
CSV_HEADER = (
    *("marketplace", "order_id", "buyer_id", "phone", "paid_at", "paid"),
    *("sku", "quantity", "line_paid"),
)
_CHINA = timezone(timedelta(hours=8))
_START = datetime(2026, 1, 1, tzinfo=_CHINA)
_CENT = Decimal("0.01")
# Tables the importer writes, children first (emptied between the sides).
_ORDER_TABLES = ("channel_violation", "order_event", "order_line", "customer_order")


@dataclass(frozen=True, slots=True)
class BenchSku:
    code: str
    price: Decimal  # the suggested retail price; the band floor is 80% of it


def bench_skus(count: int = SKUS) -> list[BenchSku]:
    return [
        BenchSku(f"BENCH-{i:04d}", Decimal(39 + (i * 37) % 460).quantize(_CENT))
        for i in range(count)
    ]


def write_orders_file(
    stream: TextIO,
    rows: int,
    skus: Sequence[BenchSku],
    *,
    fmt: str = "csv",
    seed: int = 2026,
    below_floor_every: int = 100,
) -> int:
    """Write ``rows`` order lines as a marketplace export (CSV: a row per line; JSON lines: an
    order per line) and return the number of orders. Orders have 1-4 lines, buyers come back
    (one buyer per five lines on average), half the buyers give a phone (a fifth of those
    masked), and every ``below_floor_every``-th order sells its first line under the floor."""
    rng = random.Random(seed)
    buyers = max(1, rows // 5)
    writer = csv.writer(stream) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_HEADER)
    written = orders = 0
    while written < rows:
        orders += 1
        count = min(rng.choice((1, 1, 2, 2, 3, 4)), rows - written)
        market = MARKETPLACES[orders % len(MARKETPLACES)]
        buyer = rng.randrange(buyers)
        phone = ""
        if buyer % 2 == 0:
            phone = f"139{buyer:08d}"
            if buyer % 10 == 0:
                phone = phone[:3] + "****" + phone[7:]
        paid_at = (_START + timedelta(seconds=orders * 7)).isoformat()
        lines = []
        for number in range(count):
            sku = skus[rng.randrange(len(skus))]
            quantity = rng.choice((1, 1, 1, 2, 3))
            unit = sku.price
            if number == 0 and below_floor_every and orders % below_floor_every == 0:
                unit = (sku.price * Decimal("0.7")).quantize(_CENT)
            lines.append((sku.code, quantity, unit * quantity))
        paid = sum((line[2] for line in lines), Decimal(0))
        order_id = f"{market[0].upper()}{orders:09d}"
        buyer_id = f"{market}_buyer_{buyer:07d}"
        if writer is not None:
            for code, quantity, line_paid in lines:
                writer.writerow(
                    (market, order_id, buyer_id, phone, paid_at, paid, code, quantity, line_paid)
                )
        else:
            record = {
                "marketplace": market,
                "order_id": order_id,
                "buyer_id": buyer_id,
                "phone": phone or None,
                "paid_at": paid_at,
                "paid": str(paid),
                "lines": [
                    {"sku": code, "quantity": quantity, "paid": str(line_paid)}
                    for code, quantity, line_paid in lines
                ],
            }
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += count
    return orders


async def create_catalog(db: Database, skus: Sequence[BenchSku]) -> dict[str, tuple[int, int]]:
    """One product per SKU and a band on every marketplace (floor 80%, ceiling 150% of the
    price); return code → (sku id, product id)."""
    now = utcnow()
    async with db.transaction() as session:
        products = await session.execute(
            insert(Product).returning(Product.id, sort_by_parameter_order=True),
            [
                {"code": f"P-{s.code}", "name": f"基准商品 {s.code}", "created_at": now}
                for s in skus
            ],
        )
        product_ids = list(products.scalars())
        rows = await session.execute(
            insert(Sku).returning(Sku.id, sort_by_parameter_order=True),
            [
                {
                    "product_id": product_id,
                    "code": s.code,
                    "name": s.code,
                    "currency": "CNY",
                    "suggested_retail_price": s.price,
                    "cost_price": (s.price * Decimal("0.45")).quantize(_CENT),
                    "created_at": now,
                }
                for s, product_id in zip(skus, product_ids, strict=True)
            ],
        )
        sku_ids = list(rows.scalars())
        await session.execute(
            insert(PriceBand),
            [
                {
                    "sku_id": sku_id,
                    "channel": SalesChannel(market),
                    "floor": (s.price * Decimal("0.8")).quantize(_CENT),
                    "ceiling": (s.price * Decimal("1.5")).quantize(_CENT),
                    "list_price": None,
                }
                for s, sku_id in zip(skus, sku_ids, strict=True)
                for market in MARKETPLACES
            ],
        )
    return {
        s.code: (sku_id, product_id)
        for s, sku_id, product_id in zip(skus, sku_ids, product_ids, strict=True)
    }


async def create_customers(db: Database, count: int) -> int:
    """The CRM in use: ``count`` customers with a phone identity each; customer n holds
    139<n>, the phone of buyer n in the generated file, when n % 20 == 2 (the importer
    matches those buyers by phone). Returns the highest customer id (the importer's customers
    come after it)."""
    now = utcnow()
    async with db.transaction() as session:
        for start in range(0, count, 5_000):
            size = min(5_000, count - start)
            await session.execute(
                insert(Customer),
                [
                    {"name": f"会员 {n:07d}", "first_channel": "mini_program", "created_at": now}
                    for n in range(start, start + size)
                ],
            )
        ids = list(await session.scalars(select(Customer.id).order_by(Customer.id)))
        for start in range(0, len(ids), 5_000):
            await session.execute(
                insert(CustomerIdentity),
                [
                    {
                        "customer_id": customer_id,
                        "kind": IdentityKind.PHONE,
                        "value": f"139{n:08d}" if n % 20 == 2 else f"137{n:08d}",
                        "created_at": now,
                    }
                    for n, customer_id in enumerate(ids[start : start + 5_000], start=start)
                ],
            )
    if not db.is_sqlite:
        autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            await conn.execute(text("VACUUM ANALYZE"))
    return ids[-1] if ids else 0


async def bare_insert(
    db: Database, path: Path, catalog: dict[str, tuple[int, int]], batch_size: int
) -> int:
    """Side B: the file's orders and lines inserted with no checks; returns rows read."""
    now = utcnow()
    order_table, line_table = Order.__table__, OrderLine.__table__
    # RETURNING the marketplace order id with the id: the rows come back in any order.
    insert_orders = order_table.insert().returning(order_table.c.id, order_table.c.external_id)
    rows_read = 0

    async def flush(batch: list[tuple[list[str], list[list[str]]]]) -> None:
        async with db.transaction() as session:
            ids = await session.execute(
                insert_orders,
                [
                    {
                        "channel": SalesChannel(first[0]),
                        "fulfillment": Fulfillment.DELIVERY,
                        "status": OrderStatus.COMPLETED,
                        "currency": "CNY",
                        "subtotal": Decimal(first[5]),
                        "total": Decimal(first[5]),
                        "cost_total": Decimal(0),
                        "external_id": first[1],
                        "placed_at": datetime.fromisoformat(first[4]),
                        "created_at": now,
                        "updated_at": now,
                    }
                    for first, _ in batch
                ],
            )
            order_ids = {external_id: order_id for order_id, external_id in ids}
            lines = []
            for first, rows in batch:
                order_id = order_ids[first[1]]
                for number, row in enumerate(rows, start=1):
                    sku_id, product_id = catalog[row[6]]
                    paid = Decimal(row[8])
                    lines.append(
                        {
                            "order_id": order_id,
                            "line_no": number,
                            "sku_id": sku_id,
                            "sku_code": row[6],
                            "product_id": product_id,
                            "quantity": int(row[7]),
                            "unit_price": paid,
                            "unit_cost": Decimal(0),
                            "subtotal": paid,
                            "discount": Decimal(0),
                            "total": paid,
                        }
                    )
            await session.execute(line_table.insert(), lines)

    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader)
        batch: list[tuple[list[str], list[list[str]]]] = []
        key: tuple[str, str] | None = None
        for row in reader:
            rows_read += 1
            if (row[0], row[1]) == key:
                batch[-1][1].append(row)
                continue
            if len(batch) >= batch_size:
                await flush(batch)
                batch = []
            key = (row[0], row[1])
            batch.append((row, [row]))
        if batch:
            await flush(batch)
    return rows_read


async def empty_tables(db: Database, customers_before: int) -> None:
    """Empty the order tables and drop the customers an import created (those after
    ``customers_before``), then refresh the planner's statistics."""
    async with db.transaction() as session:
        if db.is_sqlite:
            for table in _ORDER_TABLES:
                await session.execute(text(f'DELETE FROM "{table}"'))
        else:
            names = ", ".join(f'"{t}"' for t in _ORDER_TABLES)
            await session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await session.execute(
            text("DELETE FROM customer_identity WHERE customer_id > :n"), {"n": customers_before}
        )
        await session.execute(text("DELETE FROM customer WHERE id > :n"), {"n": customers_before})
    if not db.is_sqlite:
        autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            await conn.execute(text("VACUUM ANALYZE"))


async def run_import(db: Database, path: Path, batch_size: int) -> running.ImportSummary:
    with path.open("rb") as source:
        return await running.import_orders(
            db,
            source,
            records.ImportFormat.CSV,
            options=running.ImportOptions(batch_size=batch_size, actor="bench"),
            now=utcnow(),
        )


@dataclass
class ImportBench:
    rows: int
    orders: int
    file_bytes: int
    bare_seconds: float
    import_seconds: float
    summary: running.ImportSummary
    rss_before_kib: int
    rss_after_kib: int
    traced_peak_bytes: int | None


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


async def measure(
    url: str, path: Path, args: argparse.Namespace, orders: int, file_bytes: int
) -> ImportBench:
    db = Database(url)
    try:
        catalog = await create_catalog(db, bench_skus())
        customers_before = await create_customers(db, args.customers)
        started = time.perf_counter()
        rows = await bare_insert(db, path, catalog, args.batch_size)
        bare_seconds = time.perf_counter() - started
        await empty_tables(db, customers_before)
        rss_before = _maxrss_kib()
        started = time.perf_counter()
        summary = await run_import(db, path, args.batch_size)
        import_seconds = time.perf_counter() - started
        rss_after = _maxrss_kib()
        peak = None
        if not args.no_tracemalloc:
            await empty_tables(db, customers_before)
            tracemalloc.start()
            await run_import(db, path, args.batch_size)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    finally:
        await db.dispose()
    return ImportBench(
        rows,
        orders,
        file_bytes,
        bare_seconds,
        import_seconds,
        summary,
        rss_before,
        rss_after,
        peak,
    )


def print_result(result: ImportBench, shown: str, batch_size: int) -> None:
    from bench.__main__ import console

    summary = result.summary
    table = Table(
        title=f"Import of {result.rows:,} rows ({result.orders:,} orders, "
        f"{result.file_bytes / 2**20:.0f} MiB of CSV) on {shown}, {batch_size} orders a batch",
        title_justify="left",
    )
    table.add_column("side", no_wrap=True)
    for column in ("seconds", "rows/s", "orders/s"):
        table.add_column(column, justify="right")
    for label, seconds in (
        ("A importer (qudao import orders)", result.import_seconds),
        ("B bare multi-row INSERT", result.bare_seconds),
    ):
        table.add_row(
            label,
            f"{seconds:.1f}",
            f"{result.rows / seconds:,.0f}",
            f"{result.orders / seconds:,.0f}",
        )
    console.print(table)
    console.print(
        f"[bold]A ÷ B = {result.import_seconds / result.bare_seconds:.2f}x[/] (the importer's "
        "time over the bare insert's: bare rows/s ÷ importer rows/s)"
    )
    console.print(
        f"importer: {summary.orders_imported:,} orders imported, {summary.rows_rejected:,} rows "
        f"rejected, {summary.customers_created:,} customers created, {summary.violations:,} "
        "violations recorded"
    )
    console.print(
        f"ru_maxrss: {result.rss_before_kib / 1024:.0f} MiB before the import, "
        f"{result.rss_after_kib / 1024:.0f} MiB after (process peak)"
    )
    if result.traced_peak_bytes is not None:
        console.print(
            f"tracemalloc peak during a second import of the file: "
            f"{result.traced_peak_bytes / 2**20:.1f} MiB "
            f"({result.traced_peak_bytes / result.file_bytes:.1%} of the file's size)"
        )
    if summary.orders_imported != result.orders or summary.rows_rejected:
        console.print("The importer did not import every generated order!", style="red")
        raise SystemExit(1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.imports",
        description="Marketplace import throughput vs a bare bulk insert, and peak memory.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(data.ENV_URL),
        help="PostgreSQL database to DROP, create and fill (its name must contain 'bench'); "
        f"default ${data.ENV_URL}, else a temporary SQLite file",
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="order lines to generate")
    parser.add_argument(
        "--batch-size", type=int, default=running.DEFAULT_BATCH_SIZE, help="orders a batch"
    )
    parser.add_argument(
        "--customers", type=int, default=100_000, help="customers on file before the import"
    )
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the traced second import"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if not 1 <= args.batch_size <= running.MAX_BATCH_SIZE:
        parser.error(f"--batch-size is 1 to {running.MAX_BATCH_SIZE}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from bench.__main__ import console

    with tempfile.TemporaryDirectory(prefix="qudao-bench-") as tmp:
        url = args.database_url or data.sqlite_url(tmp)
        data.create_database(url, partners=1, stores=1)
        shown = make_url(url).render_as_string(hide_password=True)
        path = Path(tmp) / "orders.csv"
        started = time.perf_counter()
        with path.open("w", newline="", encoding="utf-8") as stream:
            orders = write_orders_file(stream, args.rows, bench_skus())
        console.print(
            f"[bold]{shown}[/]: wrote {args.rows:,} rows ({orders:,} orders) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        result = asyncio.run(measure(url, path, args, orders, path.stat().st_size))
    print_result(result, shown, args.batch_size)


if __name__ == "__main__":
    main()
