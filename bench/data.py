"""Benchmark data: a fresh, migrated database with N partners of K stores each.

Used by the runner, and on its own to build a database to poke at::

    python -m bench.data --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/qudao_bench

Rows go in through SQLAlchemy Core ``insert()`` with lists of dicts (executemany), not
through the services: the services' checks are not what is measured, and 100 000 rows
should take seconds, not minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import api.models  # noqa: F401  (every table on Base.metadata)
from api.db import Database
from api.migrate import upgrade
from api.partners.models import (
    Partner,
    PartnerStatus,
    PartnerTerritory,
    PartnerTier,
    PartnerType,
    Store,
    StoreStatus,
)

ENV_URL = "BENCH_DATABASE_URL"
DEFAULT_PARTNERS = 100
DEFAULT_STORES = 5
CHUNK = 5_000

# Real GB/T 2260 district codes (valid for service.is_valid_region_code), cycled through.
REGION_CODES = (
    "310115",  # 上海 浦东新区
    "310104",  # 上海 徐汇区
    "310106",  # 上海 静安区
    "330102",  # 杭州 上城区
    "330106",  # 杭州 西湖区
    "110105",  # 北京 朝阳区
    "110108",  # 北京 海淀区
    "440305",  # 深圳 南山区
    "440106",  # 广州 天河区
    "510104",  # 成都 锦江区
    "420106",  # 武汉 武昌区
    "320106",  # 南京 鼓楼区
)
_TYPES = tuple(PartnerType)
_TIERS = (PartnerTier.A, PartnerTier.B, PartnerTier.C, None)
_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def guard_database_name(url: str) -> None:
    """Refuse to drop a PostgreSQL database whose name does not say it is for benchmarks."""
    name = make_url(url).database or ""
    if "bench" not in name:
        raise SystemExit(
            f"refusing to drop and recreate PostgreSQL database {name!r}: "
            "its name must contain 'bench' (e.g. qudao_bench)"
        )


async def recreate_pg_database(url: str) -> None:
    """Drop and create the database named in ``url`` (connecting to the `postgres` one); the
    same as tests/conftest.py does for its test database."""
    guard_database_name(url)
    target = make_url(url)
    admin = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        await admin.dispose()


def partner_rows(count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        code = f"BP{i:07d}"
        created = _BASE_TIME + timedelta(minutes=i)
        rows.append(
            {
                "code": code,
                "name": f"基准渠道伙伴 {i:07d}",
                "type": _TYPES[i % len(_TYPES)],
                "status": PartnerStatus.ACTIVE,
                "tier": _TIERS[i % len(_TIERS)],
                "parent_id": None,
                "contact_name": "渠道联系人",
                "contact_phone": "13800138000",
                "contact_email": f"{code.lower()}@partners.example.com",
                "contract_starts_on": date(2026, 1, 1),
                "contract_ends_on": date(2028, 12, 31),
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


def store_rows(partner_ids: Sequence[int], per_partner: int) -> Iterator[dict[str, Any]]:
    n = 0
    for partner_id in partner_ids:
        for _ in range(per_partner):
            yield {
                "partner_id": partner_id,
                "code": f"BS{n:08d}",
                "name": f"基准门店 {n:08d}",
                "region_code": REGION_CODES[n % len(REGION_CODES)],
                "address": f"基准路 {n} 号",
                "offers_pickup": n % 2 == 0,
                "status": StoreStatus.OPEN if n % 10 else StoreStatus.CLOSED,
                "created_at": _BASE_TIME + timedelta(seconds=n),
            }
            n += 1


def _chunks(rows: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> Iterator[list[Any]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _insert(conn: AsyncConnection, partners: int, stores: int) -> None:
    for chunk in _chunks(partner_rows(partners)):
        await conn.execute(insert(Partner), chunk)
    ids = list((await conn.scalars(select(Partner.id).order_by(Partner.id))).all())
    territories = (
        {"partner_id": pid, "region_code": REGION_CODES[i % len(REGION_CODES)]}
        for i, pid in enumerate(ids)
    )
    for chunk in _chunks(territories):
        await conn.execute(insert(PartnerTerritory), chunk)
    for chunk in _chunks(store_rows(ids, stores)):
        await conn.execute(insert(Store), chunk)


async def populate(url: str, partners: int, stores: int) -> None:
    database = Database(url)  # our engine setup: SQLite PRAGMAs, explicit BEGIN
    try:
        async with database.engine.begin() as conn:
            await _insert(conn, partners, stores)
            if not database.is_sqlite:
                # What autovacuum would do soon anyway; without it the first plans are guesses.
                await conn.execute(text("ANALYZE"))
    finally:
        await database.dispose()


def sqlite_url(directory: str) -> str:
    return f"sqlite+aiosqlite:///{directory}/qudao-bench.db"


def create_database(
    url: str, partners: int = DEFAULT_PARTNERS, stores: int = DEFAULT_STORES
) -> None:
    """Make ``url`` a fresh database: (PostgreSQL: drop and create it), migrate, fill.

    Call it outside a running event loop (alembic's env.py runs its own ``asyncio.run``).
    A SQLite URL must name a file that does not exist yet.
    """
    if url.startswith("postgresql"):
        asyncio.run(recreate_pg_database(url))
    elif url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and os.path.exists(path):
            raise SystemExit(f"{path} exists; give a new SQLite file")
    upgrade(url)
    asyncio.run(populate(url, partners, stores))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get(ENV_URL), required=False)
    parser.add_argument("--partners", type=int, default=DEFAULT_PARTNERS)
    parser.add_argument("--stores", type=int, default=DEFAULT_STORES, help="per partner")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error(f"give --database-url or set {ENV_URL}")
    create_database(args.database_url, args.partners, args.stores)
    print(
        f"{args.database_url}: {args.partners} partners, {args.partners * args.stores} stores",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
