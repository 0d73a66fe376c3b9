"""The checks of an order that read: the store (in the caller's reach, able to take it), the
customer (found, or created from identities, and locked), each line's SKU and price against
the channel's band, and the violations a partner-reported sale records instead of a refusal.
What they decide is a ``Plan``, before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog import queries as catalog
from api.catalog.models import SalesChannel
from api.conflicts.models import ViolationKind
from api.conflicts.service import outside_territory
from api.customers import identities as customer_identities
from api.customers import locks as customer_locks
from api.customers import lookup as customer_lookup
from api.customers import upsert as customer_upsert
from api.customers.models import Customer
from api.customers.profile import CustomerDraft
from api.errors import DomainError, Problem
from api.orders.drafts import LineDraft, OrderDraft
from api.orders.errors import OrderErrorCode, translated
from api.orders.models import OPEN_PICKUP, Fulfillment, Order
from api.orders.validation import (
    CENT,
    MAX_LINE_AMOUNT,
    MAX_OPEN_PICKUPS,
    MAX_SUBTOTAL,
    is_partner_reported,
    store_in_reach,
)
from api.partners.models import Store, StoreKind, StoreStatus


@dataclass(slots=True)
class PricedLine:
    draft: LineDraft
    sku: catalog.PricedSku
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        return (self.unit_price * self.draft.quantity).quantize(CENT)

    @property
    def cost(self) -> Decimal:
        return (self.sku.cost_price * self.draft.quantity).quantize(CENT)


@dataclass(slots=True)
class Violation:
    """A violation found before the order exists; recorded once it has an id."""

    kind: ViolationKind
    key: str  # the part of the source key after "order:<id>:"
    detail: str
    sku_id: int | None = None
    region_code: str | None = None
    expected: Decimal | None = None
    actual: Decimal | None = None


@dataclass(slots=True)
class Plan:
    """What the checks decided, before anything is written."""

    store: Store | None
    # The store lies outside its partner's territories: coupons used there are 窜货.
    store_outside: bool
    customer_id: int | None
    partner_id: int | None
    lines: list[PricedLine]
    currency: str
    violations: list[Violation] = field(default_factory=list)


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
    if found is None or not store_in_reach(principal, found[0]):
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
        assert principal.customer_id is not None  # validation.check_shape
        own = await customer_locks.resolve_customer_id(session, principal.customer_id)
        if own is None:
            raise DomainError.one(OrderErrorCode.NOT_FOUND, "No such customer.", "customerId")
        asked = draft.customer_id
        if asked is not None and asked != principal.customer_id:
            # Any other id is refused alike, existing or not: nothing is told about it. An
            # old (merged) id of the member's names the member.
            if await customer_locks.resolve_customer_id(session, asked) != own:
                raise DomainError.one(
                    OrderErrorCode.FORBIDDEN,
                    "Members place orders for themselves.",
                    "customerId",
                )
        return own
    if draft.customer_id is not None:
        try:
            found = await customer_lookup.get_customer(session, principal, draft.customer_id)
        except DomainError:
            raise DomainError.one(
                OrderErrorCode.NOT_FOUND, "No such customer.", "customerId"
            ) from None
        return found.id
    if draft.customer is not None:
        # Checked now, found or created after the stock (``_upsert_customer``).
        try:
            customer_identities.normalize_identities(draft.customer.identities)
        except DomainError as error:
            raise translated(error, OrderErrorCode.INVALID, "customer") from None
    return None


async def _upsert_customer(
    session: AsyncSession, principal: Principal, draft: OrderDraft, now: datetime
) -> int:
    """The person the identities name, created if nobody yet (the upsert locks them)."""
    profile = draft.customer
    assert profile is not None
    try:
        result = await customer_upsert.upsert_customer(
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
        raise translated(error, OrderErrorCode.INVALID, "customer", keep=["REQUIRED"]) from None
    return result.customer.id


async def lock_order_customer(
    session: AsyncSession,
    principal: Principal,
    draft: OrderDraft,
    plan: Plan,
    now: datetime,
) -> int | None:
    """Find (or create) and lock the order's live customer, before any stock is touched (the
    lock order in api/orders/placing.py). A merge that committed meanwhile has moved the
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
    locked = await customer_locks.lock_customer(session, customer_id)
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
) -> tuple[list[PricedLine], str, list[Violation]]:
    """Each line's SKU and price, checked against the channel: refused for a first-party
    order, recorded as violations for a partner-reported one. Every refusal at once."""
    ids = [line.sku_id for line in draft.lines if line.sku_id is not None]
    codes = [line.sku_code.strip() for line in draft.lines if line.sku_code is not None]
    found = await catalog.skus_for_order(session, draft.channel, ids=ids, codes=codes)
    by_id = {sku.sku_id: sku for sku in found}
    by_code = {sku.code: sku for sku in found}
    channel = draft.channel
    problems: list[Problem] = []
    violations: list[Violation] = []
    priced: list[PricedLine] = []
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
        priced_line = _price_line(
            line, index, sku, channel, reported=reported, problems=problems, violations=violations
        )
        if priced_line is not None:
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


def _price_line(
    line: LineDraft,
    index: int,
    sku: catalog.PricedSku,
    channel: SalesChannel,
    *,
    reported: bool,
    problems: list[Problem],
    violations: list[Violation],
) -> PricedLine | None:
    """One line's SKU and price against the channel: None with its refusal added to
    ``problems``, else the priced line (what a partner-reported sale breaks is added to
    ``violations``)."""
    at = ("lines", str(index))
    line_no = index + 1
    if not sku.sellable_on(channel):
        where = ", ".join(sorted(c.name for c in sku.exclusive_channels))
        if reported:
            violations.append(
                Violation(
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
            return None
    price = line.unit_price if line.unit_price is not None else sku.default_price
    band = sku.band
    if band is not None and not band.floor <= price <= band.ceiling:
        below = price < band.floor
        limit = band.floor if below else band.ceiling
        words = "below the floor" if below else "above the ceiling"
        if reported:
            kind = ViolationKind.PRICE_BELOW_FLOOR if below else ViolationKind.PRICE_ABOVE_CEILING
            violations.append(
                Violation(
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
            return None
    priced_line = PricedLine(line, sku, price)
    if max(priced_line.subtotal, priced_line.cost) > MAX_LINE_AMOUNT:
        problems.append(
            Problem(
                OrderErrorCode.INVALID,
                f"A line comes to at most {MAX_LINE_AMOUNT:,} {sku.currency}: order less.",
                (*at, "quantity"),
            )
        )
        return None
    return priced_line


async def plan_order(
    session: AsyncSession,
    principal: Principal,
    draft: OrderDraft,
    store_id: int | None,
    now: datetime,
) -> Plan:
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
                Violation(
                    ViolationKind.CROSS_REGION_SALE,
                    "cross_region_sale",
                    f"Sold into region {sale_region}, outside the partner's territories.",
                    region_code=sale_region,
                )
            )
    return Plan(store, store_outside, customer_id, partner_id, lines, currency, violations)
