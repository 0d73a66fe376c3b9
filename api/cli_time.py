"""``--now`` for the job commands: jobs run "as of" a time, so an operator can replay one."""

from __future__ import annotations

from datetime import UTC, datetime

import typer


def parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO-8601 time: {value!r}", param_hint="--now") from None
    # A time without a zone is taken as UTC, like every time the API stores.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
