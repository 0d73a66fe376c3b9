"""The data layer (api/db.py): transactions, the two concurrency-safe write patterns, times.

Every test that takes ``scratch_db`` runs once per engine (SQLite always, PostgreSQL when
QUDAO_TEST_DATABASE_URL is set), on scratch tables from tests/db_models.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Update, event, func, select, update
from sqlalchemy.exc import StatementError

from api.db import Database, insert_or_get, update_returning
from tests.db_models import Appointment, Payment, ScratchBase, Stock

SHANGHAI = timezone(timedelta(hours=8))


class Boom(Exception):
    """Raised inside a unit of work to make it fail."""


@pytest_asyncio.fixture
async def scratch_db(database: Database) -> AsyncIterator[Database]:
    """The test database with the scratch tables created (and dropped after the test)."""
    async with database.engine.begin() as conn:
        await conn.run_sync(ScratchBase.metadata.create_all)
    try:
        yield database
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(ScratchBase.metadata.drop_all)


@contextmanager
def sql_log(database: Database) -> Iterator[list[str]]:
    """Every statement sent to the driver while the block runs, BEGIN included."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def add_stock(database: Database, *, on_hand: int, reserved: int = 0) -> int:
    async with database.transaction() as session:
        stock = Stock(sku="TEA-250G", on_hand=on_hand, reserved=reserved)
        session.add(stock)
        await session.flush()
        return stock.id


async def stock_levels(database: Database, stock_id: int) -> tuple[int, int]:
    """(on_hand, reserved) as committed, read in a fresh session."""
    async with database.read() as session:
        row = (
            await session.execute(select(Stock.on_hand, Stock.reserved).where(Stock.id == stock_id))
        ).one()
        return row.on_hand, row.reserved


def reserve(stock_id: int, quantity: int) -> Update:
    """Reserve ``quantity`` unless that would reserve more than is on hand."""
    return (
        update(Stock)
        .where(Stock.id == stock_id, Stock.on_hand - Stock.reserved >= quantity)
        .values(reserved=Stock.reserved + quantity)
        .returning(Stock.reserved)
    )


# -- 1. transaction control -------------------------------------------------------------------


async def test_sqlite_reads_begin_deferred_and_units_of_work_begin_immediate(
    scratch_db: Database,
) -> None:
    if not scratch_db.is_sqlite:
        pytest.skip("asyncpg sends BEGIN itself, not as a statement we can observe")
    stock_id = await add_stock(scratch_db, on_hand=5)

    with sql_log(scratch_db) as statements:
        async with scratch_db.read() as session:
            await session.scalar(select(Stock.on_hand).where(Stock.id == stock_id))
    assert statements[0] == "BEGIN", statements
    assert statements[1].startswith("SELECT"), statements

    with sql_log(scratch_db) as statements:
        async with scratch_db.transaction() as session:
            await update_returning(session, reserve(stock_id, 1))
    assert statements[0] == "BEGIN IMMEDIATE", statements
    assert statements[1].startswith("UPDATE"), statements


async def test_a_read_session_keeps_its_snapshot_on_sqlite_not_on_postgresql(
    scratch_db: Database,
) -> None:
    stock_id = await add_stock(scratch_db, on_hand=10)
    on_hand = select(Stock.on_hand).where(Stock.id == stock_id)

    async with scratch_db.read() as reader:
        assert await reader.scalar(on_hand) == 10

        async with scratch_db.transaction() as writer:
            await writer.execute(update(Stock).where(Stock.id == stock_id).values(on_hand=7))

        # The writer has committed. SQLite (WAL) keeps serving the reader the snapshot its
        # transaction started on; PostgreSQL's READ COMMITTED shows each statement the
        # latest commit. Code must not rely on either: re-read inside a unit of work.
        seen_again = await reader.scalar(on_hand)
        assert seen_again == (10 if scratch_db.is_sqlite else 7)

    async with scratch_db.read() as fresh:
        assert await fresh.scalar(on_hand) == 7


async def test_a_unit_of_work_commits_when_it_succeeds(scratch_db: Database) -> None:
    async with scratch_db.transaction() as session:
        session.add_all([Stock(sku="A", on_hand=1), Stock(sku="B", on_hand=2)])

    async with scratch_db.read() as session:
        skus = (await session.scalars(select(Stock.sku).order_by(Stock.sku))).all()
    assert skus == ["A", "B"]


async def test_a_unit_of_work_that_fails_leaves_nothing_half_written(
    scratch_db: Database,
) -> None:
    stock_id = await add_stock(scratch_db, on_hand=10)

    with pytest.raises(Boom):
        async with scratch_db.transaction() as session:
            assert await update_returning(session, reserve(stock_id, 4)) is not None
            session.add(Stock(sku="NEW", on_hand=1))
            await session.flush()  # both writes have reached the database...
            raise Boom  # ...and then the unit of work fails

    assert await stock_levels(scratch_db, stock_id) == (10, 0)
    async with scratch_db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Stock)) == 1


async def test_a_failed_savepoint_rolls_back_only_its_own_writes(scratch_db: Database) -> None:
    stock_id = await add_stock(scratch_db, on_hand=10)

    async with scratch_db.transaction() as session:
        await update_returning(session, reserve(stock_id, 1))
        with pytest.raises(Boom):
            async with session.begin_nested():
                await update_returning(session, reserve(stock_id, 5))
                raise Boom

    assert await stock_levels(scratch_db, stock_id) == (10, 1)


# -- 2. conditional UPDATE ... RETURNING --------------------------------------------------------


async def test_update_returning_makes_the_change_only_when_the_guard_holds(
    scratch_db: Database,
) -> None:
    stock_id = await add_stock(scratch_db, on_hand=5, reserved=2)

    async with scratch_db.transaction() as session:
        row = await update_returning(session, reserve(stock_id, 3))
    assert row is not None
    assert row.reserved == 5
    assert await stock_levels(scratch_db, stock_id) == (5, 5)

    async with scratch_db.transaction() as session:
        assert await update_returning(session, reserve(stock_id, 1)) is None
    assert await stock_levels(scratch_db, stock_id) == (5, 5)


async def test_concurrent_reservations_never_oversell(scratch_db: Database) -> None:
    stock_id = await add_stock(scratch_db, on_hand=10)

    async def reserve_one() -> int | None:
        async with scratch_db.transaction() as session:
            row = await update_returning(session, reserve(stock_id, 1))
            return None if row is None else row.reserved

    # On SQLite the writers queue on BEGIN IMMEDIATE + the busy timeout; none may fail with
    # "database is locked" (gather would re-raise it).
    outcomes = await asyncio.gather(*(reserve_one() for _ in range(50)))

    granted = sorted(r for r in outcomes if r is not None)
    assert granted == list(range(1, 11)), "each success saw its own, serialized, count"
    assert outcomes.count(None) == 40
    assert await stock_levels(scratch_db, stock_id) == (10, 10)


async def test_units_of_work_that_read_before_they_write_queue_instead_of_failing(
    scratch_db: Database,
) -> None:
    # The usual service shape: look first (to answer "not found" or "only 3 left"), then write.
    # With a deferred BEGIN two such SQLite transactions would both hold a read snapshot and
    # the second to write fails at once with "database is locked"; BEGIN IMMEDIATE queues it.
    stock_id = await add_stock(scratch_db, on_hand=10)
    available = select(Stock.on_hand - Stock.reserved).where(Stock.id == stock_id)

    async def look_then_reserve() -> bool:
        async with scratch_db.transaction() as session:
            if await session.scalar(available) == 0:
                return False
            return await update_returning(session, reserve(stock_id, 1)) is not None

    outcomes = await asyncio.gather(*(look_then_reserve() for _ in range(20)))

    assert outcomes.count(True) == 10
    assert await stock_levels(scratch_db, stock_id) == (10, 10)


async def test_a_refused_update_leaves_loaded_objects_alone(scratch_db: Database) -> None:
    if scratch_db.is_sqlite:
        pytest.skip("units of work serialize on SQLite: a loaded object cannot go stale in one")
    stock_id = await add_stock(scratch_db, on_hand=10)

    async with scratch_db.transaction() as session:
        stock = await session.get(Stock, stock_id)
        assert stock is not None and stock.reserved == 0

        async with scratch_db.transaction() as elsewhere:  # READ COMMITTED: this can happen
            assert await update_returning(elsewhere, reserve(stock_id, 10)) is not None

        assert await update_returning(session, reserve(stock_id, 1)) is None
        assert stock.reserved == 0, "nothing changed, yet the loaded object says 1 is reserved"

    assert await stock_levels(scratch_db, stock_id) == (10, 10)


# -- 3. idempotent INSERT ... ON CONFLICT DO NOTHING + read-back --------------------------------


async def test_insert_or_get_creates_once_then_returns_the_existing_row(
    scratch_db: Database,
) -> None:
    async with scratch_db.transaction() as session:
        first, created = await insert_or_get(
            session, Payment, {"idempotency_key": "order-42", "amount": 100}, ["idempotency_key"]
        )
    assert created is True
    assert first.amount == 100

    # A retry with the same key (even with a different body) gets the original back.
    async with scratch_db.transaction() as session:
        again, created = await insert_or_get(
            session, Payment, {"idempotency_key": "order-42", "amount": 999}, ["idempotency_key"]
        )
    assert created is False
    assert again.id == first.id
    assert again.amount == 100

    async with scratch_db.read() as session:
        payments = (await session.execute(select(Payment.id, Payment.amount))).all()
    assert [tuple(p) for p in payments] == [(first.id, 100)]


async def test_concurrent_retries_of_one_request_create_exactly_one_row(
    scratch_db: Database,
) -> None:
    async def submit() -> tuple[int, bool]:
        async with scratch_db.transaction() as session:
            payment, created = await insert_or_get(
                session,
                Payment,
                {"idempotency_key": "order-7", "amount": 250},
                ["idempotency_key"],
            )
            return payment.id, created

    outcomes = await asyncio.gather(*(submit() for _ in range(30)))

    assert [created for _, created in outcomes].count(True) == 1
    assert len({payment_id for payment_id, _ in outcomes}) == 1
    async with scratch_db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Payment)) == 1


# -- 4. UTCDateTime -----------------------------------------------------------------------------


async def test_an_aware_time_comes_back_as_the_same_instant_in_utc(
    scratch_db: Database,
) -> None:
    tea_at_nine_in_shanghai = datetime(2025, 3, 14, 9, 30, 15, 123456, tzinfo=SHANGHAI)
    async with scratch_db.transaction() as session:
        session.add(Appointment(title="tea", starts_at=tea_at_nine_in_shanghai))

    async with scratch_db.read() as session:
        starts_at = await session.scalar(select(Appointment.starts_at))
    assert starts_at == tea_at_nine_in_shanghai  # the same instant...
    assert starts_at.utcoffset() == timedelta(0)  # ...expressed in UTC
    assert starts_at.replace(tzinfo=None) == datetime(2025, 3, 14, 1, 30, 15, 123456)


async def test_times_in_different_zones_compare_and_sort_by_instant(
    scratch_db: Database,
) -> None:
    # Wall clocks say Shanghai (10:00) is later than London (03:30); the instants disagree.
    shanghai = datetime(2025, 6, 1, 10, 0, tzinfo=SHANGHAI)  # 02:00 UTC
    london = datetime(2025, 6, 1, 3, 30, tzinfo=timezone(timedelta(hours=1)))  # 02:30 UTC
    async with scratch_db.transaction() as session:
        session.add_all(
            [
                Appointment(title="london", starts_at=london),
                Appointment(title="shanghai", starts_at=shanghai),
            ]
        )

    async with scratch_db.read() as session:
        in_order = (
            await session.scalars(select(Appointment.title).order_by(Appointment.starts_at))
        ).all()
        before_quarter_past_two_utc = (
            await session.scalars(
                select(Appointment.title).where(
                    Appointment.starts_at < datetime(2025, 6, 1, 2, 15, tzinfo=UTC)
                )
            )
        ).all()
    assert in_order == ["shanghai", "london"]
    assert before_quarter_past_two_utc == ["shanghai"]


async def test_a_naive_time_is_refused(scratch_db: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime") as refused:
        async with scratch_db.transaction() as session:
            session.add(Appointment(title="when?", starts_at=datetime(2025, 3, 14, 9, 30)))
    assert isinstance(refused.value.orig, ValueError)

    async with scratch_db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Appointment)) == 0
        with pytest.raises(StatementError, match="naive datetime"):
            await session.execute(
                select(Appointment).where(Appointment.starts_at < datetime(2025, 1, 1))
            )


# -- 5. ping ------------------------------------------------------------------------------------


async def test_ping_answers_true_when_the_database_is_up(database: Database) -> None:
    assert await database.ping() is True


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+asyncpg://postgres@127.0.0.1:1/nope", id="postgresql-refused"),
        pytest.param("sqlite+aiosqlite:////nonexistent-dir/qudao.db", id="sqlite-no-such-dir"),
    ],
)
async def test_ping_answers_false_when_the_database_is_unreachable(url: str) -> None:
    unreachable = Database(url)
    try:
        async with asyncio.timeout(5):  # fail fast: a health check must not hang
            assert await unreachable.ping() is False
    finally:
        await unreachable.dispose()


async def test_ping_answers_false_quickly_when_the_server_never_answers() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/qudao")
    try:
        async with asyncio.timeout(2):
            assert await silent.ping() is False
    finally:
        await silent.dispose()
        server.close()
        await server.wait_closed()
