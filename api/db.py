"""Engines, sessions and the two write patterns every domain needs.

SQLite (aiosqlite) is the embedded default and PostgreSQL (asyncpg) the production engine;
everything here behaves the same on both:

* SQLite runs in WAL mode with a busy timeout, and we emit BEGIN ourselves: Python's sqlite3
  does not begin a transaction for SELECTs or SAVEPOINTs, which breaks repeatable reads and
  nested rollbacks. Write units of work begin with ``BEGIN IMMEDIATE`` so two writers queue on
  the busy timeout instead of deadlocking on a read-to-write lock upgrade.
* Concurrency-safe writes are conditional ``UPDATE ... RETURNING`` (decided by the returned
  row, never rowcount) and idempotent ``INSERT ... ON CONFLICT DO NOTHING`` + read-back.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from asyncpg import exceptions as pg_errors  # type: ignore[import-untyped]  # asyncpg ships no stubs
from sqlalchemy import (
    DateTime,
    Dialect,
    Enum,
    MetaData,
    Row,
    Update,
    event,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_errors
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from api import events

log = logging.getLogger("qudao.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 15_000
# Well inside a load balancer's probe timeout: a server that accepts but never answers is down.
PING_TIMEOUT_SECONDS = 1.5


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both engines (SQLite has no time zones: store naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def enum_column(cls: type[enum.Enum]) -> Enum:
    """An enum stored as its short lowercase values in a string column, not a native PG enum:
    adding a value later is then a code change, not a type rewrite on both engines."""
    return Enum(
        cls,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=32,
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def _install_sqlite_transaction_control(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver; we emit it in "begin" below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


# A server going away, refusing, hanging past its timeouts, shutting down or out of
# connections: the client may retry the same request. Anything else from the driver (a
# constraint, a syntax error, a missing table) is a bug or a conflict, not an outage.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError and socket errors)
    TimeoutError,  # connect timeout, a hung server
    sa_errors.TimeoutError,  # no pooled connection came free in time
    pg_errors.PostgresConnectionError,  # 08xxx, ConnectionDoesNotExistError among them
    pg_errors.CannotConnectNowError,  # starting up or shutting down
    pg_errors.AdminShutdownError,
    pg_errors.CrashShutdownError,
    pg_errors.TooManyConnectionsError,
    pg_errors.QueryCanceledError,  # statement_timeout
)
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached right now (so a retry may
    succeed), looking through SQLAlchemy's and the driver's wrapping."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, sa_errors.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, pg_errors.InterfaceError) and "closed" in str(current):
            return True
        if isinstance(current, sqlite3.OperationalError) and any(
            text in str(current).lower() for text in _SQLITE_UNAVAILABLE
        ):
            return True
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return False


class OutageLog:
    """An outage in the log as three kinds of line, not a traceback per failed request: its
    first failure (with that one traceback), a count every ``report_every`` seconds while
    it lasts, and its end."""

    def __init__(self, report_every: float = 10.0) -> None:
        self.report_every = report_every
        self._since: datetime | None = None
        self._failed = 0
        self._reported = 0.0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        """A request failed because the database is unavailable."""
        now = time.monotonic()
        if self._since is None:
            self._since, self._failed, self._reported = utcnow(), 1, now
            log.error("database unavailable: requests fail until it answers", exc_info=error)
            return
        self._failed += 1
        if now - self._reported >= self.report_every:
            self._reported = now
            log.warning(
                "database unavailable: %d requests failed since %s",
                self._failed,
                self._since.isoformat(timespec="seconds"),
            )

    def answered(self) -> None:
        """The database answered: an outage, if one was going on, is over."""
        if self._since is None:
            return
        seconds = (utcnow() - self._since).total_seconds()
        log.warning(
            "database available again after %.1f s: %d requests failed since %s",
            seconds,
            self._failed,
            self._since.isoformat(timespec="seconds"),
        )
        self._since, self._failed = None, 0


class Database:
    """An engine plus the two kinds of session the app uses.

    ``read()`` is a session for queries; ``transaction()`` is one unit of work that commits
    on success and rolls back on any exception. Each unit of work gets its own session:
    an AsyncSession must never be shared by concurrently running resolvers.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
    ) -> None:
        """``connect_timeout`` bounds opening a connection and waiting for a pooled one,
        ``statement_timeout`` one statement, both in seconds (PostgreSQL: a database that
        hangs fails requests fast instead of filling the pool and the event loop; SQLite has
        no server to hang, its waits are bounded by the busy timeout). None keeps the
        drivers' defaults (what CLI jobs use: a rebuild may run for minutes)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.outage = OutageLog()
        # Errors (and so logs) carry the SQL but never its bound values: personal data.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            if connect_timeout is not None:
                # Waiting for a pooled connection is bounded the same.
                kwargs["pool_timeout"] = connect_timeout
            if url.startswith("postgresql+asyncpg"):
                # No JIT: it compiled ~0.5 s into every multi-second analytics query on the
                # growth benchmark and never pays back on the API's short statements.
                server_settings = {"jit": "off"}
                connect_args: dict[str, Any] = {"server_settings": server_settings}
                if connect_timeout is not None:
                    connect_args["timeout"] = connect_timeout
                if statement_timeout is not None:
                    # The server cancels a statement past it; the client gives up a little
                    # later in case the server itself no longer answers.
                    server_settings["statement_timeout"] = str(round(statement_timeout * 1000))
                    connect_args["command_timeout"] = statement_timeout + 1
                kwargs["connect_args"] = connect_args
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _install_sqlite_transaction_control(self.engine)
        write_engine = self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Set by the app: publishes a committed transaction's events (see api/events.py).
        self.publisher: events.Publisher | None = None
        self._write_sessions = async_sessionmaker(write_engine, expire_on_commit=False)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session
        self.outage.answered()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._write_sessions() as session:
            try:
                async with session.begin():
                    yield session
            except BaseException:
                events.discard(session)
                raise
            self.outage.answered()
            published = events.take(session)
            if published and self.publisher is not None:
                try:
                    await self.publisher(published)
                except Exception:
                    # Committed is committed: a subscriber missing a notice must not turn
                    # a done order into a failed request (the outbox keeps what must arrive).
                    log.exception("could not publish %d events", len(published))

    async def ping(self) -> bool:
        """Readiness: True when the database answers in time; never raises."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        self.outage.answered()
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


async def update_returning(session: AsyncSession, stmt: Update) -> Row[Any] | None:
    """Run a conditional ``UPDATE ... WHERE <guard> RETURNING ...``.

    The guard is the invariant (``on_hand - reserved >= :q``); a returned row means it held
    and the change is made, None means it did not and nothing changed. Rowcount is not used:
    it is unreliable across drivers once RETURNING is involved.
    """
    # No Python-side session sync: the ORM would re-apply SET to loaded objects even when the
    # guard refused the update (on PostgreSQL a loaded object can be stale). Use the row.
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return result.first()


async def advisory_lock(session: AsyncSession, key: int | str) -> None:
    """Serialize transactions over something no single row stands for (a parent chain, a
    login's refresh tokens) until this transaction ends. PostgreSQL takes an advisory
    lock; SQLite needs none, its writers being serialized by BEGIN IMMEDIATE."""
    if session.get_bind().dialect.name != "postgresql":
        return
    lock_key = key if isinstance(key, int) else func.hashtext(key)
    await session.execute(select(func.pg_advisory_xact_lock(lock_key)))


def dialect_insert(session: AsyncSession) -> Any:
    """The INSERT construct of the session's engine, PostgreSQL's or SQLite's: both have
    ``ON CONFLICT DO NOTHING``, spelled the same."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def bucketed(values: Sequence[str]) -> list[str]:
    """``values`` padded to the next power of two (repeating the last): an IN list of any
    length then renders one of a dozen statement texts, which the driver's prepared-statement
    cache and the server reuse, instead of a new statement (and cache entry) per length."""
    size = 1
    while size < len(values):
        size *= 2
    return [*values, *[values[-1]] * (size - len(values))] if values else []


M = TypeVar("M", bound=Base)


async def insert_or_get(
    session: AsyncSession,
    model: type[M],
    values: Mapping[str, Any],
    conflict_columns: Sequence[str],
) -> tuple[M, bool]:
    """Insert a row unless one with the same unique key exists; return (row, created).

    The unique constraint over ``conflict_columns`` is what makes a retried operation
    idempotent, even when two retries race: exactly one insert wins, the other reads it back.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict_columns))
        .returning(model)
    )
    created = (await session.execute(stmt)).scalar_one_or_none()
    if created is not None:
        return created, True
    key = {column: values[column] for column in conflict_columns}
    existing = (await session.execute(select(model).filter_by(**key))).scalar_one()
    return existing, False


class StatementCounter:
    """The SQL statements an engine sends, for tests and benchmarks that pin query counts.

    Transaction control is not counted: SQLite needs an explicit BEGIN that PostgreSQL's
    driver does not send as a statement, and the counts must be equal on both engines.
    """

    _CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(self._CONTROL):
            self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def count_statements(database: Database) -> Iterator[StatementCounter]:
    """``with count_statements(db) as counter: ...`` then ``counter.count``."""
    counter = StatementCounter()
    event.listen(database.engine.sync_engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", counter)
