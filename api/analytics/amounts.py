"""Money and ratios as the reports show them: cents and four-place rates, half up."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
RATE = Decimal("0.0001")
ZERO = Decimal("0.00")


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def ratio(part: Decimal | int, whole: Decimal | int) -> Decimal | None:
    """``part / whole`` to four places (half up); None when ``whole`` is zero."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(RATE, rounding=ROUND_HALF_UP)


def per(amount: Decimal, count: int) -> Decimal | None:
    """An amount per customer, in cents; None when there is nobody to divide by."""
    return cents(amount / count) if count else None


def yuan(cents_: Any) -> Decimal:
    """A sum of cents from the database as yuan."""
    return (Decimal(int(cents_ or 0)) / 100).quantize(CENT)
