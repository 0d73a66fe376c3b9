"""What authentication costs per request: ``python -m bench.auth``.

One small GraphQL query through the ASGI app, in one process and one run:

* **A, authenticated**: ``Authorization: Bearer <token>`` for an HQ admin (every scope), as
  ``issue_access_token`` signs it. The middleware verifies the ES256 signature, checks the
  claims and looks the ``jti`` up in the deny list.
* **B, unauthenticated**: no header; the same middleware hands over the HQ admin principal
  instead of reading it from a token, so the request sees the same data and skips all of that.

A and B alternate (AB BA AB ...) after a warm-up; the table shows medians, p90, **A ÷ B** and
A − B in µs. Both sides go through the same middleware stack, rate limiting included (limit
raised out of reach), against the same database; an untimed first request checks that they
fetch the same rows as the raw SQL below and send the same SQL statements (a token must cost
no query). The micro line times ``decode_access_token`` alone, per call.

Imported by ``python -m bench`` (see ``registry.MODULES``), this module also registers the
query as an ordinary GraphQL-vs-raw-SQL benchmark, ``partners_first_10``: the whole API
layer's cost for the same request, to set the authentication overhead against.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import httpx
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from api import app as app_module
from api.app import create_app
from api.auth.keys import KeyRing
from api.auth.middleware import AuthenticationMiddleware
from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES, render
from api.auth.tokens import TokenSubject, decode_access_token, issue_access_token
from api.cache import InProcessCache
from api.db import Database, count_statements
from api.graphql.ids import decode_id_of
from api.settings import Settings
from bench import data
from bench.registry import Benchmark, register

PARTNERS = 10
QUERY = f"{{ partners(first: {PARTNERS}) {{ nodes {{ id name }} }} }}"
FIRST_PARTNERS_SQL = text("SELECT id, name FROM partner ORDER BY id LIMIT :n")

Rows = list[tuple[int, str]]


async def first_partners_sql(conn: AsyncConnection) -> Rows:
    result = await conn.execute(FIRST_PARTNERS_SQL, {"n": PARTNERS})
    return [(pid, name) for pid, name in result.all()]


def check_first_partners(graphql: dict[str, Any], raw: Rows) -> None:
    nodes = graphql["partners"]["nodes"]
    fetched = [(decode_id_of(node["id"], "Partner"), node["name"]) for node in nodes]
    assert fetched == raw, "GraphQL and raw SQL fetched different partners"
    assert len(raw) == PARTNERS, f"expected {PARTNERS} partners: is the database too small?"


register(
    Benchmark(
        name="partners_first_10",
        description=f"{PARTNERS} partners, id and name (the query of python -m bench.auth)",
        query=QUERY,
        raw=first_partners_sql,
        check=check_first_partners,
    )
)


# --- python -m bench.auth -------------------------------------------------------------------------
# The runner's helpers (statement counter, p90, console) are imported where used: under
# `python -m bench` the runner is the module __main__, and importing bench.__main__ at the top
# of a module it loads would run a second copy of it.


@dataclass
class AuthResult:
    authed_ms: list[float]
    open_ms: list[float]
    authed_statements: int
    open_statements: int
    decode_us: float
    decode_calls: int
    note: str | None


class _PrincipalGiven(AuthenticationMiddleware):
    """Side B: the same middleware, rate-limit hit included, but the principal is handed in
    instead of read from a verified token: the difference is what authentication costs."""

    async def _principal(self, authorization: bytes | None) -> Principal:
        return HQ_ADMIN


HQ_ADMIN = Principal(subject="user:bench", role=Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


def decode_us_per_call(calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of ``calls`` decodes of one valid token, µs per call."""
    keys = KeyRing.generate()
    token = issue_access_token(
        keys,
        issuer="https://bench.test",
        client_id="bench",
        who=TokenSubject("user:bench", Role.HQ_ADMIN),
        scope="partners:read",
        ttl=3600,
    )
    for _ in range(min(calls, 100)):
        decode_access_token(keys, token, issuer="https://bench.test")
    runs = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(calls):
            decode_access_token(keys, token, issuer="https://bench.test")
        runs.append((time.perf_counter_ns() - started) / 1e3 / calls)
    return statistics.median(runs)


async def measure(url: str, args: argparse.Namespace) -> AuthResult:
    note = None
    settings = Settings(
        database_url=url,
        log_json=False,
        jwt_keys_json=KeyRing.generate().to_json(),  # in memory: no ./var/jwks.json written
        rate_limit=10**9,  # counted on both sides, never reached
    )
    db = Database(url)
    authed_app = create_app(settings, db=db, cache=InProcessCache())
    with patch.object(app_module, "AuthenticationMiddleware", _PrincipalGiven):
        open_app = create_app(settings, db=db, cache=InProcessCache())
    token = issue_access_token(
        authed_app.state.keys,
        issuer=settings.issuer,
        client_id="bench",
        who=TokenSubject("user:bench", Role.HQ_ADMIN),
        scope=render(ROLE_SCOPES[Role.HQ_ADMIN]),
        ttl=3600,
    )
    base = "http://bench.test"
    try:
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=authed_app),
                base_url=base,
                headers={"Authorization": f"Bearer {token}"},
            ) as authed,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=open_app), base_url=base) as opened,
        ):

            async def request(http: httpx.AsyncClient) -> dict[str, Any]:
                response = await http.post("/graphql", json={"query": QUERY})
                assert response.status_code == 200, response.text
                body = response.json()
                assert "errors" not in body, body["errors"]
                return body["data"]

            # Untimed: both sides fetch what the raw SQL fetches, with the same statements.
            async with db.engine.connect() as conn:
                raw = await first_partners_sql(conn)
            with count_statements(db) as authed_counter:
                check_first_partners(await request(authed), raw)
            with count_statements(db) as open_counter:
                check_first_partners(await request(opened), raw)

            for _ in range(args.warmup):
                await request(authed)
                await request(opened)
            sides = (authed, opened)
            timings: tuple[list[float], list[float]] = ([], [])
            gc.collect()
            for i in range(args.iterations):
                for side in (0, 1) if i % 2 == 0 else (1, 0):
                    started = time.perf_counter_ns()
                    await request(sides[side])
                    timings[side].append((time.perf_counter_ns() - started) / 1e6)
    finally:
        await db.dispose()
    return AuthResult(
        timings[0],
        timings[1],
        len(authed_counter.statements),
        len(open_counter.statements),
        decode_us_per_call(args.decode_calls),
        args.decode_calls,
        note,
    )


def print_result(result: AuthResult, args: argparse.Namespace) -> None:
    from bench.__main__ import console, p90

    a, b = statistics.median(result.authed_ms), statistics.median(result.open_ms)
    table = Table(
        title=f"Authenticated (A) vs unauthenticated (B), {args.iterations} interleaved runs "
        "each, ms",
        title_justify="left",
    )
    table.add_column("query", no_wrap=True)
    for column in ("A median", "A p90", "B median", "B p90"):
        table.add_column(column, justify="right")
    table.add_column("A ÷ B", justify="right", style="bold")
    table.add_column("A − B µs", justify="right")
    table.add_column("SQL stmts A / B", no_wrap=True, justify="right")
    table.add_row(
        f"partners(first: {PARTNERS}) id name",
        f"{a:.2f}",
        f"{p90(result.authed_ms):.2f}",
        f"{b:.2f}",
        f"{p90(result.open_ms):.2f}",
        f"{a / b:.2f}x",
        f"{(a - b) * 1000:.0f}",
        f"{result.authed_statements} / {result.open_statements}",
    )
    console.print(table)
    console.print(
        f"decode_access_token: {result.decode_us:.1f} µs per call "
        f"(ES256 verify + claims; median of 5 × {result.decode_calls} calls)"
    )
    if result.note:
        console.print(result.note, style="yellow")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth", description="Authentication overhead per GraphQL request."
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(data.ENV_URL),
        help="PostgreSQL database to DROP, create and fill (its name must contain 'bench'); "
        f"default ${data.ENV_URL}, else a temporary SQLite file",
    )
    parser.add_argument("--iterations", type=int, default=200, help="timed runs of each side")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs of each side first")
    parser.add_argument("--partners", type=int, default=data.DEFAULT_PARTNERS)
    parser.add_argument("--stores", type=int, default=data.DEFAULT_STORES, help="per partner")
    parser.add_argument(
        "--decode-calls", type=int, default=2000, help="calls per run of the decode micro line"
    )
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    if args.decode_calls < 1:
        parser.error("--decode-calls must be at least 1")
    if args.partners < PARTNERS:
        parser.error(f"--partners must be at least {PARTNERS}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from bench.__main__ import console

    with tempfile.TemporaryDirectory(prefix="qudao-bench-") as tmp:
        url = args.database_url or data.sqlite_url(tmp)
        started = time.perf_counter()
        data.create_database(url, args.partners, args.stores)
        shown = make_url(url).render_as_string(hide_password=True)
        console.print(
            f"[bold]{shown}[/]: {args.partners} partners × {args.stores} stores, "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        result = asyncio.run(measure(url, args))
    print_result(result, args)


if __name__ == "__main__":
    main()
