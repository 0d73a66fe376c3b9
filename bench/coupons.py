"""What exactly-once redemption (核销) costs per coupon: ``python -m bench.coupons``.

Two sides, in one process and one run, on the same database and engine:

* **A, service**: ``api.coupons.redemption.redeem`` by a store's staff, each call its own
  transaction (``Database.transaction``: BEGIN IMMEDIATE on SQLite). Everything a real
  redemption does: the store within the principal's scope, then one guarded ``UPDATE coupon
  ... WHERE code AND status = 'claimed' AND <valid now> AND <usable on this channel at this
  store> RETURNING``. The template is limited to the store's partner, so the store guard runs.
* **B, bare conditional UPDATE**: the least a redemption could write, on as many other
  coupons, each its own transaction (same BEGIN): ``UPDATE coupon SET status = 'redeemed',
  ... WHERE code = :c AND status = 'claimed' AND valid_from <= :now AND valid_until > :now
  RETURNING id``, decided by the returned row.

A and B alternate (AB BA AB ...) after a warm-up; the table gives per side the median and p90
in ms, redemptions per second (timed calls ÷ their summed time), **A ÷ B** (median over
median) and the SQL statements of one call (transaction control not counted). Afterwards
every coupon A redeemed is checked to be redeemed exactly once, at the store, and a second
redemption of one of them must answer ALREADY_REDEEMED: the benchmark fails otherwise.

```sh
.venv/bin/python -m bench.coupons                          # temporary SQLite, 500 pairs
.venv/bin/python -m bench.coupons --iterations 2000
# PostgreSQL: the database is DROPPED and recreated, so its name must contain "bench".
.venv/bin/python -m bench.coupons --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/qudao_bench
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
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.coupons import codes as coupon_codes
from api.coupons import errors as coupon_errors
from api.coupons import redemption as coupon_redemption
from api.coupons.models import (
    Coupon,
    CouponChannel,
    CouponKind,
    CouponOrigin,
    CouponStatus,
    CouponTemplate,
    CouponTemplatePartner,
    TemplateStatus,
)
from api.customers.models import Customer
from api.db import Database, count_statements, utcnow
from api.errors import DomainError
from api.partners.models import Store
from bench import data

BARE_SQL = text(
    "UPDATE coupon SET status = 'redeemed', redeemed_at = :now, redeemed_store_id = :s "
    "WHERE code = :c AND status = 'claimed' AND valid_from <= :now AND valid_until > :now "
    "RETURNING id"
)


@dataclass
class CouponsResult:
    service_ms: list[float]
    bare_ms: list[float]
    service_statements: int
    bare_statements: int
    problems: list[str]


@dataclass
class Setup:
    store_id: int
    staff: Principal
    template_id: int
    service_codes: list[str]
    bare_codes: list[str]


async def _setup(db: Database, coupons_per_side: int, customers: int) -> Setup:
    now = utcnow()
    async with db.transaction() as session:
        store = (await session.execute(select(Store).order_by(Store.id).limit(1))).scalar_one()
        assert store.partner_id is not None, "bench data: the first store has a partner"
        await session.execute(
            insert(Customer),
            [{"name": f"基准顾客 {i:06d}", "created_at": now} for i in range(customers)],
        )
        customer_ids = list((await session.scalars(select(Customer.id))).all())
        template = CouponTemplate(
            name="基准券 满100减20",
            kind=CouponKind.AMOUNT_OFF_THRESHOLD,
            status=TemplateStatus.ACTIVE,
            currency="CNY",
            threshold_amount=Decimal("100.00"),
            discount_amount=Decimal("20.00"),
            claim_channel=CouponChannel.BOTH,
            use_channel=CouponChannel.BOTH,
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=30),
            total_stock=2 * coupons_per_side,
            issued=2 * coupons_per_side,
            per_person_limit=2 * coupons_per_side,
        )
        session.add(template)
        await session.flush()
        session.add(CouponTemplatePartner(template_id=template.id, partner_id=store.partner_id))
        codes = set()
        while len(codes) < 2 * coupons_per_side:
            codes.add(coupon_codes.new_code())
        ordered = sorted(codes)
        await session.execute(
            insert(Coupon),
            [
                {
                    "template_id": template.id,
                    "customer_id": customer_ids[i % len(customer_ids)],
                    "code": code,
                    "status": CouponStatus.CLAIMED,
                    "origin": CouponOrigin.CLAIM,
                    "claim_channel": "online",
                    "valid_from": template.valid_from,
                    "valid_until": template.valid_until,
                    "claimed_at": now,
                }
                for i, code in enumerate(ordered)
            ],
        )
    staff = Principal(
        "staff:bench",
        Role.STORE_STAFF,
        partner_id=store.partner_id,
        store_id=store.id,
        scopes=ROLE_SCOPES[Role.STORE_STAFF],
    )
    return Setup(
        store.id, staff, template.id, ordered[:coupons_per_side], ordered[coupons_per_side:]
    )


async def _verify(db: Database, setup: Setup, redeemed: list[str]) -> list[str]:
    problems = []
    async with db.read() as session:
        rows = (
            await session.execute(
                select(Coupon.status, Coupon.redeemed_store_id, func.count())
                .where(Coupon.code.in_(redeemed))
                .group_by(Coupon.status, Coupon.redeemed_store_id)
            )
        ).all()
    if rows != [(CouponStatus.REDEEMED, setup.store_id, len(redeemed))]:
        problems.append(f"redeemed coupons are not all redeemed once at the store: {rows}")
    try:
        async with db.transaction() as session:
            await coupon_redemption.redeem(session, setup.staff, redeemed[0])
        problems.append("a second redemption of the same code succeeded")
    except DomainError as error:
        if error.problems[0].code is not coupon_errors.CouponErrorCode.ALREADY_REDEEMED:
            problems.append(f"a second redemption failed with {error.problems[0].code.name}")
    return problems


async def measure(url: str, args: argparse.Namespace) -> CouponsResult:
    db = Database(url)
    write_engine = db.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    per_side = args.iterations + args.warmup + 1
    try:
        setup = await _setup(db, per_side, args.customers)
        service_codes, bare_codes = iter(setup.service_codes), iter(setup.bare_codes)
        redeemed: list[str] = []
        serial = iter(range(10**9))

        async def redeem() -> None:
            code = next(service_codes)
            async with db.transaction() as session:
                await coupon_redemption.redeem(
                    session, setup.staff, code, order_ref=f"POS-{next(serial)}", now=utcnow()
                )
            redeemed.append(code)

        async def bare() -> None:
            async with write_engine.begin() as conn:
                row = (
                    await conn.execute(
                        BARE_SQL, {"c": next(bare_codes), "s": setup.store_id, "now": utcnow()}
                    )
                ).first()
                assert row is not None, "the guard refused: the benchmark is broken"

        # Untimed: count one call's statements on each side.
        with count_statements(db) as service_counter:
            await redeem()
        with count_statements(db) as bare_counter:
            await bare()
        for _ in range(args.warmup):
            await redeem()
            await bare()
        sides: tuple[Callable[[], Awaitable[None]], ...] = (redeem, bare)
        timings: tuple[list[float], list[float]] = ([], [])
        gc.collect()
        for i in range(args.iterations):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                started = time.perf_counter_ns()
                await sides[side]()
                timings[side].append((time.perf_counter_ns() - started) / 1e6)
        problems = await _verify(db, setup, redeemed)
    finally:
        await db.dispose()
    return CouponsResult(
        timings[0],
        timings[1],
        len(service_counter.statements),
        len(bare_counter.statements),
        problems,
    )


def print_result(result: CouponsResult, args: argparse.Namespace, shown: str) -> None:
    from bench.__main__ import console, p90

    a, b = statistics.median(result.service_ms), statistics.median(result.bare_ms)
    table = Table(
        title=f"Coupon redemption on {shown}: service (A) vs bare conditional UPDATE (B), "
        f"{args.iterations} interleaved runs each, one transaction per call",
        title_justify="left",
    )
    table.add_column("side", no_wrap=True)
    for column in ("median ms", "p90 ms", "redeems/s", "SQL stmts"):
        table.add_column(column, justify="right")
    for label, samples, statements in (
        ("A coupon_redemption.redeem", result.service_ms, result.service_statements),
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
        f"[bold]A ÷ B = {a / b:.2f}x[/] (median latency); "
        f"B redeems/s ÷ A redeems/s = {throughput:.2f}x"
    )
    if result.problems:
        for problem in result.problems:
            console.print(problem, style="red")
        raise SystemExit(1)
    console.print(
        "check: every coupon A redeemed is redeemed once, at the store; a second try is "
        "ALREADY_REDEEMED."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.coupons",
        description="Coupon redemption throughput: the service vs a bare conditional UPDATE.",
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
        "--customers", type=int, default=200, help="customers the coupons are spread over"
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
