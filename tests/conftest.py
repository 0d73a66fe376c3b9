"""Shared fixtures.

Every test that uses ``db`` (or ``client``) runs once per engine: SQLite always, PostgreSQL
too when QUDAO_TEST_DATABASE_URL is set. The schema comes from the migrations (not
create_all), so the tests exercise exactly what production runs.

Without PostgreSQL or Redis their runs are skipped, and the summary says so. CI sets
QUDAO_REQUIRE_SERVICES=1: the races that only PostgreSQL catches are the ones that matter, so
there a missing or unreachable service fails the session before any test runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import httpx
import pytest
import pytest_asyncio
import redis
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import api.models  # noqa: F401  (every table on Base.metadata)
from api.app import create_app
from api.auth.keys import KeyRing
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.tokens import TokenSubject, issue_access_token
from api.cache import InProcessCache
from api.db import Base, Database, count_statements
from api.migrate import upgrade
from api.settings import Settings

REDIS_URL = os.environ.get("QUDAO_TEST_REDIS_URL")
REQUIRE_SERVICES = os.environ.get("QUDAO_REQUIRE_SERVICES") == "1"
SERVICES = {"PostgreSQL": "QUDAO_TEST_DATABASE_URL", "Redis": "QUDAO_TEST_REDIS_URL"}

# CI draws the same property-test examples every run and prints how to reproduce a failure.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if profile := os.environ.get("QUDAO_HYPOTHESIS_PROFILE"):
    hypothesis_settings.load_profile(profile)


def service_missing(service: str, why: str) -> NoReturn:
    """A test that needs ``service`` (a key of SERVICES) and has none: skipped for a developer
    (counted in the summary), a failure when CI requires the services."""
    reason = f"{service} run not included: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (QUDAO_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def _unreachable_services() -> list[str]:
    """What CI requires and cannot reach, one line each (empty when all is well)."""
    problems = [
        f"{name}: {var} is not set" for name, var in SERVICES.items() if not os.environ.get(var)
    ]
    if pg_url := os.environ.get("QUDAO_TEST_DATABASE_URL"):
        try:
            asyncio.run(_ping_pg(pg_url))
        except Exception as error:
            problems.append(f"PostgreSQL: cannot connect to {_safe(pg_url)}: {error!r}")
    if REDIS_URL:
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5).ping()
        except Exception as error:
            problems.append(f"Redis: cannot reach {_safe(REDIS_URL)}: {error!r}")
    return problems


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def _ping_pg(url: str) -> None:
    engine = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=None, connect_args={"timeout": 5}
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def pytest_sessionstart(session: pytest.Session) -> None:
    # Checked once, by the controller (xdist workers inherit its verdict), before any test.
    if REQUIRE_SERVICES and not os.environ.get("PYTEST_XDIST_WORKER"):
        if problems := _unreachable_services():
            pytest.exit(
                "QUDAO_REQUIRE_SERVICES=1 and a required service is missing:\n  "
                + "\n  ".join(problems),
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly which runs did not happen, so a green local run is not mistaken for CI's."""
    skipped = terminalreporter.stats.get("skipped", [])
    for service, var in SERVICES.items():
        count = sum(
            1
            for report in skipped
            if isinstance(report.longrepr, tuple)
            and f"{service} run not included" in str(report.longrepr[2])
        )
        if count:
            terminalreporter.write_line(
                f"qudao: the {service} run did not happen ({count} tests skipped): "
                f"set {var} to include it; CI requires it (QUDAO_REQUIRE_SERVICES=1)",
                yellow=True,
                bold=True,
            )


def _worker_database(url: str | None) -> str | None:
    """Under pytest-xdist each worker empties tables between tests: it gets a database of its
    own, named after the given one (``qudao_ci`` → ``qudao_ci_gw0``)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    target = make_url(url)
    return target.set(database=f"{target.database}_{worker}").render_as_string(hide_password=False)


PG_URL = _worker_database(os.environ.get("QUDAO_TEST_DATABASE_URL"))


async def recreate_pg_database(url: str) -> None:
    """Drop and create the database named in ``url`` (connecting to the `postgres` one)."""
    target = make_url(url)
    admin = create_async_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=None
    )
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgresql":
        if not PG_URL:
            service_missing("PostgreSQL", "set QUDAO_TEST_DATABASE_URL to include it")
        asyncio.run(recreate_pg_database(PG_URL))
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite')}/qudao-test.db"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        log_json=False,
        jwt_keys_json=KeyRing.generate().to_json(),
    )


@pytest.fixture(scope="session")
def issue_token(settings: Settings) -> Any:
    """``issue_token(Role.PARTNER_ADMIN, partner_id=1)``: a signed access token for a
    principal, as the OAuth server would issue it (scopes default to the role's).
    A member: ``issue_token(Role.MEMBER, customer_id=7, subject="customer:7")``."""
    keys = settings.key_ring()

    def issue(
        role: Role,
        *,
        partner_id: int | None = None,
        store_id: int | None = None,
        scopes: set[str] | None = None,
        subject: str | None = None,
        customer_id: int | None = None,
    ) -> str:
        return issue_access_token(
            keys,
            issuer=settings.issuer,
            client_id="tests",
            who=TokenSubject(
                subject or f"test:{role.value}", role, partner_id, store_id, customer_id
            ),
            scope=" ".join(sorted(ROLE_SCOPES[role] if scopes is None else scopes)),
            ttl=600,
        )

    return issue


@pytest_asyncio.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest_asyncio.fixture
async def db(database: Database) -> Database:
    """The test database, emptied before the test (ids restart at 1 on both engines)."""
    from api.segments import jobs

    await jobs.drain()  # a grant job a test started must not write into the next test's data
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with database.transaction() as session:
        if database.is_sqlite:
            for table in tables:
                await session.execute(text(f'DELETE FROM "{table}"'))
        else:
            names = ", ".join(f'"{t}"' for t in tables)
            await session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return database


@pytest_asyncio.fixture
async def app(db: Database, settings: Settings) -> Any:
    return create_app(settings, db=db, cache=InProcessCache())


@pytest_asyncio.fixture
async def client(app: Any, issue_token: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client acting as an HQ admin (every scope)."""
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {issue_token(Role.HQ_ADMIN, subject='user:1')}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://qudao.test", headers=headers
    ) as http:
        yield http


class GraphQLClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def raw(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        return response.json()

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a query that must succeed; return its data."""
        body = await self.raw(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(client)


@pytest.fixture
def count_queries(db: Database) -> Any:
    """``with count_queries() as counter: ...`` then ``counter.count``."""
    return lambda: count_statements(db)
