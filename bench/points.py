"""What the points ledger costs per earning: ``python -m bench.points``.

Two sides, in one process and one run, on the same database and engine:

* **A, service**: ``api.loyalty.earning.earn`` (a pending purchase earning of 10 points for
  one of ``--customers`` customers), each call its own transaction (``Database.transaction``:
  BEGIN IMMEDIATE on SQLite). Everything a real earning does: lock the customer and the
  account, the idempotency check, a lot, an entry, the cached balances, ``evaluate_level``.
* **B, bare conditional UPDATE**: the least an earning could write, on as many other
  customers (so A's accounts stay checkable), each its own transaction (same BEGIN): one
  ``UPDATE points_account SET pending = pending + :p WHERE customer_id = :c AND
  pending + :p <= :cap RETURNING pending``, decided by the returned row.

A and B alternate (AB BA AB ...) after a warm-up; the table gives per side the median and p90
in ms, earnings per second (timed calls ÷ their summed time), **A ÷ B** (median over median)
and the SQL statements of one call (transaction control not counted). The ledger is then
checked (``check_balances``): the benchmark fails if the books do not balance.

```sh
.venv/bin/python -m bench.points                          # temporary SQLite, 500 pairs
.venv/bin/python -m bench.points --iterations 2000
# PostgreSQL: the database is DROPPED and recreated, so its name must contain "bench".
.venv/bin/python -m bench.points --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/qudao_bench
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

from rich.table import Table
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from api.customers.models import Customer
from api.db import Database, count_statements, utcnow
from api.loyalty import earning as loyalty_earning
from api.loyalty import jobs as loyalty_jobs
from api.loyalty.models import PointsAccount
from api.loyalty.rules import PointsPolicy
from bench import data

POINTS = 10
CAP = 2**62  # the guard's bound: never reached, but the UPDATE must evaluate a condition
POLICY = PointsPolicy(pending_days=7, expiry="rolling:365")
BARE_SQL = text(
    "UPDATE points_account SET pending = pending + :p "
    "WHERE customer_id = :c AND pending + :p <= :cap RETURNING pending"
)


@dataclass
class PointsResult:
    service_ms: list[float]
    bare_ms: list[float]
    service_statements: int
    bare_statements: int
    mismatches: int


async def _customers(db: Database, count: int) -> list[int]:
    async with db.transaction() as session:
        now = utcnow()
        rows = [{"name": f"基准顾客 {i:06d}", "created_at": now} for i in range(count)]
        await session.execute(insert(Customer), rows)
        ids = list((await session.scalars(select(Customer.id).order_by(Customer.id))).all())
        # Accounts exist for both sides: B updates them, A would insert them on first use.
        await session.execute(
            insert(PointsAccount),
            [
                {"customer_id": cid, "balance": 0, "pending": 0, "debt": 0, "version": 0}
                for cid in ids
            ],
        )
    return ids


async def measure(url: str, args: argparse.Namespace) -> PointsResult:
    db = Database(url)
    write_engine = db.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    try:
        everyone = await _customers(db, 2 * args.customers)
        customers, others = everyone[: args.customers], everyone[args.customers :]
        serial = iter(range(10**9))
        clock = utcnow()

        async def earn() -> None:
            n = next(serial)
            async with db.transaction() as session:
                await loyalty_earning.earn(
                    session,
                    customers[n % len(customers)],
                    POINTS,
                    source_type="bench",
                    source_id=f"order-{n}",
                    reason="benchmark purchase",
                    actor=None,
                    now=clock + timedelta(microseconds=n),
                    pending=True,
                    policy=POLICY,
                )

        bare_serial = iter(range(10**9))

        async def bare() -> None:
            n = next(bare_serial)
            async with write_engine.begin() as conn:
                row = (
                    await conn.execute(
                        BARE_SQL, {"p": POINTS, "c": others[n % len(others)], "cap": CAP}
                    )
                ).first()
                assert row is not None, "the guard refused: the benchmark is broken"

        # Untimed: count one call's statements on each side.
        with count_statements(db) as service_counter:
            await earn()
        with count_statements(db) as bare_counter:
            await bare()
        for _ in range(args.warmup):
            await earn()
            await bare()
        sides: tuple[Callable[[], Awaitable[None]], ...] = (earn, bare)
        timings: tuple[list[float], list[float]] = ([], [])
        gc.collect()
        for i in range(args.iterations):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                started = time.perf_counter_ns()
                await sides[side]()
                timings[side].append((time.perf_counter_ns() - started) / 1e6)
        async with db.read() as session:
            mismatches = await loyalty_jobs.check_balances(session)
        # B's writes bypass the ledger on purpose: A's customers must all balance.
        mine = set(customers)
        broken = [m for m in mismatches if m.customer_id in mine]
    finally:
        await db.dispose()
    return PointsResult(
        timings[0],
        timings[1],
        len(service_counter.statements),
        len(bare_counter.statements),
        len(broken),
    )


def print_result(result: PointsResult, args: argparse.Namespace, shown: str) -> None:
    from bench.__main__ import console, p90

    a, b = statistics.median(result.service_ms), statistics.median(result.bare_ms)
    table = Table(
        title=f"Points earning on {shown}: service (A) vs bare conditional UPDATE (B), "
        f"{args.iterations} interleaved runs each, one transaction per call",
        title_justify="left",
    )
    table.add_column("side", no_wrap=True)
    for column in ("median ms", "p90 ms", "earns/s", "SQL stmts"):
        table.add_column(column, justify="right")
    for label, samples, statements in (
        ("A loyalty_earning.earn", result.service_ms, result.service_statements),
        ("B UPDATE … RETURNING", result.bare_ms, result.bare_statements),
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
        f"[bold]A ÷ B = {a / b:.2f}x[/] (median latency); B earns/s ÷ A earns/s = {throughput:.2f}x"
    )
    if result.mismatches:
        console.print(f"{result.mismatches} accounts disagree with their ledger!", style="red")
        raise SystemExit(1)
    console.print("check_balances: every account earned through the service matches its ledger.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.points",
        description="Points-earn throughput: the service vs a bare conditional UPDATE.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(data.ENV_URL),
        help="PostgreSQL database to DROP, create and fill (its name must contain 'bench'); "
        f"default ${data.ENV_URL}, else a temporary SQLite file",
    )
    parser.add_argument("--iterations", type=int, default=500, help="timed calls of each side")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls of each side first")
    parser.add_argument(
        "--customers", type=int, default=200, help="customers each side's earnings rotate over"
    )
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    if args.customers < 1:
        parser.error("--customers must be at least 1")
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
