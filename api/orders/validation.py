"""What an order request may ask, checked before anything is read: who places what (the
caller's kind decides the channels, fulfilments and fields it may use) and the request's
shape (lines, quantities, prices, coupons, points, region, key, time), all problems at once.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from api.auth.principal import Principal
from api.catalog.models import SalesChannel
from api.errors import DomainError, Problem
from api.orders.drafts import OrderDraft
from api.orders.errors import OrderErrorCode
from api.orders.models import Fulfillment
from api.orders.reactions import OrderSettings
from api.partners.models import Store
from api.partners.service import is_valid_region_code

MEMBER_CHANNELS = frozenset({SalesChannel.MINI_PROGRAM, SalesChannel.WEB})
MAX_LINES = 100
MAX_QUANTITY = 10_000
# A unit price is checked before pricing; what bounds the stored amounts is the line cap below
# (MAX_UNIT_PRICE x MAX_QUANTITY alone would pass 10^11 a line).
MAX_UNIT_PRICE = Decimal("10000000.00")
# A line's amount and cost: what loyalty's earning takes per line (10^9 yuan). Times
# MAX_LINES that stays far inside Numeric(14, 2) on PostgreSQL (below 10^12).
MAX_LINE_AMOUNT = Decimal(10) ** 9
MAX_SUBTOTAL = Decimal(10) ** 10
# A member's open (PLACED or READY_FOR_PICKUP) pickup orders: each one holds stock at a store.
MAX_OPEN_PICKUPS = 10
MAX_COUPONS = 5
MAX_POINTS = 100_000_000
MAX_KEY = 100
MAX_SKU_CODE = 64
# A partner's clock may run a little ahead of ours; a sale reported further ahead is a bug.
CLOCK_SKEW = timedelta(minutes=5)
CENT = Decimal("0.01")


# --- who places what -----------------------------------------------------------------------


def is_partner_reported(principal: Principal) -> bool:
    """A sale a partner reports itself (its POS, its marketplace shop, its staff): price
    bands and territories are recorded as violations there instead of refused."""
    return principal.partner_id is not None and not principal.is_member


def idempotency_scope(principal: Principal) -> str:
    """Whose keys an idempotency key is unique among: two callers sending "1" never get
    each other's order."""
    if principal.is_member:
        return f"customer:{principal.customer_id}"
    if principal.is_hq:
        return "hq"
    if principal.store_id is not None:
        # A store's keys are its own: two stores' receipt numbers "1" are two orders.
        return f"store:{principal.store_id}"
    return f"partner:{principal.partner_id}"


def store_bound(principal: Principal) -> bool:
    return not principal.is_member and not principal.is_hq and principal.store_id is not None


def store_in_reach(principal: Principal, store: Store) -> bool:
    if principal.is_hq or principal.is_member:
        return True
    if principal.store_id is not None:
        return store.id == principal.store_id
    return principal.partner_id is not None and store.partner_id == principal.partner_id


def _check_caller(principal: Principal, draft: OrderDraft) -> list[Problem]:
    """What the principal may place, decided before anything is read."""
    forbidden = OrderErrorCode.FORBIDDEN
    if principal.is_member:
        problems = []
        if principal.customer_id is None:
            return [Problem(forbidden, "This member token names no customer.")]
        if draft.channel not in MEMBER_CHANNELS:
            problems.append(
                Problem(
                    forbidden, "Members order in the mini-program or the web shop.", ("channel",)
                )
            )
        if draft.fulfillment is Fulfillment.IN_STORE:
            problems.append(
                Problem(forbidden, "A counter sale is rung up by the store.", ("fulfillment",))
            )
        if draft.fulfillment is Fulfillment.DELIVERY and draft.store_id is not None:
            problems.append(
                Problem(forbidden, "HQ decides where a delivery ships from.", ("storeId",))
            )
        if draft.customer is not None:
            problems.append(
                Problem(forbidden, "Members place orders for themselves.", ("customer",))
            )
        problems += [
            Problem(forbidden, "Members pay the list price.", ("lines", str(i), "unitPrice"))
            for i, line in enumerate(draft.lines)
            if line.unit_price is not None
        ]
        return problems
    if principal.is_hq:
        return []
    if store_bound(principal):
        problems = []
        if draft.channel is not SalesChannel.STORE_POS:
            problems.append(
                Problem(forbidden, "A store takes orders at its counter: STORE_POS.", ("channel",))
            )
        if draft.fulfillment is Fulfillment.DELIVERY:
            problems.append(
                Problem(
                    forbidden,
                    "A store sells at the counter (IN_STORE) or for pickup (PICKUP).",
                    ("fulfillment",),
                )
            )
        return problems
    if principal.partner_id is None:
        return [Problem(forbidden, "Only HQ, members, partners and stores place orders.")]
    return []


def _check_money(value: Decimal, limit: Decimal) -> bool:
    try:
        return value.is_finite() and value == value.quantize(CENT) and 0 <= value <= limit
    except InvalidOperation:
        return False


def check_shape(
    principal: Principal,
    draft: OrderDraft,
    store_id: int | None,
    settings: OrderSettings,
    now: datetime,
) -> None:
    """Everything about the request that needs no database, all problems at once."""
    problems = _check_caller(principal, draft)
    problems += _check_lines(draft)
    problems += _check_parties(principal, draft, store_id)
    problems += _check_points(principal, draft, settings)
    problems += _check_region_key_and_time(principal, draft, now)
    if problems:
        raise DomainError(problems)


def _has_customer(principal: Principal, draft: OrderDraft) -> bool:
    return draft.customer_id is not None or draft.customer is not None or principal.is_member


def _check_lines(draft: OrderDraft) -> list[Problem]:
    problems: list[Problem] = []
    if not draft.lines:
        problems.append(Problem(OrderErrorCode.REQUIRED, "An order needs lines.", ("lines",)))
    elif len(draft.lines) > MAX_LINES:
        problems.append(Problem(OrderErrorCode.INVALID, f"At most {MAX_LINES} lines.", ("lines",)))
    for index, line in enumerate(draft.lines[:MAX_LINES]):
        at = ("lines", str(index))
        if (line.sku_id is None) == (line.sku_code is None):
            problems.append(
                Problem(OrderErrorCode.REQUIRED, "Give the SKU by skuId or by sku (code).", at)
            )
        elif line.sku_code is not None and not 0 < len(line.sku_code.strip()) <= MAX_SKU_CODE:
            problems.append(Problem(OrderErrorCode.INVALID, "Not a SKU code.", (*at, "sku")))
        if not 1 <= line.quantity <= MAX_QUANTITY:
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    f"A quantity is 1-{MAX_QUANTITY}.",
                    (*at, "quantity"),
                )
            )
        if line.unit_price is not None and not _check_money(line.unit_price, MAX_UNIT_PRICE):
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    "A unit price is an amount in cents, 0 or more.",
                    (*at, "unitPrice"),
                )
            )
    return problems


def _check_parties(principal: Principal, draft: OrderDraft, store_id: int | None) -> list[Problem]:
    """Who the order is for and where: the customer, the store, a pickup's and coupons'."""
    problems: list[Problem] = []
    if draft.customer_id is not None and draft.customer is not None:
        problems.append(
            Problem(OrderErrorCode.INVALID, "Give customerId or customer, not both.", ("customer",))
        )
    has_customer = _has_customer(principal, draft)
    if draft.fulfillment is not Fulfillment.DELIVERY and store_id is None:
        problems.append(
            Problem(
                OrderErrorCode.REQUIRED,
                f"A {draft.fulfillment.name} order is at a store: which one?",
                ("storeId",),
            )
        )
    if draft.fulfillment is Fulfillment.PICKUP and not has_customer:
        problems.append(
            Problem(OrderErrorCode.REQUIRED, "Who picks it up? Name the customer.", ("customerId",))
        )
    if len(draft.coupon_codes) > MAX_COUPONS:
        problems.append(
            Problem(OrderErrorCode.INVALID, f"At most {MAX_COUPONS} coupons.", ("couponCodes",))
        )
    elif draft.coupon_codes and not has_customer:
        problems.append(
            Problem(OrderErrorCode.REQUIRED, "Coupons are a customer's.", ("customerId",))
        )
    elif draft.coupon_codes and store_id is None and is_partner_reported(principal):
        # Where the redemption is recorded: a partner's coupon use is at one of its stores
        # (which is what releasing it on a cancel looks for).
        problems.append(
            Problem(
                OrderErrorCode.REQUIRED,
                "Coupons on a partner's order are used at one of its stores.",
                ("storeId",),
            )
        )
    return problems


def _check_points(
    principal: Principal, draft: OrderDraft, settings: OrderSettings
) -> list[Problem]:
    problems: list[Problem] = []
    if draft.points_to_use:
        per_yuan = settings.points_per_yuan
        if not 0 < draft.points_to_use <= MAX_POINTS:
            problems.append(
                Problem(
                    OrderErrorCode.INVALID, f"Points to use are 1-{MAX_POINTS}.", ("pointsToUse",)
                )
            )
        elif draft.points_to_use * 100 % per_yuan:
            step = per_yuan // math.gcd(per_yuan, 100)
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    f"{per_yuan} points pay one yuan and points pay whole cents: use a "
                    f"multiple of {step} points.",
                    ("pointsToUse",),
                )
            )
        elif not _has_customer(principal, draft):
            problems.append(
                Problem(OrderErrorCode.REQUIRED, "Points are a customer's.", ("customerId",))
            )
    return problems


def _check_region_key_and_time(
    principal: Principal, draft: OrderDraft, now: datetime
) -> list[Problem]:
    problems: list[Problem] = []
    region = draft.delivery_region_code
    if region is not None:
        if draft.fulfillment is not Fulfillment.DELIVERY:
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    "A delivery region is for DELIVERY orders.",
                    ("deliveryRegionCode",),
                )
            )
        elif not is_valid_region_code(region):
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    "Not a region code (six digits, GB/T 2260).",
                    ("deliveryRegionCode",),
                )
            )
    key = draft.idempotency_key
    if key is not None and not 0 < len(key) <= MAX_KEY:
        problems.append(
            Problem(
                OrderErrorCode.INVALID,
                f"An idempotency key is 1-{MAX_KEY} characters.",
                ("idempotencyKey",),
            )
        )
    if draft.placed_at is not None:
        if not is_partner_reported(principal):
            problems.append(
                Problem(
                    OrderErrorCode.FORBIDDEN,
                    "Only a partner reporting its own sales says when they happened.",
                    ("placedAt",),
                )
            )
        elif draft.placed_at.utcoffset() is None or draft.placed_at > now + CLOCK_SKEW:
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    "A sale happened in the past; give the time with its UTC offset.",
                    ("placedAt",),
                )
            )
    return problems
