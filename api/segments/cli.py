"""`qudao segments ...`: resume a grant job (after a restart, or after fixing why it failed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from api.db import Database
    from api.segments.models import SegmentGrantJob

segments_app = typer.Typer(help="Segments (人群) and their grant jobs.", no_args_is_help=True)


@segments_app.command("run-grant")
def run_grant(
    job_id: int = typer.Argument(..., help="The job's number (the pk of its SegmentGrantJob)."),
    batch: int = typer.Option(200, "--batch", min=1, max=10_000, help="Members per transaction."),
) -> None:
    """Run a grant job to its end, resuming where it stopped; a completed job is left alone.

    Safe to run while the job runs elsewhere: no member is granted twice.
    """
    # Imported here: `qudao --help` should not load the database layer.
    from api.commands import fail, load_settings, with_db
    from api.segments import jobs

    settings = load_settings()

    async def work(db: Database) -> SegmentGrantJob:
        return await jobs.run_grant_job(db, job_id, policy=settings.points_policy, batch_size=batch)

    try:
        job = with_db(settings, work)
    except jobs.JobNotFound as error:
        fail(str(error))
    typer.echo(
        f"Job {job.id} {job.status.value}: {job.processed} of {job.total} members processed, "
        f"{job.granted} granted, {job.skipped} skipped."
    )
