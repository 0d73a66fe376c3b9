"""Scalars that differ from strawberry's defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import strawberry
from strawberry.types.scalar import ScalarDefinition

# Every Decimal a caller sends: finite, at most DECIMAL_SCALE decimal places and below
# DECIMAL_LIMIT in magnitude (checked with the other inputs, api/graphql/guard.py, where a
# field whose domain answers these itself keeps its answer). Then at most 23 digits, well
# inside the decimal context's 28, so rounding to cents, sums and products stay exact and
# never raise; each field still bounds its own amount (prices, rates) more tightly.
DECIMAL_SCALE = 8
DECIMAL_LIMIT = Decimal(10) ** 15
_DECIMAL_TEXT_MAX = 64  # characters: "-999999999999999.99999999" and friends fit easily


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


def _parse_decimal(value: object) -> Decimal:
    # JSON numbers are accepted as strawberry's Decimal did, read through their text so that
    # 0.1 means 0.1 and not the float nearest to it.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError('Decimal must be a string such as "19.90", or a number.')
    text = value if isinstance(value, str) else str(value)
    if len(text) > _DECIMAL_TEXT_MAX:
        raise ValueError(f"Decimal must be at most {_DECIMAL_TEXT_MAX} characters.")
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"Not a decimal number: {text!r}.") from None


def decimal_problem(text: str) -> str | None:
    """Why a decimal a caller sent is not one the API takes (not finite, too large, too
    fine), or None. Checked for every Decimal input by api/graphql/guard.py."""
    try:
        parsed = Decimal(text.strip())
    except InvalidOperation:
        return None  # not a number at all: the scalar says so
    if not parsed.is_finite():
        return f"a Decimal must be a finite number; got {text!r}"
    if abs(parsed) >= DECIMAL_LIMIT:
        return f"a Decimal must be below {DECIMAL_LIMIT:,} in magnitude; got {text!r}"
    exponent = parsed.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -DECIMAL_SCALE:
        return f"a Decimal has at most {DECIMAL_SCALE} decimal places; got {text!r}"
    return None


FiniteDecimal = strawberry.scalar(
    name="Decimal",
    description="Decimal (fixed-point)",
    serialize=str,
    parse_value=_parse_decimal,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {datetime: AwareDateTime, Decimal: FiniteDecimal}
