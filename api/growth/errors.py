"""The growth domain's refusals."""

from __future__ import annotations

import enum


class GrowthErrorCode(enum.Enum):
    INVALID = "invalid"
    REQUIRED = "required"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    EVENT_ID_REUSED = "event_id_reused"
    LIMIT_EXCEEDED = "limit_exceeded"
