"""`qudao members ...`: jobs of the membership programme."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from api.cli_time import parse_now

if TYPE_CHECKING:
    from api.customers.level_review import ReviewSummary
    from api.db import Database

members_app = typer.Typer(help="Members and member levels.", no_args_is_help=True)


@members_app.command("review-levels")
def review_levels(
    now: str | None = typer.Option(
        None, "--now", help="Review as of this ISO-8601 time (default: now, UTC)."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000, help="Members per transaction."),
) -> None:
    """Period-end level review: renew, start grace, or downgrade after grace (run daily)."""
    # Imported here: `qudao --help` should not load the database layer.
    from api.commands import load_settings, with_db
    from api.customers.level_review import ReviewSummary, review_levels
    from api.db import utcnow

    at = parse_now(now) or utcnow()

    async def work(db: Database) -> ReviewSummary:
        total = ReviewSummary()
        while True:
            # One transaction per batch: locks stay short and a crash loses one batch at most.
            async with db.transaction() as session:
                part = await review_levels(session, at, limit=batch)
            total.add(part)
            # Every reviewed member leaves the due set (a new period, a grace end in the
            # future, or a level with no period), so a short batch means none is left.
            if part.reviewed < batch:
                return total

    summary = with_db(load_settings(), work)
    typer.echo(
        f"Reviewed {summary.reviewed} members as of {at.isoformat()}: "
        f"{summary.renewed} renewed, {summary.upgraded} upgraded, "
        f"{summary.entered_grace} entered grace, {summary.grace_cleared} left grace, "
        f"{summary.downgraded} downgraded."
    )
