"""`qudao points expire` and `qudao points check`, against the test database of each engine.

The command runs its own event loop (asyncio.run), so it runs in a worker thread here, with
its own connections, exactly as cron would start it.
"""

from __future__ import annotations

import asyncio

from click.testing import Result
from sqlalchemy import update
from typer.testing import CliRunner

from api.cli import app
from api.loyalty.models import EntryKind, PointsAccount
from tests.loyalty.conftest import DAY, T0, account, kinds, new_customers

runner = CliRunner()


async def qudao(settings, *args: str) -> Result:
    env = {"DATABASE_URL": settings.database_url, "QUDAO_LOG_PLAIN": "1"}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_expire_expires_due_lots_and_releases_matured_pending_ones(db, points, settings):
    ann, bob, cy = await new_customers(db, 3)
    await points.earn(ann, 100, "o-1")  # expires at T0 + 365d
    await points.earn(bob, 40, "o-2", now=T0 + 360 * DAY, pending=True)  # unlocks at +367d
    await points.earn(cy, 7, "o-3", now=T0 + 300 * DAY)  # not due
    result = await qudao(
        settings, "points", "expire", "--now", "2027-03-20T00:00:00", "--batch", "1"
    )
    assert result.exit_code == 0, result.output
    assert "Expired 100 points in 1 lots of 1 customers as of 2027-03-20T00:00:00+00:00" in (
        result.output
    )
    assert "Released 40 pending points in 1 lots of 1 customers" in result.output
    assert await kinds(db, ann) == [EntryKind.EARN, EntryKind.EXPIRE]
    assert (await account(db, bob)).balance == 40
    assert (await account(db, cy)).balance == 7
    again = await qudao(settings, "points", "expire", "--now", "2027-03-20T00:00:00")
    assert "Expired 0 points in 0 lots of 0 customers" in again.output


async def test_expire_can_leave_pending_points_alone(db, points, settings):
    (ann,) = await new_customers(db)
    await points.earn(ann, 40, "o-1", pending=True)
    result = await qudao(settings, "points", "expire", "--no-release", "--now", "2026-04-01")
    assert result.exit_code == 0, result.output
    assert "Released" not in result.output
    assert (await account(db, ann)).pending == 40


async def test_expire_refuses_a_bad_time(settings):
    result = await qudao(settings, "points", "expire", "--now", "next tuesday")
    assert result.exit_code == 2
    assert "not an ISO-8601 time" in result.output


async def test_check_passes_on_consistent_books_and_fails_listing_each_mismatch(
    db, points, settings
):
    ann, bob = await new_customers(db, 2)
    await points.earn(ann, 100, "o-1")
    await points.earn(bob, 50, "o-2")
    await points.redeem(bob, 20, "pay-1")
    ok = await qudao(settings, "points", "check")
    assert ok.exit_code == 0, ok.output
    assert "Every points account matches its ledger and its lots." in ok.output
    async with db.transaction() as session:
        await session.execute(
            update(PointsAccount).where(PointsAccount.customer_id == bob).values(balance=31)
        )
    bad = await qudao(settings, "points", "check")
    assert bad.exit_code == 1
    assert "1 points accounts disagree with their ledger" in bad.output
    assert "31/0/0" in bad.output and "30/0/0" in bad.output
