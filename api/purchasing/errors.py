"""The codes of purchasing's expected refusals, shared by pricing, credit and orders."""

from __future__ import annotations

import enum

from api.auth.principal import Principal
from api.errors import DomainError


class PurchasingErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    NO_PRICE = "no_price"  # no valid price list of the partner's holds the SKU
    PRICE_LIST_EXPIRED = "price_list_expired"  # one held it, but is not valid now
    BELOW_MINIMUM = "below_minimum"  # under the SKU's minimum order quantity
    WRONG_PACK_SIZE = "wrong_pack_size"  # not a whole number of packs (箱规)
    NO_CREDIT = "no_credit"  # HQ has given the partner no credit line
    CREDIT_EXCEEDED = "credit_exceeded"  # the order does not fit the available credit
    LIMIT_BELOW_USED = "limit_below_used"  # a limit lowered under what is already used
    BAD_STATE = "bad_state"  # the order is not in a state this step applies to
    OUT_OF_STOCK = "out_of_stock"  # the shipping warehouse lacks units
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # same key, another request


def require_hq(principal: Principal, message: str) -> None:
    if not principal.is_hq:
        raise DomainError.one(PurchasingErrorCode.FORBIDDEN, message)
