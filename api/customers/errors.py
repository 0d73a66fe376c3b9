"""The customers domain's refusals: its error codes, and the check that only HQ staff manage
customer master data."""

from __future__ import annotations

import enum

from api.auth.principal import Principal
from api.errors import DomainError


class CustomerErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    REQUIRED = "required"
    INVALID_IDENTITY = "invalid_identity"
    IDENTITY_CONFLICT = "identity_conflict"
    ALREADY_MEMBER = "already_member"
    NOT_A_MEMBER = "not_a_member"
    MERGE_INVALID = "merge_invalid"
    DUPLICATE_CODE = "duplicate_code"
    DUPLICATE_RANK = "duplicate_rank"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_GUIDE = "unknown_guide"
    UNKNOWN_LEVEL = "unknown_level"
    FORBIDDEN = "forbidden"


def require_hq(principal: Principal, what: str = "manage customer master data") -> None:
    if not principal.is_hq:
        raise DomainError.one(CustomerErrorCode.FORBIDDEN, f"Only HQ staff {what}.")
