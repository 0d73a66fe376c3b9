"""`qudao points ...`: the jobs and the check of the points ledger."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from api.cli_time import parse_now

if TYPE_CHECKING:
    from api.db import Database
    from api.loyalty.jobs import JobResult, Mismatch

points_app = typer.Typer(help="The points ledger (积分).", no_args_is_help=True)


async def _run_job(db: Database, *, expire: bool, now: datetime, batch: int) -> JobResult:
    from api.loyalty import jobs

    total = jobs.JobResult()
    while True:
        # One transaction per batch: each customer's lock is held briefly, and a crash loses
        # at most one batch (the next run picks it up: the job is idempotent).
        async with db.transaction() as session:
            job = jobs.expire_due if expire else jobs.release_due
            part = await job(session, now, batch)
        total.add(part)
        # Every customer of a batch leaves the due set, so a short batch means none is left.
        if part.scanned < batch:
            return total


@points_app.command("expire")
def expire(
    now: str | None = typer.Option(
        None, "--now", help="Run as of this ISO-8601 time (default: now, UTC)."
    ),
    batch: int = typer.Option(
        200,
        "--batch",
        min=1,
        max=10_000,
        help="Customers per transaction (their locks are held until it commits).",
    ),
    release: bool = typer.Option(
        True, "--release/--no-release", help="Also release pending points past the return window."
    ),
) -> None:
    """Expire points past their expiry, then release matured pending points (run daily)."""
    # Imported here: `qudao --help` should not load the database layer.
    from api.commands import load_settings, with_db
    from api.db import utcnow

    at = parse_now(now) or utcnow()

    async def work(db: Database) -> tuple[JobResult, JobResult | None]:
        expired = await _run_job(db, expire=True, now=at, batch=batch)
        released = await _run_job(db, expire=False, now=at, batch=batch) if release else None
        return expired, released

    expired, released = with_db(load_settings(), work)
    lines = [
        f"Expired {expired.points} points in {expired.lots} lots of {expired.customers} "
        f"customers as of {at.isoformat()}."
    ]
    if released is not None:
        lines.append(
            f"Released {released.points} pending points in {released.lots} lots of "
            f"{released.customers} customers."
        )
    typer.echo("\n".join(lines))


@points_app.command("check")
def check() -> None:
    """Verify every points account against its ledger and lots; exit 1 on any mismatch."""
    from api.commands import load_settings, with_db
    from api.loyalty import jobs

    async def work(db: Database) -> list[Mismatch]:
        async with db.read() as session:
            return await jobs.check_balances(session)

    mismatches = with_db(load_settings(), work)
    if not mismatches:
        typer.echo("Every points account matches its ledger and its lots.")
        return
    table = Table(title=f"{len(mismatches)} points accounts disagree with their ledger")
    for column in ("customer", "cached b/p/d", "ledger b/p/d", "lots b/p", "bad lots"):
        table.add_column(column, justify="right")
    for m in mismatches:
        table.add_row(
            str(m.customer_id),
            "/".join(map(str, m.cached)),
            "/".join(map(str, m.ledger)),
            "/".join(map(str, m.lots)),
            str(m.bad_lots),
        )
    Console(soft_wrap=True).print(table)
    raise typer.Exit(1)
