"""What a refused coupon operation answers: the codes of its DomainError."""

from __future__ import annotations

import enum


class CouponErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_PARTNER = "unknown_partner"
    TEMPLATE_PAUSED = "template_paused"
    NOT_STARTED = "not_started"
    CLAIM_ENDED = "claim_ended"
    EXPIRED = "expired"
    OUT_OF_STOCK = "out_of_stock"
    LIMIT_REACHED = "limit_reached"
    WRONG_STORE = "wrong_store"
    WRONG_CHANNEL = "wrong_channel"
    ALREADY_REDEEMED = "already_redeemed"
    VOIDED = "voided"
    NOT_STACKABLE = "not_stackable"
