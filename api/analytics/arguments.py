"""What the reports and the channel spend accept, and the problems they answer otherwise:
ranges within the business calendar and at most three years long, ISO 4217 currencies."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from api.analytics.business_calendar import END_INSTANT, FIRST_DAY, FIRST_INSTANT, LAST_DAY
from api.errors import DomainError, Problem

MAX_RANGE_DAYS = 3 * 365 + 1  # three years, with a leap day
DEFAULT_CURRENCY = "CNY"
_CURRENCY = re.compile(r"[A-Z]{3}")


class AnalyticsErrorCode(enum.Enum):
    INVALID = "invalid"
    REQUIRED = "required"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INVALID_RANGE = "invalid_range"  # the end is not after the start, or outside 2000-2100
    RANGE_TOO_LONG = "range_too_long"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


def outside_calendar(fields: Sequence[tuple[str, bool]]) -> list[Problem]:
    """An INVALID_RANGE problem for each named argument that is not ``within`` the calendar
    the reports accept."""
    return [
        Problem(
            AnalyticsErrorCode.INVALID_RANGE,
            f"Dates run from {FIRST_DAY} to {LAST_DAY} (China Standard Time).",
            (field,),
        )
        for field, within in fields
        if not within
    ]


def check_instants(
    start: datetime, end: datetime, start_field: str, end_field: str
) -> list[Problem]:
    if start.tzinfo is None or end.tzinfo is None:
        field = start_field if start.tzinfo is None else end_field
        return [Problem(AnalyticsErrorCode.INVALID, "Give times with their UTC offset.", (field,))]
    outside = outside_calendar(
        [
            (start_field, FIRST_INSTANT <= start <= END_INSTANT),
            (end_field, FIRST_INSTANT <= end <= END_INSTANT),
        ]
    )
    if outside:
        return outside
    if end <= start:
        return [
            Problem(
                AnalyticsErrorCode.INVALID_RANGE,
                f"`{end_field}` must be after `{start_field}`.",
                (end_field,),
            )
        ]
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        return [
            Problem(
                AnalyticsErrorCode.RANGE_TOO_LONG,
                f"A report covers at most {MAX_RANGE_DAYS} days (three years); ask for less.",
                (end_field,),
            )
        ]
    return []


def check_days(start: date, end: date, start_field: str, end_field: str) -> list[Problem]:
    outside = outside_calendar(
        [
            (start_field, FIRST_DAY <= start <= LAST_DAY),
            (end_field, FIRST_DAY <= end <= LAST_DAY),
        ]
    )
    if outside:
        return outside
    if end < start:
        return [
            Problem(
                AnalyticsErrorCode.INVALID_RANGE,
                f"`{end_field}` must not be before `{start_field}`.",
                (end_field,),
            )
        ]
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        return [
            Problem(
                AnalyticsErrorCode.RANGE_TOO_LONG,
                f"A report covers at most {MAX_RANGE_DAYS} days (three years); ask for less.",
                (end_field,),
            )
        ]
    return []


def check_currency(currency: str, *field: str) -> list[Problem]:
    if _CURRENCY.fullmatch(currency):
        return []
    return [
        Problem(
            AnalyticsErrorCode.INVALID,
            "A currency is an ISO 4217 code in capitals, e.g. CNY.",
            field or ("currency",),
        )
    ]


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise DomainError(problems)
