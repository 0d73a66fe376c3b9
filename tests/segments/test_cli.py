"""`qudao segments run-grant JOB_ID`: resume a grant job from the command line (after a
restart), in-process through typer's CliRunner on a SQLite file of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.customers.models import ConsentPurpose, Customer, CustomerConsent, CustomerStatus
from api.db import Database, utcnow
from api.segments import service
from api.segments.models import GrantAction
from tests.orders.conftest import HQ
from tests.orders.test_import_cli import _use

runner = CliRunner()


async def _started_job(url: str) -> int:
    """One consenting member and a points grant started on a segment that holds them."""
    db = Database(url)
    now = utcnow()
    try:
        async with db.transaction() as session:
            ann = Customer(
                name="ann", status=CustomerStatus.ACTIVE, member_since=now, attributes={},
                created_at=now, updated_at=now,
            )  # fmt: skip
            session.add(ann)
            await session.flush()
            session.add(
                CustomerConsent(
                    customer_id=ann.id,
                    purpose=ConsentPurpose.MARKETING_MESSAGES,
                    granted=True,
                    source="test",
                    decided_at=now,
                )
            )
            saved = await service.create_segment(
                session, HQ, name="Members", query="member = true", description=None, now=now
            )
            job, _ = await service.start_grant(
                session,
                HQ,
                service.GrantRequest(
                    segment_id=saved.id,
                    campaign_key="k",
                    action=GrantAction.POINTS,
                    reason="welcome",
                    points=10,
                ),
                now=now,
            )
            return job.id
    finally:
        await db.dispose()


def test_run_grant_finishes_a_job_and_leaves_a_finished_one_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, tmp_path)
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    job_id = asyncio.run(_started_job(f"sqlite+aiosqlite:///{tmp_path}/qudao.db"))

    summary = f"Job {job_id} completed: 1 of 1 members processed, 1 granted, 0 skipped.\n"
    for _ in range(2):
        result = runner.invoke(app, ["segments", "run-grant", str(job_id), "--batch", "10"])
        assert result.exit_code == 0, result.output
        assert result.stdout == summary

    missing = runner.invoke(app, ["segments", "run-grant", "99"])
    assert missing.exit_code == 2
    assert "No segment grant job 99." in missing.stderr
