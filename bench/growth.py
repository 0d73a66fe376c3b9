"""Segments and the funnel against hand-written SQL: ``python -m bench.growth --url ...``.

On the generated data of ``bench.growth_data`` (1,000,000 customers and 5,000,000 orders by
default, generated on the first run and reused after), in one process and one run, for each
case:

* **A, ours**: what the API runs. A segment: ``api.segments.parser.parse`` of the query
  text, ``api.segments.compiler.count_statement`` and its execution. The funnel:
  ``api.growth.funnel.conversion_funnel`` for an HQ marketer (its one statement on
  PostgreSQL, and the result built from it).
* **B, hand-written**: one ``text()`` statement a person would write for the same numbers,
  with the same values bound as parameters.

Both sides run in a session of the same engine (asyncpg). Before timing, each side runs once
and the two must agree (the same count; the same counts and medians per funnel step), or the
benchmark stops. Then ``--warmup`` untimed pairs and ``--runs`` timed ones, interleaved
(AB BA AB ...), so both sides see the same caches and the same machine. The table gives the
median of each side and **A ÷ B**; ``--explain`` prints both plans (EXPLAIN, not ANALYZE).

Relative dates (``-90d``) and the funnel's window are taken from the data's fixed "now"
(``bench.growth_data.ANCHOR``), so the numbers do not drift as the calendar does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from rich.table import Table
from sqlalchemy import Select, TextClause, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from api.auth.principal import Principal, Role
from api.db import Database
from api.growth.funnel import (
    FunnelGroupBy,
    FunnelQuery,
    FunnelResult,
    conversion_funnel,
    funnel_statement,
)
from api.growth.models import FUNNEL_STEPS, TouchpointStep
from api.orders.models import COUNTED_STATUSES
from api.segments.compiler import count_statement
from api.segments.parser import parse
from bench import growth_data
from bench.growth_data import ANCHOR, console

MARKETER = Principal(subject="user:bench", role=Role.MARKETER)
COUNTED = [status.value for status in COUNTED_STATUSES]
HOURS = Decimal("0.01")

Side = Callable[[AsyncSession], Awaitable[Any]]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    ours: Side
    hand: Side
    # Turns each side's result into the same comparable shape; they must be equal.
    same: Callable[[Any, Any], None]
    # For --explain: our statement, and the hand-written SQL with its parameters.
    ours_statement: Callable[[], Select[Any]]
    hand_sql: str
    hand_params: dict[str, Any]


# --- segments ---------------------------------------------------------------------------------


def segment_case(
    name: str, query: str, hand_sql: str, hand_params: dict[str, Any], description: str
) -> Case:
    async def ours(session: AsyncSession) -> int:
        return int(await session.scalar(count_statement(parse(query), now=ANCHOR)))

    async def hand(session: AsyncSession) -> int:
        return int(await session.scalar(text(hand_sql), hand_params))

    def same(a: int, b: int) -> None:
        assert a == b, f"{name}: the segment counts {a:,}, the hand-written SQL {b:,}"

    return Case(
        name,
        f"{description}: {query}",
        ours,
        hand,
        same,
        lambda: count_statement(parse(query), now=ANCHOR),
        hand_sql,
        hand_params,
    )


SEGMENT_3 = segment_case(
    "segment, 3 clauses",
    "orders_count >= 3 AND last_order_at > -90d AND level IN ('gold', 'platinum')",
    """
    SELECT count(*)
    FROM customer c
    JOIN customer_metrics m ON m.customer_id = c.id
    JOIN member_level l ON l.id = c.level_id
    WHERE c.status = 'active'
      AND m.orders_count >= :orders
      AND m.last_order_at > :since
      AND l.code = ANY(:levels)
    """,
    {"orders": 3, "since": ANCHOR - timedelta(days=90), "levels": ["gold", "platinum"]},
    "count",
)
SEGMENT_4 = segment_case(
    "segment, 4 clauses + NOT tag",
    "orders_count >= 3 AND last_order_at > -30d AND level IN ('gold', 'platinum') "
    "AND NOT tag = 'vip_blacklist'",
    """
    SELECT count(*)
    FROM customer c
    JOIN customer_metrics m ON m.customer_id = c.id
    JOIN member_level l ON l.id = c.level_id
    WHERE c.status = 'active'
      AND m.orders_count >= :orders
      AND m.last_order_at > :since
      AND l.code = ANY(:levels)
      AND NOT EXISTS (
          SELECT 1 FROM customer_tag t WHERE t.customer_id = c.id AND t.tag = :tag)
    """,
    {
        "orders": 3,
        "since": ANCHOR - timedelta(days=30),
        "levels": ["gold", "platinum"],
        "tag": "vip_blacklist",
    },
    "the issue's example, count",
)
# The hand-written side finds the SKU's id first: order_line is indexed by sku_id, not code.
SEGMENT_BOUGHT = segment_case(
    "segment, bought SKU within 90d",
    "bought_sku = 'GSKU-0042' WITHIN -90d AND orders_count >= 2",
    """
    SELECT count(*)
    FROM customer c
    JOIN customer_metrics m ON m.customer_id = c.id
    WHERE c.status = 'active'
      AND m.orders_count >= :orders
      AND EXISTS (
          SELECT 1
          FROM order_line l JOIN customer_order o ON o.id = l.order_id
          WHERE l.sku_id = (SELECT id FROM sku WHERE code = :sku)
            AND l.refunded_quantity < l.quantity
            AND o.customer_id = c.id
            AND o.status = ANY(:counted)
            AND o.placed_at >= :since)
    """,
    {
        "orders": 2,
        "sku": "GSKU-0042",
        "counted": COUNTED,
        "since": ANCHOR - timedelta(days=90),
    },
    "a purchase condition, count",
)


# --- the funnel -------------------------------------------------------------------------------


def hand_funnel_sql(steps: Sequence[TouchpointStep], *, by_month: bool, channel: bool) -> str:
    """The funnel as a person writes it: the cohort's entry times, then per step a LATERAL
    probe for the first touch at or after the previous step, and the aggregates."""
    laterals, counts, medians = [], ["count(*) AS reached_0"], []
    previous = "e.t0"
    for i in range(1, len(steps)):
        laterals.append(
            f"LEFT JOIN LATERAL (SELECT min(occurred_at) AS t FROM touchpoint "
            f"WHERE customer_id = e.customer_id AND step = :s{i} "
            f"AND occurred_at >= {previous}) s{i} ON true"
        )
        counts.append(f"count(s{i}.t) AS reached_{i}")
        medians.append(
            f"percentile_cont(0.5) WITHIN GROUP "
            f"(ORDER BY extract(epoch FROM s{i}.t - {previous})::float8) AS median_{i}"
        )
        previous = f"s{i}.t"
    source = " AND source_channel = :channel" if channel else ""
    # Cohort months are business months in China time (UTC+8), like the funnel's and reports'.
    group = (
        "date_trunc('month', (e.t0 AT TIME ZONE 'UTC') + interval '8 hours')::date"
        if by_month
        else "NULL"
    )
    tail = " GROUP BY 1 ORDER BY 1" if by_month else ""
    newline = "\n"
    return f"""
    WITH e AS (
        SELECT customer_id, min(occurred_at) AS t0
        FROM touchpoint
        WHERE step = :s0 AND occurred_at >= :start AND occurred_at < :end{source}
        GROUP BY customer_id
    )
    SELECT {group} AS grp, {", ".join(counts)}, {", ".join(medians)}
    FROM e
    {newline.join(laterals)}
    WHERE NOT EXISTS (
        SELECT 1 FROM touchpoint b
        WHERE b.customer_id = e.customer_id AND b.step = :s0 AND b.occurred_at < :start{source})
    {tail}
    """


def funnel_case(name: str, query: FunnelQuery, description: str) -> Case:
    by_month = query.group_by is FunnelGroupBy.COHORT_MONTH
    assert query.group_by in (None, FunnelGroupBy.COHORT_MONTH)
    assert query.partner_id is None and query.store_id is None and query.campaign_id is None
    sql = hand_funnel_sql(query.steps, by_month=by_month, channel=query.source_channel is not None)
    params: dict[str, Any] = {"start": query.start, "end": query.end}
    params |= {f"s{i}": step.value for i, step in enumerate(query.steps)}
    if query.source_channel is not None:
        params["channel"] = query.source_channel
    n = len(query.steps)

    async def ours(session: AsyncSession) -> FunnelResult:
        return await conversion_funnel(session, MARKETER, query)

    async def hand(session: AsyncSession) -> list[Any]:
        return list((await session.execute(text(sql), params)).all())

    def same(result: FunnelResult, rows: list[Any]) -> None:
        # Per group: the customers at each step, and the median seconds between steps.
        hand_groups = {
            row.grp: (
                [getattr(row, f"reached_{i}") for i in range(n)],
                [getattr(row, f"median_{i}") for i in range(1, n)],
            )
            for row in rows
            if row.reached_0
        }
        ours_groups = {
            group.key: [step.customers for step in group.steps] for group in result.groups
        }
        assert ours_groups == {k: v[0] for k, v in hand_groups.items()}, (
            f"{name}: the funnel counts {ours_groups}, the hand-written SQL "
            f"{ {k: v[0] for k, v in hand_groups.items()} }"
        )
        for group in result.groups:
            for step, seconds in zip(group.steps[1:], hand_groups[group.key][1], strict=True):
                # Hours to the cent, rounded half up from the float's shortest repr.
                expected = (
                    None
                    if seconds is None
                    else (Decimal(repr(seconds)) / 3600).quantize(HOURS, ROUND_HALF_UP)
                )
                assert step.median_hours_from_previous == expected, (
                    f"{name}: median hours to {step.step.value}: "
                    f"{step.median_hours_from_previous} vs {expected}"
                )

    return Case(
        name,
        description,
        ours,
        hand,
        same,
        lambda: funnel_statement(query, dialect="postgresql"),
        sql,
        params,
    )


YEAR = FunnelQuery(start=ANCHOR - timedelta(days=365), end=ANCHOR, steps=FUNNEL_STEPS)
FUNNEL = funnel_case(
    "funnel, 7 steps, 12 months",
    YEAR,
    "every step from marketplace_purchase to repurchase, customers entering in the last year",
)
FUNNEL_BY_MONTH = funnel_case(
    "funnel, tmall, by cohort month",
    FunnelQuery(
        start=YEAR.start,
        end=YEAR.end,
        steps=FUNNEL_STEPS,
        source_channel="tmall",
        group_by=FunnelGroupBy.COHORT_MONTH,
    ),
    "the same funnel for source channel tmall, one group per month of entry",
)
CASES = (SEGMENT_3, FUNNEL, SEGMENT_4, SEGMENT_BOUGHT, FUNNEL_BY_MONTH)
# The pair the issue asks for; the others (--all) show the shapes around them.
REQUIRED = (SEGMENT_3.name, FUNNEL.name)


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Measured:
    case: Case
    ours_ms: list[float]
    hand_ms: list[float]
    answer: str


async def timed(db: Database, side: Side) -> tuple[float, Any]:
    async with db.read() as session:
        started = time.perf_counter_ns()
        result = await side(session)
        return (time.perf_counter_ns() - started) / 1e6, result


def describe(result: Any) -> str:
    if isinstance(result, int):
        return f"{result:,} customers"
    groups = result.groups
    if len(groups) == 1:
        return " → ".join(f"{step.customers:,}" for step in groups[0].steps)
    return f"{len(groups)} groups, {sum(g.steps[0].customers for g in groups):,} entered"


async def measure(db: Database, case: Case, runs: int, warmup: int) -> Measured:
    _, ours = await timed(db, case.ours)
    _, hand = await timed(db, case.hand)
    case.same(ours, hand)
    for _ in range(warmup):
        await timed(db, case.ours)
        await timed(db, case.hand)
    samples: tuple[list[float], list[float]] = ([], [])
    sides = (case.ours, case.hand)
    for i in range(runs):
        # AB BA AB ...: drift and "who goes second" cancel out between the sides.
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            ms, _ = await timed(db, sides[side])
            samples[side].append(ms)
    return Measured(case, samples[0], samples[1], describe(ours))


class _Explain(Executable, ClauseElement):
    """``EXPLAIN (options) <statement>``, executed like the statement itself: its parameters
    are bound (and processed: enums, aware datetimes) exactly as when it runs."""

    inherit_cache = False

    def __init__(self, statement: Select[Any] | TextClause, options: str) -> None:
        self.statement = statement
        self.options = options


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return f"EXPLAIN ({element.options}) {compiler.process(element.statement, **kw)}"


def _nodes(plan: dict[str, Any]) -> list[str]:
    """The plan's nodes, depth first: type, and the relation or index it reads."""
    name = plan["Node Type"]
    if "Index Name" in plan:
        name += f" {plan['Index Name']}"
    elif "Relation Name" in plan:
        name += f" {plan['Relation Name']}"
    if plan.get("Join Type") and plan["Join Type"] != "Inner":
        name += f" ({plan['Join Type']})"
    out = [name]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def explain(db: Database, statement: Select[Any] | TextClause, full: bool) -> str:
    async with db.read() as session:
        if full:
            rows = await session.execute(_Explain(statement, "COSTS true"))
            return "\n" + "\n".join(row[0] for row in rows)
        (plan,) = (await session.execute(_Explain(statement, "FORMAT JSON"))).one()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        top = plan[0]["Plan"]
        return f"cost {top['Total Cost']:,.0f}: " + " · ".join(_nodes(top))


def print_results(results: list[Measured], runs: int) -> None:
    table = Table(
        title=f"ours (A) vs hand-written SQL (B), {runs} interleaved runs each, median ms",
        title_justify="left",
    )
    table.add_column("case", no_wrap=True)
    table.add_column("A ours", justify="right")
    table.add_column("B hand", justify="right")
    table.add_column("A ÷ B", justify="right", style="bold")
    table.add_column("A min–max", justify="right")
    table.add_column("B min–max", justify="right")
    for m in results:
        a, b = statistics.median(m.ours_ms), statistics.median(m.hand_ms)
        table.add_row(
            m.case.name,
            f"{a:,.1f}",
            f"{b:,.1f}",
            f"{a / b:.2f}x",
            f"{min(m.ours_ms):,.0f}–{max(m.ours_ms):,.0f}",
            f"{min(m.hand_ms):,.0f}–{max(m.hand_ms):,.0f}",
        )
    console.print(table)
    for m in results:
        console.print(f"{m.case.name}: {m.answer} (both sides)", highlight=False)


async def run(args: argparse.Namespace, cases: Sequence[Case]) -> None:
    marker = await growth_data.ensure_data(args.url, args.customers, args.orders, args.regenerate)
    size = await growth_data.database_size(args.url)
    shown = make_url(args.url).render_as_string(hide_password=True)
    console.print(
        f"[bold]{shown}[/]: {marker.customers:,} customers, {marker.orders:,} orders, "
        f"{size / 2**30:.2f} GiB (generated in {marker.seconds:.0f} s); data's now = "
        f"{ANCHOR:%Y-%m-%d}"
    )
    db = Database(args.url)
    results = []
    try:
        for case in cases:
            console.print(f"[dim]{case.name}: {case.description}[/]")
            results.append(await measure(db, case, args.runs, args.warmup))
        print_results(results, args.runs)
        if args.explain or args.plans:
            for case in cases:
                console.rule(case.name)
                hand = text(case.hand_sql).bindparams(**case.hand_params)
                for label, statement in (("A ours", case.ours_statement()), ("B hand", hand)):
                    plan = await explain(db, statement, full=args.explain)
                    console.print(f"[bold]{label}[/] {plan}", highlight=False)
    finally:
        await db.dispose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.growth",
        description="Segment counts and the funnel vs hand-written SQL, on generated data.",
    )
    growth_data.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each side first")
    parser.add_argument(
        "--all", action="store_true", help="also the extra segment and funnel shapes"
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only the case NAME (repeat)"
    )
    parser.add_argument("--plans", action="store_true", help="one-line plan summaries")
    parser.add_argument("--explain", action="store_true", help="the full EXPLAIN of both sides")
    args = parser.parse_args(argv)
    growth_data.check_arguments(parser, args)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        unknown = set(args.only) - {c.name for c in CASES}
        if unknown:
            raise SystemExit(f"unknown case(s) {sorted(unknown)}; one of {[c.name for c in CASES]}")
        cases = [c for c in CASES if c.name in args.only]
    else:
        cases = [c for c in CASES if args.all or c.name in REQUIRED]
    asyncio.run(run(args, cases))


if __name__ == "__main__":
    main()
