"""The orders domain's refusal codes, and other domains' refusals told as its own."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from api.errors import DomainError, Problem


class OrderErrorCode(enum.Enum):
    INVALID = "invalid"
    REQUIRED = "required"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    STORE_UNAVAILABLE = "store_unavailable"  # closed, a warehouse, or no pickup offered
    INSUFFICIENT_STOCK = "insufficient_stock"
    PRICE_BELOW_FLOOR = "price_below_floor"
    PRICE_ABOVE_CEILING = "price_above_ceiling"
    CHANNEL_EXCLUSIVE = "channel_exclusive"
    SKU_UNAVAILABLE = "sku_unavailable"
    COUPON_INVALID = "coupon_invalid"
    INSUFFICIENT_POINTS = "insufficient_points"
    POINTS_LIMIT = "points_limit"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    CURRENCY_MISMATCH = "currency_mismatch"
    # The lifecycle's (api/orders/lifecycle/).
    INVALID_STATUS = "invalid_status"
    WRONG_PICKUP_CODE = "wrong_pickup_code"
    PICKUP_NOT_AT_STORE = "pickup_not_at_store"
    REFUND_EXCEEDS = "refund_exceeds"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    TOO_MANY_OPEN_PICKUPS = "too_many_open_pickups"


def translated(
    error: DomainError, code: OrderErrorCode, *prefix: str, keep: Iterable[str] = ()
) -> DomainError:
    """Another domain's refusal as this domain's: ``code`` (codes named in ``keep`` keep
    theirs), the message as it is, the field under ``prefix``."""
    kept = set(keep)
    return DomainError(
        [
            Problem(
                OrderErrorCode[p.code.name] if p.code.name in kept else code,
                p.message,
                (*prefix, *(p.field or ())) or None,
            )
            for p in error.problems
        ]
    )
