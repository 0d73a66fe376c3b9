"""Run the ratio benchmarks: ``python -m bench [--iterations N] [--only NAME] ...``.

Each benchmark times, in one process and one run, its GraphQL query through the ASGI app (A)
and the raw SQL that fetches the same data (B), interleaved (AB BA AB ...) after a warm-up,
and prints median(A) ÷ median(B). Absolute times are printed for context only: the ratio is
the figure to compare between runs and machines.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httpx
import sqlalchemy
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from api.app import create_app
from api.auth.keys import KeyRing
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.tokens import TokenSubject, issue_access_token
from api.cache import InProcessCache
from api.db import Database, count_statements
from api.settings import Settings
from bench import data
from bench.registry import Benchmark, load

# Wide enough for the table when output is piped (rich assumes 80 columns then).
console = Console(width=None if sys.stdout.isatty() else 110)


@dataclass
class Result:
    benchmark: Benchmark
    graphql_ms: list[float]
    raw_ms: list[float]
    graphql_statements: list[str]
    raw_statements: list[str]


def p90(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


class Runner:
    def __init__(self, db: Database, http: httpx.AsyncClient) -> None:
        self.db = db
        self.http = http

    async def graphql(self, bench: Benchmark) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": bench.query, "variables": bench.variables}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def raw(self, bench: Benchmark) -> Any:
        async with self.db.engine.connect() as conn:
            return await bench.raw(conn)

    async def run(self, bench: Benchmark, iterations: int, warmup: int) -> Result:
        # Untimed: check both sides fetch the same data, and count their statements.
        with count_statements(self.db) as graphql_counter:
            graphql_data = await self.graphql(bench)
        with count_statements(self.db) as raw_counter:
            raw_data = await self.raw(bench)
        if bench.check:
            bench.check(graphql_data, raw_data)

        for _ in range(warmup):
            await self.graphql(bench)
            await self.raw(bench)

        sides: tuple[Callable[[], Awaitable[Any]], ...] = (
            lambda: self.graphql(bench),
            lambda: self.raw(bench),
        )
        timings: tuple[list[float], list[float]] = ([], [])
        gc.collect()
        for i in range(iterations):
            # AB BA AB BA ...: drift and "who goes second" cancel out between the two sides.
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for side in order:
                started = time.perf_counter_ns()
                await sides[side]()
                timings[side].append((time.perf_counter_ns() - started) / 1e6)
        return Result(
            bench, timings[0], timings[1], graphql_counter.statements, raw_counter.statements
        )

    async def floor_ms(self, iterations: int) -> float:
        """Median of GET /healthz: what the ASGI app plus httpx cost with no GraphQL, no SQL."""
        for _ in range(5):
            await self.http.get("/healthz")
        samples = []
        for _ in range(iterations):
            started = time.perf_counter_ns()
            await self.http.get("/healthz")
            samples.append((time.perf_counter_ns() - started) / 1e6)
        return statistics.median(samples)

    async def profile(self, bench: Benchmark, requests: int, top: int) -> str:
        for _ in range(5):
            await self.graphql(bench)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            await self.graphql(bench)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


async def run_all(url: str, benchmarks: list[Benchmark], args: argparse.Namespace) -> None:
    settings = Settings(
        database_url=url,
        log_json=False,
        jwt_keys_json=KeyRing.generate().to_json(),  # in memory: no ./var/jwks.json written
        rate_limit=10**9,
    )
    db = Database(url)
    app = create_app(settings, db=db, cache=InProcessCache())
    transport = httpx.ASGITransport(app=app)
    token = issue_access_token(
        app.state.keys,
        issuer=settings.issuer,
        client_id="bench",
        who=TokenSubject("user:bench", Role.HQ_ADMIN),
        scope=" ".join(sorted(ROLE_SCOPES[Role.HQ_ADMIN])),
        ttl=3600,
    )
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench.test", headers=headers
        ) as http:
            runner = Runner(db, http)
            if args.profile:
                for bench in benchmarks:
                    console.rule(f"cProfile: {bench.name}, {args.profile} GraphQL requests")
                    print(await runner.profile(bench, args.profile, args.top))
                return
            floor = await runner.floor_ms(args.iterations)
            results = []
            for bench in benchmarks:
                results.append(await runner.run(bench, args.iterations, args.warmup))
    finally:
        await db.dispose()
    print_results(results, floor, args)


def print_results(results: list[Result], floor: float, args: argparse.Namespace) -> None:
    table = Table(
        title=f"GraphQL (A) vs raw SQL (B), {args.iterations} interleaved runs each, ms",
        title_justify="left",
    )
    table.add_column("benchmark", no_wrap=True)
    table.add_column("A median", justify="right")
    table.add_column("A p90", justify="right")
    table.add_column("B median", justify="right")
    table.add_column("B p90", justify="right")
    table.add_column("A ÷ B", justify="right", style="bold")
    table.add_column("SQL stmts A / B", no_wrap=True, justify="right")
    for r in results:
        a, b = statistics.median(r.graphql_ms), statistics.median(r.raw_ms)
        table.add_row(
            r.benchmark.name,
            f"{a:.2f}",
            f"{p90(r.graphql_ms):.2f}",
            f"{b:.2f}",
            f"{p90(r.raw_ms):.2f}",
            f"{a / b:.1f}x",
            f"{len(r.graphql_statements)} / {len(r.raw_statements)}",
        )
    console.print(table)
    if args.show_sql:
        for r in results:
            for side, statements in (("A", r.graphql_statements), ("B", r.raw_statements)):
                console.rule(f"{r.benchmark.name} {side}: {len(statements)} statement(s)")
                for statement in statements:
                    console.print(statement.strip(), markup=False, highlight=False)
    console.print(
        f"floor: GET /healthz through the same app and client, median {floor:.2f} ms",
        style="dim",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="GraphQL vs raw SQL ratio benchmarks."
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(data.ENV_URL),
        help="PostgreSQL database to DROP, create and fill (its name must contain 'bench'); "
        f"default ${data.ENV_URL}, else a temporary SQLite file",
    )
    parser.add_argument("--iterations", type=int, default=50, help="timed runs of each side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs of each side first")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only NAME (repeat)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--partners", type=int, default=data.DEFAULT_PARTNERS)
    parser.add_argument("--stores", type=int, default=data.DEFAULT_STORES, help="per partner")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        default=0,
        help="instead of timing, cProfile N GraphQL requests of each benchmark",
    )
    parser.add_argument(
        "--show-sql", action="store_true", help="print the statements each side sent"
    )
    parser.add_argument("--top", type=int, default=30, help="rows of the --profile listing")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    registry = load()
    if args.list:
        for bench in registry.values():
            print(f"{bench.name}: {bench.description}")
        return
    unknown = set(args.only or ()) - set(registry)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; see --list")
    benchmarks = [b for b in registry.values() if not args.only or b.name in args.only]

    with tempfile.TemporaryDirectory(prefix="qudao-bench-") as tmp:
        url = args.database_url or data.sqlite_url(tmp)
        started = time.perf_counter()
        data.create_database(url, args.partners, args.stores)
        shown = make_url(url).render_as_string(hide_password=True)
        console.print(
            f"[bold]{shown}[/]: {args.partners} partners × {args.stores} stores, "
            f"built in {time.perf_counter() - started:.1f} s · Python "
            f"{platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
            f"strawberry-graphql {version('strawberry-graphql')}"
        )
        asyncio.run(run_all(url, benchmarks, args))


if __name__ == "__main__":
    main()
