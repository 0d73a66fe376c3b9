"""Alembic environment: async, one chain for SQLite and PostgreSQL (batch mode on SQLite)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import api.models  # noqa: F401  (every table on Base.metadata)
from api.db import Base, Database
from api.settings import Settings

target_metadata = Base.metadata


def _url() -> str:
    return context.config.attributes.get("database_url") or Settings.from_env().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _foreign_keys_off(connection: Connection) -> None:
    """SQLite's recipe for a batch migration (a table rebuilt: copied, dropped, renamed): with
    foreign keys on, dropping a table other rows refer to fails or cascades to them. The pragma
    is ignored inside a transaction, so it is set before the first statement begins one; a
    migration that rebuilds a table runs ``PRAGMA foreign_key_check`` before it commits."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA foreign_keys=OFF")
    finally:
        cursor.close()


async def _run_async() -> None:
    # Our Database gives SQLite its PRAGMAs (foreign keys) and real transactional DDL.
    database = Database(_url())
    try:
        async with database.engine.connect() as connection:
            if database.is_sqlite:
                await connection.run_sync(_foreign_keys_off)
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await database.dispose()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:  # called from code that already holds a connection
        _run_sync(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
