"""The business calendar of the reports and the funnel: China Standard Time (UTC+08:00, no
daylight saving). Cohort months and weeks (Monday first) and the days of a ``Date`` range
follow it: an order paid at 2026-01-31T20:00Z (04:00 on 1 February in Beijing) belongs to
February's cohort. Periods are numbered the same way in Python and in SQL, on both engines.

Dates and times are accepted from 2000-01-01 to 2100-12-31: no real report or spend lies
outside, and the calendar arithmetic stays far from the ends of Python's dates.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, cast, func, literal_column

BUSINESS_OFFSET = timedelta(hours=8)
BUSINESS_TZ = timezone(BUSINESS_OFFSET, "CST")
_OFFSET_SECONDS = int(BUSINESS_OFFSET.total_seconds())
DAY_SECONDS = 86_400
_EPOCH_DAY = date(1970, 1, 1)


class Period(enum.Enum):
    WEEK = "week"
    MONTH = "month"


def period_index(moment: datetime, period: Period) -> int:
    """The period (week or month number) ``moment`` falls in, in the business calendar:
    the same numbering as ``period_sql``."""
    local = moment.astimezone(BUSINESS_TZ)
    if period is Period.MONTH:
        return local.year * 12 + local.month - 1
    return ((local.date() - _EPOCH_DAY).days + 3) // 7  # 1970-01-01 was a Thursday


def period_start(index: int, period: Period) -> date:
    """The first day of a period number: the 1st of the month, or the week's Monday."""
    if period is Period.MONTH:
        return date(index // 12, index % 12 + 1, 1)
    return _EPOCH_DAY + timedelta(days=index * 7 - 3)


def period_label(index: int, period: Period) -> str:
    """ "2026-01" for a month, the ISO week "2026-W02" for a week."""
    start = period_start(index, period)
    if period is Period.MONTH:
        return f"{start.year:04d}-{start.month:02d}"
    year, week, _ = start.isocalendar()
    return f"{year:04d}-W{week:02d}"


def day_start(day: date) -> datetime:
    """Midnight of a business day, as a UTC instant."""
    return datetime.combine(day, time(), BUSINESS_TZ).astimezone(UTC)


# The days a report or a spend may name (inclusive), and the instants they span.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)
FIRST_INSTANT = day_start(FIRST_DAY)
END_INSTANT = day_start(LAST_DAY + timedelta(days=1))


def epoch_sql(column: Any, dialect: str) -> ColumnElement[int]:
    """Whole seconds since 1970 (UTC) of a stored time, on either engine."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    # SQLite keeps naive UTC text; strftime('%s') reads it as UTC.
    return cast(func.strftime("%s", column), BigInteger)


def period_sql(column: Any, period: Period, dialect: str) -> ColumnElement[int]:
    """The SQL of ``period_index``."""
    if period is Period.WEEK:
        local_day = (epoch_sql(column, dialect) + _OFFSET_SECONDS) // DAY_SECONDS
        return (local_day + 3) // 7
    year: ColumnElement[Any]
    month: ColumnElement[Any]
    if dialect == "postgresql":
        # AT TIME ZONE 'UTC' gives the naive UTC time; the offset is a constant interval.
        local = func.timezone(literal_column("'UTC'"), column) + literal_column(
            f"INTERVAL '{_OFFSET_SECONDS} seconds'"
        )
        year, month = func.extract("year", local), func.extract("month", local)
    else:
        shift = f"+{_OFFSET_SECONDS} seconds"
        year, month = func.strftime("%Y", column, shift), func.strftime("%m", column, shift)
    return cast(year, Integer) * 12 + cast(month, Integer) - 1
