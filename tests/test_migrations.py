"""One migration chain for both engines, and it matches the models exactly."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from api.db import Base, Database
from api.migrate import downgrade, upgrade
from tests.conftest import recreate_pg_database


def scratch_url(database_url: str, tmp_path) -> str:
    """A database of its own, so the round trip does not disturb the shared test one."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path}/migrations.db"
    url = make_url(database_url)
    scratch = url.set(database=f"{url.database}_migrations").render_as_string(hide_password=False)
    asyncio.run(recreate_pg_database(scratch))
    return scratch


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        database = Database(url)
        try:
            async with database.engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await database.dispose()

    return asyncio.run(read()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(database_url, tmp_path):
    url = scratch_url(database_url, tmp_path)
    upgrade(url)
    assert tables(url) == set(Base.metadata.tables)
    downgrade(url, "base")
    assert tables(url) == set()
    upgrade(url)
    assert tables(url) == set(Base.metadata.tables)


async def test_models_and_migrations_agree(database):
    # The session database was built by the migrations; autogenerate must find nothing to do.
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert diff == []
