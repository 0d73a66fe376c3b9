"""What a refused points operation answers: the codes of its DomainError."""

from __future__ import annotations

import enum


class PointsErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID_AMOUNT = "invalid_amount"
    INSUFFICIENT_POINTS = "insufficient_points"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    AMBIGUOUS_SOURCE = "ambiguous_source"
    INVALID = "invalid"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_LEVEL = "unknown_level"
    FORBIDDEN = "forbidden"
