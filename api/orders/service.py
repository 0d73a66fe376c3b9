"""Orders from every channel (全渠道订单): placing one, completing a sale, reading them back.

Plain async functions over a session; no GraphQL here, so the API, the marketplace import,
the pickup lifecycle and the tests run the same rules.

``create_order`` does everything an order means in the caller's one transaction, so a
failure anywhere (a coupon refused after the stock was reserved) leaves nothing behind:

1. the request's shape, then (with an idempotency key) the first order for a retry, if the
   caller may still see it (the key's scope is the caller's store for store-bound callers,
   and the digest covers the store the order resolves to);
2. who may place it: HQ any order; a member their own, online; store staff at their store,
   at the counter or a pickup; a partner at its own stores (another partner's store is not
   found, exactly like a missing one);
3. store, customer (by id, or identities upserted), SKUs and prices against the channel's
   band: first-party channels refuse a price outside the band or a channel-exclusive SKU
   (线上专供款); a partner-reported sale is accepted and recorded as a channel violation
   (乱价), as is one outside the partner's territories (窜货);
4. the customer, found or created by identities and locked (points and coupons only for
   the member themself or a customer the caller sees), then the order row, stock (a pickup
   reserves, a counter or located delivery sale deducts), coupons, points, lines with their
   share of the discounts, the coupons used, the history, the violations, and for a
   completed sale its points and spend.

Lock order, shared with the pickup lifecycle and customer merges (which lock customers, then
their orders): the idempotency key's advisory lock, the live customer (FOR UPDATE, as points
take it), the order row, stock rows (ascending SKU), then coupons. Locking the customer before
inserting the order means the order's foreign key waits for nobody.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api import events
from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog import service as catalog
from api.catalog.models import SalesChannel
from api.conflicts.models import ViolationKind
from api.conflicts.service import outside_territory, record_violation
from api.coupons import codes as coupon_codes
from api.coupons import discounts as coupon_discounts
from api.coupons import redemption as coupon_redemption
from api.coupons.models import CouponChannel, CouponKind
from api.customers.identities import normalize_identities
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.lookup import get_customer
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import Customer
from api.customers.profile import CustomerDraft
from api.customers.qualification import record_spend
from api.customers.upsert import upsert_customer
from api.db import advisory_lock
from api.errors import DomainError, Problem
from api.inventory import service as inventory
from api.loyalty import balances as loyalty_balances
from api.loyalty import earning as loyalty_earning
from api.loyalty import errors as loyalty_errors
from api.loyalty import spending as loyalty_spending
from api.loyalty.rules import PointsPolicy, Purchase, PurchaseLine
from api.orders.models import (
    OPEN_PICKUP,
    Fulfillment,
    Order,
    OrderCoupon,
    OrderEvent,
    OrderLine,
    OrderStatus,
)
from api.orders.pickup import new_pickup_code
from api.orders.reactions import OrderChange, OrderSettings, OrdersWiring
from api.partners.models import Store, StoreKind, StoreStatus
from api.partners.service import is_valid_region_code

# The seller sees its orders (a store principal its store's), the customer their own.


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
    # The pickup lifecycle's (api/orders/lifecycle.py).
    INVALID_STATUS = "invalid_status"
    WRONG_PICKUP_CODE = "wrong_pickup_code"
    PICKUP_NOT_AT_STORE = "pickup_not_at_store"
    REFUND_EXCEEDS = "refund_exceeds"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    TOO_MANY_OPEN_PICKUPS = "too_many_open_pickups"


ORDER_SOURCE = "order"  # the source type of an order's stock movements, points and spend
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
_CENT = Decimal("0.01")
_PICKUP_CODE_TRIES = 8


# --- drafts and results --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineDraft:
    """One line as asked: a SKU by id or by code, a quantity, and (staff and partners only)
    a unit price; without one the channel's list price applies."""

    quantity: int
    sku_id: int | None = None
    sku_code: str | None = None
    unit_price: Decimal | None = None


@dataclass(slots=True)
class OrderDraft:
    channel: SalesChannel
    fulfillment: Fulfillment
    lines: Sequence[LineDraft]
    store_id: int | None = None
    customer_id: int | None = None
    # Or the customer as a channel knows them: found by any identity, else created.
    customer: CustomerDraft | None = None
    coupon_codes: Sequence[str] = ()
    points_to_use: int = 0
    delivery_region_code: str | None = None
    idempotency_key: str | None = None
    # When the customer paid, for sales a partner reports afterwards; else now.
    placed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderResult:
    order: Order
    created: bool  # False: a retry with the same idempotency key returned the first order


@dataclass(slots=True)
class OrderFilter:
    statuses: Sequence[OrderStatus] = ()
    channels: Sequence[SalesChannel] = ()
    fulfillments: Sequence[Fulfillment] = ()
    store_ids: Sequence[int] = ()
    customer_ids: Sequence[int] = ()
    placed_from: datetime | None = None  # inclusive
    placed_to: datetime | None = None  # exclusive


@dataclass(slots=True)
class _PricedLine:
    draft: LineDraft
    sku: catalog.PricedSku
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        return (self.unit_price * self.draft.quantity).quantize(_CENT)

    @property
    def cost(self) -> Decimal:
        return (self.sku.cost_price * self.draft.quantity).quantize(_CENT)


@dataclass(slots=True)
class _Violation:
    """A violation found before the order exists; recorded once it has an id."""

    kind: ViolationKind
    key: str  # the part of the source key after "order:<id>:"
    detail: str
    sku_id: int | None = None
    region_code: str | None = None
    expected: Decimal | None = None
    actual: Decimal | None = None


@dataclass(slots=True)
class _Plan:
    """What the checks decided, before anything is written."""

    store: Store | None
    # The store lies outside its partner's territories: coupons used there are 窜货.
    store_outside: bool
    customer_id: int | None
    partner_id: int | None
    lines: list[_PricedLine]
    currency: str
    violations: list[_Violation] = field(default_factory=list)


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


def _store_bound(principal: Principal) -> bool:
    return not principal.is_member and not principal.is_hq and principal.store_id is not None


def _store_in_reach(principal: Principal, store: Store) -> bool:
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
    if _store_bound(principal):
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
        return value.is_finite() and value == value.quantize(_CENT) and 0 <= value <= limit
    except InvalidOperation:
        return False


def _check_shape(
    principal: Principal,
    draft: OrderDraft,
    store_id: int | None,
    settings: OrderSettings,
    now: datetime,
) -> None:
    """Everything about the request that needs no database, all problems at once."""
    problems = _check_caller(principal, draft)
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
    if draft.customer_id is not None and draft.customer is not None:
        problems.append(
            Problem(OrderErrorCode.INVALID, "Give customerId or customer, not both.", ("customer",))
        )
    has_customer = (
        draft.customer_id is not None or draft.customer is not None or principal.is_member
    )
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
        elif not has_customer:
            problems.append(
                Problem(OrderErrorCode.REQUIRED, "Points are a customer's.", ("customerId",))
            )
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
    if problems:
        raise DomainError(problems)


def request_digest(draft: OrderDraft, store_id: int | None) -> str:
    """What a request asked for, normalized: a retry with the same key must ask the same.
    ``store_id`` is the store the order is at once resolved (a store principal's own when the
    draft names none), so one key sent from two stores is two different requests."""
    customer = draft.customer
    body = {
        "channel": draft.channel.value,
        "fulfillment": draft.fulfillment.value,
        "store": store_id,
        "customer": draft.customer_id,
        "identities": (
            [[kind.value, value.strip()] for kind, value in customer.identities]
            if customer
            else None
        ),
        "name": customer.name if customer else None,
        "lines": [
            [
                line.sku_id,
                line.sku_code.strip() if line.sku_code else None,
                line.quantity,
                str(line.unit_price.quantize(_CENT)) if line.unit_price is not None else None,
            ]
            for line in draft.lines
        ],
        "coupons": [coupon_codes.normalize_code(c) or c for c in draft.coupon_codes],
        "points": draft.points_to_use,
        "region": draft.delivery_region_code,
        "placedAt": draft.placed_at.isoformat() if draft.placed_at else None,
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


# --- the checks that read ------------------------------------------------------------------


def _translated(
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


async def _order_store(
    session: AsyncSession,
    principal: Principal,
    draft: OrderDraft,
    store_id: int,
    region: str | None,
) -> tuple[Store, bool, bool]:
    """The store, within the principal's reach and able to take this order; whether the
    sale's region (``region``, else the store's) is outside the store partner's territories;
    and whether the store itself is (where its coupons are used)."""
    store_outside = outside_territory(Store.partner_id, Store.region_code)
    sale_outside = store_outside if region is None else outside_territory(Store.partner_id, region)
    found = (
        await session.execute(
            select(Store, sale_outside, store_outside).where(Store.id == store_id)
        )
    ).first()
    if found is None or not _store_in_reach(principal, found[0]):
        raise DomainError.one(OrderErrorCode.NOT_FOUND, "No such store.", "storeId")
    store, outside, store_is_outside = found
    unavailable = None
    if store.status is not StoreStatus.OPEN:
        unavailable = "This store is closed."
    elif draft.fulfillment is not Fulfillment.DELIVERY and store.kind is not StoreKind.STORE:
        unavailable = "A warehouse has no counter: it ships DELIVERY orders only."
    elif draft.fulfillment is Fulfillment.PICKUP and not store.offers_pickup:
        unavailable = "This store does not offer pickup."
    if unavailable:
        raise DomainError.one(OrderErrorCode.STORE_UNAVAILABLE, unavailable, "storeId")
    return store, bool(outside), bool(store_is_outside)


async def _order_customer(
    session: AsyncSession, principal: Principal, draft: OrderDraft, now: datetime
) -> int | None:
    """The live customer the order is for: a member's own, or an id the principal may see.
    Identities are only checked here; ``_upsert_customer`` finds or creates their person."""
    if principal.is_member:
        assert principal.customer_id is not None  # _check_caller
        own = await resolve_customer_id(session, principal.customer_id)
        if own is None:
            raise DomainError.one(OrderErrorCode.NOT_FOUND, "No such customer.", "customerId")
        asked = draft.customer_id
        if asked is not None and asked != principal.customer_id:
            # Any other id is refused alike, existing or not: nothing is told about it. An
            # old (merged) id of the member's names the member.
            if await resolve_customer_id(session, asked) != own:
                raise DomainError.one(
                    OrderErrorCode.FORBIDDEN,
                    "Members place orders for themselves.",
                    "customerId",
                )
        return own
    if draft.customer_id is not None:
        try:
            found = await get_customer(session, principal, draft.customer_id)
        except DomainError:
            raise DomainError.one(
                OrderErrorCode.NOT_FOUND, "No such customer.", "customerId"
            ) from None
        return found.id
    if draft.customer is not None:
        # Checked now, found or created after the stock (``_upsert_customer``).
        try:
            normalize_identities(draft.customer.identities)
        except DomainError as error:
            raise _translated(error, OrderErrorCode.INVALID, "customer") from None
    return None


async def _upsert_customer(
    session: AsyncSession, principal: Principal, draft: OrderDraft, now: datetime
) -> int:
    """The person the identities name, created if nobody yet (the upsert locks them)."""
    profile = draft.customer
    assert profile is not None
    try:
        result = await upsert_customer(
            session,
            CustomerDraft(
                identities=profile.identities,
                name=profile.name,
                first_channel=draft.channel.value,
                # A channel's view never overwrites what the person or HQ put on file.
                fill_only=True,
            ),
            actor=principal.subject,
            now=now,
        )
    except DomainError as error:
        raise _translated(error, OrderErrorCode.INVALID, "customer", keep=["REQUIRED"]) from None
    return result.customer.id


async def _lock_order_customer(
    session: AsyncSession,
    principal: Principal,
    draft: OrderDraft,
    plan: _Plan,
    now: datetime,
) -> int | None:
    """Find (or create) and lock the order's live customer, before any stock is touched (the
    lock order in the module docstring). A merge that committed meanwhile has moved the
    person: the order goes to the survivor.

    Points and coupons are spent only by the member themself or for a customer the principal
    sees (their recruiter's partner or store, HQ). Someone found by a phone number is not
    one: spending their points would let any partner drain (and, from the refusal, read)
    the balance of whoever owns a number. Refused alike whether the identities named someone
    or a new customer was created, so the refusal tells nothing about the number."""
    customer_id = plan.customer_id
    if draft.customer is not None:
        customer_id = await _upsert_customer(session, principal, draft, now)
    if customer_id is None:
        return None
    locked = await lock_customer(session, customer_id)
    if locked is None:
        raise DomainError.one(OrderErrorCode.NOT_FOUND, "No such customer.", "customerId")
    if draft.customer is not None and (draft.points_to_use or draft.coupon_codes):
        visible = await session.scalar(
            restrict(
                select(Customer.id).where(Customer.id == locked.id),
                Customer,
                principal,
            )
        )
        if visible is None:
            field_name = "pointsToUse" if draft.points_to_use else "couponCodes"
            raise DomainError.one(
                OrderErrorCode.FORBIDDEN,
                "Points and coupons are used by the member, or for a customer you serve "
                "(give customerId).",
                field_name,
            )
    if principal.is_member and draft.fulfillment is Fulfillment.PICKUP:
        # Under the customer's lock, so two concurrent orders cannot both pass the count.
        open_pickups = await session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.customer_id == locked.id,
                Order.fulfillment == Fulfillment.PICKUP,
                Order.status.in_(OPEN_PICKUP),
            )
        )
        if (open_pickups or 0) >= MAX_OPEN_PICKUPS:
            raise DomainError.one(
                OrderErrorCode.TOO_MANY_OPEN_PICKUPS,
                f"At most {MAX_OPEN_PICKUPS} pickup orders can wait at once: pick up or "
                "cancel one first.",
                "fulfillment",
            )
    return locked.id


async def _priced_lines(
    session: AsyncSession, draft: OrderDraft, *, reported: bool
) -> tuple[list[_PricedLine], str, list[_Violation]]:
    """Each line's SKU and price, checked against the channel: refused for a first-party
    order, recorded as violations for a partner-reported one. Every refusal at once."""
    ids = [line.sku_id for line in draft.lines if line.sku_id is not None]
    codes = [line.sku_code.strip() for line in draft.lines if line.sku_code is not None]
    found = await catalog.skus_for_order(session, draft.channel, ids=ids, codes=codes)
    by_id = {sku.sku_id: sku for sku in found}
    by_code = {sku.code: sku for sku in found}
    channel = draft.channel
    problems: list[Problem] = []
    violations: list[_Violation] = []
    priced: list[_PricedLine] = []
    currency: str | None = None
    for index, line in enumerate(draft.lines):
        at = ("lines", str(index))
        if line.sku_id is not None:
            sku = by_id.get(line.sku_id)
            missing_field = "skuId"
        else:
            assert line.sku_code is not None
            sku = by_code.get(line.sku_code.strip())
            missing_field = "sku"
        if sku is None:
            problems.append(Problem(OrderErrorCode.NOT_FOUND, "No such SKU.", (*at, missing_field)))
            continue
        if not sku.active:
            problems.append(
                Problem(OrderErrorCode.SKU_UNAVAILABLE, f"{sku.code} is not on sale.", at)
            )
            continue
        currency = currency or sku.currency
        if sku.currency != currency:
            problems.append(
                Problem(
                    OrderErrorCode.CURRENCY_MISMATCH,
                    f"{sku.code} is priced in {sku.currency}; this order is in {currency}.",
                    at,
                )
            )
            continue
        line_no = index + 1
        if not sku.sellable_on(channel):
            where = ", ".join(sorted(c.name for c in sku.exclusive_channels))
            if reported:
                violations.append(
                    _Violation(
                        ViolationKind.EXCLUSIVE_SKU,
                        f"line:{line_no}:exclusive",
                        f"{sku.code} is exclusive to {where}; sold on {channel.name}.",
                        sku_id=sku.sku_id,
                    )
                )
            else:
                problems.append(
                    Problem(
                        OrderErrorCode.CHANNEL_EXCLUSIVE,
                        f"{sku.code} is sold only on {where}.",
                        at,
                    )
                )
                continue
        price = line.unit_price if line.unit_price is not None else sku.default_price
        band = sku.band
        if band is not None and not band.floor <= price <= band.ceiling:
            below = price < band.floor
            limit = band.floor if below else band.ceiling
            words = "below the floor" if below else "above the ceiling"
            if reported:
                kind = (
                    ViolationKind.PRICE_BELOW_FLOOR if below else ViolationKind.PRICE_ABOVE_CEILING
                )
                violations.append(
                    _Violation(
                        kind,
                        f"line:{line_no}:{kind.value}",
                        f"{sku.code} sold at {price} on {channel.name}, {words} {limit}.",
                        sku_id=sku.sku_id,
                        expected=limit,
                        actual=price,
                    )
                )
            else:
                problems.append(
                    Problem(
                        OrderErrorCode.PRICE_BELOW_FLOOR
                        if below
                        else OrderErrorCode.PRICE_ABOVE_CEILING,
                        f"{price} is {words} of {sku.code} on {channel.name} ({limit}).",
                        (*at, "unitPrice"),
                    )
                )
                continue
        priced_line = _PricedLine(line, sku, price)
        if max(priced_line.subtotal, priced_line.cost) > MAX_LINE_AMOUNT:
            problems.append(
                Problem(
                    OrderErrorCode.INVALID,
                    f"A line comes to at most {MAX_LINE_AMOUNT:,} {sku.currency}: order less.",
                    (*at, "quantity"),
                )
            )
            continue
        priced.append(priced_line)
    if not problems and sum(line.subtotal for line in priced) > MAX_SUBTOTAL:
        problems.append(
            Problem(
                OrderErrorCode.INVALID,
                f"An order comes to at most {MAX_SUBTOTAL:,} {currency}: split it.",
                ("lines",),
            )
        )
    if problems:
        raise DomainError(problems)
    assert currency is not None  # at least one line, each priced
    return priced, currency, violations


async def _plan(
    session: AsyncSession,
    principal: Principal,
    draft: OrderDraft,
    store_id: int | None,
    now: datetime,
) -> _Plan:
    reported = is_partner_reported(principal)
    region = draft.delivery_region_code
    store, outside, store_outside = None, False, False
    if store_id is not None:
        store, outside, store_outside = await _order_store(
            session, principal, draft, store_id, region
        )
    customer_id = await _order_customer(session, principal, draft, now)
    lines, currency, violations = await _priced_lines(session, draft, reported=reported)
    # The seller: the store's partner; a partner's own store-less sale (a marketplace shop
    # shipping), the partner; else HQ.
    partner_id = store.partner_id if store is not None else principal.partner_id
    if reported and partner_id is not None:
        sale_region = region if region is not None else (store.region_code if store else None)
        if store is None and sale_region is not None:
            outside = bool(await session.scalar(select(outside_territory(partner_id, sale_region))))
        if outside:
            violations.append(
                _Violation(
                    ViolationKind.CROSS_REGION_SALE,
                    "cross_region_sale",
                    f"Sold into region {sale_region}, outside the partner's territories.",
                    region_code=sale_region,
                )
            )
    return _Plan(store, store_outside, customer_id, partner_id, lines, currency, violations)


# --- money ---------------------------------------------------------------------------------


def allocate(total_cents: int, weights: Sequence[int]) -> list[int]:
    """Split ``total_cents`` over ``weights`` (line subtotals in cents) in proportion, to the
    cent, by largest remainder: the shares add up to the total exactly, and none exceeds its
    weight when the total does not exceed their sum. Ties go to the earlier line."""
    weight_sum = sum(weights)
    if total_cents < 0 or any(w < 0 for w in weights):
        raise ValueError("allocate() takes amounts of 0 or more")
    if total_cents == 0 or weight_sum == 0:
        if total_cents and not weight_sum:
            raise ValueError("nothing to allocate a discount to")
        return [0] * len(weights)
    if total_cents > weight_sum:
        raise ValueError("a discount larger than what it discounts")
    shares = [total_cents * w // weight_sum for w in weights]
    remainders = [total_cents * w % weight_sum for w in weights]
    left = total_cents - sum(shares)
    for index in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        shares[index] += 1
    return shares


def _line_discounts(
    lines: Sequence[_PricedLine],
    used: Sequence[tuple[Any, Any, Decimal]],
    points_discount: Decimal,
) -> list[int]:
    """Each line's share of the order's discounts, in cents. An exchange coupon (兑换) gave one
    unit of its SKU free, priced at the cheapest line of it: that line carries its discount
    whole, so refunding the gift returns nothing for it. Every other discount is spread over
    what is left of each line, in proportion. The shares add up to the discounts exactly and
    none exceeds its line."""
    room = [_cents(line.subtotal) for line in lines]
    shares = [0] * len(lines)

    def take(cents: int, among: Sequence[int]) -> None:
        for index, share in zip(among, allocate(cents, [room[i] for i in among]), strict=True):
            shares[index] += share
            room[index] -= share

    spread = _cents(points_discount)
    for _, template, discount in used:
        cents = _cents(discount)
        gift = [
            i
            for i, line in enumerate(lines)
            if template.kind is CouponKind.EXCHANGE and line.sku.code == template.exchange_sku
        ]
        # The cheapest line of the SKU (what discount_for priced it at) that still holds it;
        # two exchange coupons for one SKU may need two lines, or all of them.
        whole = sorted((i for i in gift if room[i] >= cents), key=lambda i: lines[i].unit_price)
        if whole:
            take(cents, whole[:1])
        elif sum(room[i] for i in gift) >= cents > 0:
            take(cents, gift)
        else:
            spread += cents
    take(spread, range(len(lines)))
    return shares


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def _yuan(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(_CENT)


# --- placing an order ----------------------------------------------------------------------


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _insert_order(session: AsyncSession, values: Mapping[str, Any], *, pickup: bool) -> Order:
    """INSERT the order. A pickup order draws a pickup code unused among the store's open
    pickups; a clash with one drawn concurrently (the unique open-code index) draws again."""
    for _ in range(_PICKUP_CODE_TRIES if pickup else 1):
        code = new_pickup_code() if pickup else None
        order = (
            await session.execute(
                _insert(session)(Order)
                .values(**values, pickup_code=code)
                .on_conflict_do_nothing()
                .returning(Order)
            )
        ).scalar_one_or_none()
        if order is not None:
            return order
    # The idempotency key is checked under its lock first, so only codes can clash.
    raise RuntimeError("could not draw an unused pickup code")


async def _move_stock(
    session: AsyncSession,
    order: Order,
    plan: _Plan,
    principal: Principal,
    *,
    actor: str,
    now: datetime,
) -> None:
    """A pickup reserves at the store; a counter sale, or a delivery from a named location,
    deducts; a delivery from nowhere in particular (a marketplace shop) moves no stock."""
    if plan.store is None:
        return
    items: dict[int, int] = {}
    for line in plan.lines:
        items[line.sku.sku_id] = items.get(line.sku.sku_id, 0) + line.draft.quantity
    pickup = order.fulfillment is Fulfillment.PICKUP
    move = inventory.reserve if pickup else inventory.deduct
    try:
        await move(
            session,
            plan.store.id,
            items=dict(sorted(items.items())),
            source_type=ORDER_SOURCE,
            source_id=str(order.id),
            reason=f"order {order.id}: {'pickup' if pickup else 'sale'}",
            actor=actor,
            now=now,
        )
    except inventory.InsufficientStock as short:
        index = next(i for i, line in enumerate(plan.lines) if line.sku.sku_id == short.sku_id)
        code = plan.lines[index].sku.code
        # Staff see the count; a member is not told the store's stock (one order at a time
        # would otherwise read it off exactly).
        message = (
            f"Not enough {code} at this store."
            if principal.is_member
            else f"Only {short.available} of {code} available at this store; "
            f"{short.requested} ordered."
        )
        raise DomainError.one(
            OrderErrorCode.INSUFFICIENT_STOCK, message, "lines", str(index)
        ) from None


async def _use_coupons(
    session: AsyncSession,
    principal: Principal,
    order: Order,
    plan: _Plan,
    codes: Sequence[str],
    customer_id: int,
    now: datetime,
) -> list[tuple[Any, Any, Decimal]]:
    """Redeem the coupons (exactly once each) and price them in sequence, each on what the
    ones before left: [(coupon, template, discount)]."""
    online = order.channel is not SalesChannel.STORE_POS and (
        order.fulfillment is not Fulfillment.IN_STORE
    )
    try:
        used = await coupon_redemption.redeem_for_order(
            session,
            principal,
            codes,
            customer_id=customer_id,
            use=CouponChannel.ONLINE if online else CouponChannel.OFFLINE,
            store_id=plan.store.id if plan.store else None,
            partner_id=plan.store.partner_id if plan.store else None,
            order_ref=str(order.id),
            now=now,
            store_region=plan.store.region_code if plan.store else None,
            outside_territory=plan.store_outside,
        )
        coupon_discounts.check_stacking([template for _, template in used])
    except DomainError as error:
        raise _translated(error, OrderErrorCode.COUPON_INVALID) from None
    lines = [
        coupon_discounts.OrderLine(
            sku=line.sku.code, unit_price=line.unit_price, quantity=line.draft.quantity
        )
        for line in plan.lines
    ]
    remaining = order.subtotal
    priced = []
    for index, (coupon, template) in enumerate(used):
        at = ("couponCodes", str(index))
        if template.currency != order.currency:
            raise DomainError.one(
                OrderErrorCode.CURRENCY_MISMATCH,
                f"This coupon is in {template.currency}; the order is in {order.currency}.",
                *at,
            )
        discount = coupon_discounts.discount_for(template, remaining, lines)
        if discount <= 0:
            raise DomainError.one(
                OrderErrorCode.COUPON_INVALID,
                f"{template.name!r} does not apply to this order.",
                *at,
            )
        remaining -= discount
        priced.append((coupon, template, discount))
    return priced


async def _use_points(
    session: AsyncSession,
    order: Order,
    points: int,
    customer_id: int,
    settings: OrderSettings,
    *,
    own: bool,
    actor: str,
    now: datetime,
) -> Decimal:
    """Pay with points (积分抵现): ``points_per_yuan`` points a yuan, at most
    ``points_max_share_percent`` of what is left after coupons. Returns the yuan paid."""
    paid = _yuan(points * 100 // settings.points_per_yuan)
    due = order.subtotal - order.coupon_discount
    share = settings.points_max_share_percent
    cap = (due * share / 100).quantize(_CENT, rounding=ROUND_DOWN)
    if paid > cap:
        most = _cents(cap) * settings.points_per_yuan // 100
        raise DomainError.one(
            OrderErrorCode.POINTS_LIMIT,
            f"Points pay at most {share}% of the order after coupons: {cap} here ({most} points).",
            "pointsToUse",
        )
    try:
        await loyalty_spending.redeem(
            session,
            customer_id,
            points,
            source_type=ORDER_SOURCE,
            source_id=str(order.id),
            reason=f"paid order {order.id}",
            actor=actor,
            now=now,
        )
    except DomainError as error:
        problem = error.problems[0]
        if problem.code is loyalty_errors.PointsErrorCode.INSUFFICIENT_POINTS:
            # The balance is the member's to read; staff are told only that it is short.
            message = problem.message if own else "The customer has not enough points for this."
            raise DomainError.one(
                OrderErrorCode.INSUFFICIENT_POINTS, message, "pointsToUse"
            ) from None
        raise DomainError.one(OrderErrorCode.INVALID, problem.message, "pointsToUse") from None
    return paid


async def create_order(
    session: AsyncSession,
    principal: Principal,
    draft: OrderDraft,
    *,
    wiring: OrdersWiring,
    now: datetime,
) -> OrderResult:
    """Place an order (``orderCreate``); see the module docstring for the steps. The caller
    owns the transaction: run it in its own ``Database.transaction()``."""
    settings = wiring.settings
    store_id = draft.store_id
    if store_id is None and _store_bound(principal):
        store_id = principal.store_id
    _check_shape(principal, draft, store_id, settings, now)

    digest = request_digest(draft, store_id)
    scope = idempotency_scope(principal)
    if draft.idempotency_key is not None:
        # Concurrent retries queue here; the unique (scope, key) is the backstop.
        await advisory_lock(session, f"order-key:{scope}:{draft.idempotency_key}")
        first = await session.scalar(
            select(Order).where(
                Order.idempotency_scope == scope,
                Order.idempotency_key == draft.idempotency_key,
            )
        )
        if first is not None:
            # The first order is returned only if the caller may still see it (a store moved
            # to another partner, a member merged away): else the key is simply taken.
            visible = await session.scalar(
                orders_query(principal).with_only_columns(Order.id).where(Order.id == first.id)
            )
            if first.request_digest != digest or visible is None:
                raise DomainError.one(
                    OrderErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "This idempotency key was used for a different order.",
                    "idempotencyKey",
                )
            return OrderResult(first, created=False)

    plan = await _plan(session, principal, draft, store_id, now)
    customer_id = await _lock_order_customer(session, principal, draft, plan, now)
    pickup = draft.fulfillment is Fulfillment.PICKUP
    subtotal = sum((line.subtotal for line in plan.lines), Decimal("0.00"))
    order = await _insert_order(
        session,
        {
            "channel": draft.channel,
            "fulfillment": draft.fulfillment,
            "status": OrderStatus.PLACED if pickup else OrderStatus.COMPLETED,
            # Locked already (above): the foreign key's key-share lock waits for nobody.
            "customer_id": customer_id,
            "partner_id": plan.partner_id,
            "store_id": plan.store.id if plan.store else None,
            "reported_by_partner": is_partner_reported(principal),
            "taken_by": None if principal.is_member else principal.subject,
            "delivery_region_code": draft.delivery_region_code,
            "currency": plan.currency,
            "subtotal": subtotal,
            "coupon_discount": Decimal("0.00"),
            "points_used": 0,
            "points_discount": Decimal("0.00"),
            "total": subtotal,
            "cost_total": sum((line.cost for line in plan.lines), Decimal("0.00")),
            "idempotency_scope": scope if draft.idempotency_key is not None else None,
            "idempotency_key": draft.idempotency_key,
            "request_digest": digest,
            "pickup_expires_at": now + timedelta(hours=settings.pickup_window_hours)
            if pickup
            else None,
            "placed_at": draft.placed_at or now,
            "completed_at": None if pickup else now,
            "created_at": now,
            "updated_at": now,
        },
        pickup=pickup,
    )
    actor = principal.subject
    await _move_stock(session, order, plan, principal, actor=actor, now=now)

    used: list[tuple[Any, Any, Decimal]] = []
    if customer_id is not None:
        if draft.coupon_codes:
            used = await _use_coupons(
                session, principal, order, plan, draft.coupon_codes, customer_id, now
            )
            order.coupon_discount = sum((d for _, _, d in used), Decimal("0.00"))
        if draft.points_to_use:
            order.points_discount = await _use_points(
                session,
                order,
                draft.points_to_use,
                customer_id,
                settings,
                own=principal.is_member,
                actor=actor,
                now=now,
            )
            order.points_used = draft.points_to_use
    discount = order.coupon_discount + order.points_discount
    order.total = subtotal - discount
    order.updated_at = now

    shares = _line_discounts(plan.lines, used, order.points_discount)
    lines = [
        OrderLine(
            order_id=order.id,
            line_no=index + 1,
            sku_id=line.sku.sku_id,
            sku_code=line.sku.code,
            product_id=line.sku.product_id,
            quantity=line.draft.quantity,
            unit_price=line.unit_price,
            unit_cost=line.sku.cost_price,
            subtotal=line.subtotal,
            discount=_yuan(share),
            total=line.subtotal - _yuan(share),
            refunded_quantity=0,
        )
        for index, (line, share) in enumerate(zip(plan.lines, shares, strict=True))
    ]
    session.add_all(lines)
    session.add_all(
        OrderCoupon(
            order_id=order.id,
            coupon_id=coupon.id,
            template_id=template.id,
            code=coupon.code,
            discount=discount_given,
        )
        for coupon, template, discount_given in used
    )
    session.add(
        OrderEvent(
            order_id=order.id,
            status=order.status,
            note="placed" if pickup else "sold",
            actor=actor,
            created_at=now,
        )
    )
    await session.flush()
    for found in plan.violations:
        await record_violation(
            session,
            kind=found.kind,
            source_key=f"order:{order.id}:{found.key}",
            detail=found.detail,
            now=now,
            partner_id=order.partner_id,
            store_id=order.store_id,
            channel=order.channel,
            order_id=order.id,
            sku_id=found.sku_id,
            region_code=found.region_code,
            expected_amount=found.expected,
            actual_amount=found.actual,
        )
    if not pickup:
        # Sold and handed over (or shipped): points and level spend now; a pickup order
        # earns when it is picked up (api/orders/lifecycle.py).
        await complete_sale(
            session, order, lines, actor=actor, now=now, policy=settings.points_policy
        )
    await wiring.changed(session, OrderChange.CREATED, [order.id], [order.customer_id], now)
    publish(session, order, "created")
    return OrderResult(order, created=True)


def publish(session: AsyncSession, order: Order, event: str) -> None:
    """Tell the order's customer and store subscribers (after the commit, or never)."""
    payload = {"orderId": order.id, "status": order.status.value, "event": event}
    if order.customer_id is not None:
        events.emit(session, events.customer_orders_channel(order.customer_id), payload)
    if order.store_id is not None:
        events.emit(session, events.store_orders_channel(order.store_id), payload)


async def complete_sale(
    session: AsyncSession,
    order: Order,
    lines: Sequence[OrderLine],
    *,
    actor: str | None,
    now: datetime,
    policy: PointsPolicy,
) -> None:
    """A sale is done (handed over, shipped, picked up): the customer earns points for what
    they paid on each line, by the earning rules (pending for the return window), and the
    spend counts toward their member level. Both are idempotent by the order's id, so a retry
    adds nothing. Sets ``order.points_earned``. An order without a customer earns nothing."""
    if order.customer_id is None:
        return
    level_id = await loyalty_balances.customer_level_id(session, order.customer_id)
    purchase = Purchase(
        source_id=str(order.id),
        channel=order.channel.value,
        lines=[PurchaseLine(sku=line.sku_code, amount=line.total) for line in lines],
        store_id=order.store_id,
        level_id=level_id,
    )
    try:
        entry = await loyalty_earning.earn_for_purchase(
            session, order.customer_id, purchase, now, actor=actor, policy=policy
        )
        await record_spend(
            session,
            order.customer_id,
            order.total,
            source_type=ORDER_SOURCE,
            source_id=str(order.id),
            at=order.placed_at,
            now=now,
        )
    except DomainError as error:
        # Orders' limits keep within loyalty's and levels' (MAX_LINE_AMOUNT): this is a
        # backstop so their codes never reach an order's payload.
        raise _translated(error, OrderErrorCode.INVALID) from None
    if entry is not None:
        order.points_earned = entry.amount + entry.pending_delta - entry.debt_delta
        order.updated_at = now
        await session.flush()


# --- reads ---------------------------------------------------------------------------------

ORDER_KEYSET = (Order.id,)


def orders_query(principal: Principal, where: OrderFilter | None = None) -> Select[Any]:
    """Orders the principal may see: HQ all; a partner its stores' and its own; a store
    principal its store's; a member their own."""
    stmt = restrict(select(Order), Order, principal)
    if where is None:
        return stmt
    if where.statuses:
        stmt = stmt.where(Order.status.in_(where.statuses))
    if where.channels:
        stmt = stmt.where(Order.channel.in_(where.channels))
    if where.fulfillments:
        stmt = stmt.where(Order.fulfillment.in_(where.fulfillments))
    if where.store_ids:
        stmt = stmt.where(Order.store_id.in_(where.store_ids))
    if where.customer_ids:
        stmt = stmt.where(Order.customer_id.in_(where.customer_ids))
    if where.placed_from is not None:
        stmt = stmt.where(Order.placed_at >= where.placed_from)
    if where.placed_to is not None:
        stmt = stmt.where(Order.placed_at < where.placed_to)
    return stmt


async def orders_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Order]:
    if not ids:
        return {}
    rows = await session.scalars(orders_query(principal).where(Order.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def _children(
    session: AsyncSession, model: Any, order_ids: Sequence[int], *order_by: Any
) -> dict[int, list[Any]]:
    """Rows of ``model`` per order. The orders were read through the principal's scope, so
    their lines, coupons and history need none of their own."""
    found: dict[int, list[Any]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    rows = await session.scalars(
        select(model).where(model.order_id.in_(set(order_ids))).order_by(model.order_id, *order_by)
    )
    for row in rows:
        found[row.order_id].append(row)
    return found


async def lines_of(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, list[OrderLine]]:
    return await _children(session, OrderLine, order_ids, OrderLine.line_no)


async def coupons_of(
    session: AsyncSession, order_ids: Sequence[int]
) -> dict[int, list[OrderCoupon]]:
    return await _children(session, OrderCoupon, order_ids, OrderCoupon.coupon_id)


async def events_of(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, list[OrderEvent]]:
    return await _children(session, OrderEvent, order_ids, OrderEvent.id)


# --- merge ---------------------------------------------------------------------------------


class OrderMergeStep:
    """Moves the sources' orders to the target: one person, one order history (and the
    target's spend, points and coupons already follow through their own steps)."""

    name = "orders"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        moving = await plan.session.scalar(
            select(func.count()).select_from(Order).where(Order.customer_id.in_(plan.source_ids))
        )
        if not moving:
            return [], []
        plural = "s" if moving != 1 else ""
        return [MergeMove("orders", moving, f"{moving} order{plural}")], []

    async def apply(self, plan: MergePlan) -> None:
        await plan.session.execute(
            update(Order)
            .where(Order.customer_id.in_(plan.source_ids))
            .values(customer_id=plan.target_id, updated_at=plan.now),
            execution_options={"synchronize_session": False},
        )


__all__ = [
    "MEMBER_CHANNELS",
    "ORDER_KEYSET",
    "ORDER_SOURCE",
    "LineDraft",
    "OrderDraft",
    "OrderErrorCode",
    "OrderFilter",
    "OrderResult",
    "OrderSettings",
    "allocate",
    "complete_sale",
    "coupons_of",
    "create_order",
    "events_of",
    "idempotency_scope",
    "is_partner_reported",
    "lines_of",
    "orders_by_id",
    "orders_query",
    "publish",
    "request_digest",
]
