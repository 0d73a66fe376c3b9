"""Scalars that differ from strawberry's defaults."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry


def _parse_aware_datetime(value: object) -> datetime:
    # A time without an offset is ambiguous (Beijing or UTC?): refuse it rather than guess.
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO-8601 string.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"Not an ISO-8601 date-time: {value!r}.") from None
    if parsed.tzinfo is None:
        raise ValueError(
            f"DateTime {value!r} has no UTC offset; add one, e.g. 2026-11-24T09:30:00+08:00 "
            "or 2026-11-24T01:30:00Z."
        )
    return parsed.astimezone(UTC)


def _serialize_datetime(value: datetime) -> str:
    return value.isoformat()


AwareDateTime = strawberry.scalar(
    name="DateTime",
    description="An ISO-8601 date and time with a UTC offset (answers are in UTC).",
    serialize=_serialize_datetime,
    parse_value=_parse_aware_datetime,
)

SCALAR_MAP = {datetime: AwareDateTime}
