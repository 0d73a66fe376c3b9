"""Placing an order (``orderCreate``, 全渠道订单): what an order does upstream, in one place.

``create_order`` does everything an order means in the caller's one transaction, so a
failure anywhere (a coupon refused after the stock was reserved) leaves nothing behind:

1. the request's shape (``validation``), then (with an idempotency key) the first order for
   a retry, if the caller may still see it (the key's scope is the caller's store for
   store-bound callers, and the digest covers the store the order resolves to);
2. who may place it: HQ any order; a member their own, online; store staff at their store,
   at the counter or a pickup; a partner at its own stores (another partner's store is not
   found, exactly like a missing one);
3. store, customer (by id, or identities upserted), SKUs and prices against the channel's
   band (``planning``): first-party channels refuse a price outside the band or a
   channel-exclusive SKU (线上专供款); a partner-reported sale is accepted and recorded as a
   channel violation (乱价), as is one outside the partner's territories (窜货);
4. the customer, found or created by identities and locked (points and coupons only for
   the member themself or a customer the caller sees), then the order row, stock (a pickup
   reserves, a counter or located delivery sale deducts: inventory), coupons and points
   (``discounts``: coupons, loyalty), lines with their share of the discounts, the coupons
   used, the history, the violations (conflicts), and for a completed sale its points and
   spend (``completion``);
5. then the downstream reactions of ``wiring.changed`` (``api/wiring.py``: touchpoints,
   metrics and attribution, referral rewards), and the subscribers are told.

Lock order, shared with the pickup lifecycle and customer merges (which lock customers, then
their orders): the idempotency key's advisory lock, the live customer (FOR UPDATE, as points
take it), the order row, stock rows (ascending SKU), then coupon_codes. Locking the customer before
inserting the order means the order's foreign key waits for nobody.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.conflicts.service import record_violation
from api.coupons import codes as coupon_codes
from api.db import advisory_lock
from api.errors import DomainError
from api.inventory import movements
from api.orders.completion import complete_sale
from api.orders.discounts import line_discounts, use_coupons, use_points, yuan
from api.orders.drafts import OrderDraft
from api.orders.errors import OrderErrorCode
from api.orders.models import (
    ORDER_SOURCE,
    Fulfillment,
    Order,
    OrderCoupon,
    OrderEvent,
    OrderLine,
    OrderStatus,
)
from api.orders.notify import publish
from api.orders.pickup_codes import new_pickup_code
from api.orders.planning import Plan, lock_order_customer, plan_order
from api.orders.queries import orders_query
from api.orders.reactions import OrderChange, OrderSettings, OrdersWiring
from api.orders.validation import (
    CENT,
    check_shape,
    idempotency_scope,
    is_partner_reported,
    store_bound,
)

PICKUP_CODE_TRIES = 8


@dataclass(frozen=True, slots=True)
class OrderResult:
    order: Order
    created: bool  # False: a retry with the same idempotency key returned the first order


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
                str(line.unit_price.quantize(CENT)) if line.unit_price is not None else None,
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


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _insert_order(session: AsyncSession, values: Mapping[str, Any], *, pickup: bool) -> Order:
    """INSERT the order. A pickup order draws a pickup code unused among the store's open
    pickups; a clash with one drawn concurrently (the unique open-code index) draws again."""
    for _ in range(PICKUP_CODE_TRIES if pickup else 1):
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
    plan: Plan,
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
    move = movements.reserve if pickup else movements.deduct
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
    except movements.InsufficientStock as short:
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
    if store_id is None and store_bound(principal):
        store_id = principal.store_id
    check_shape(principal, draft, store_id, settings, now)

    digest = request_digest(draft, store_id)
    scope = idempotency_scope(principal)
    if draft.idempotency_key is not None:
        first = await _first_order(session, principal, draft.idempotency_key, scope, digest)
        if first is not None:
            return first

    plan = await plan_order(session, principal, draft, store_id, now)
    customer_id = await lock_order_customer(session, principal, draft, plan, now)
    pickup = draft.fulfillment is Fulfillment.PICKUP
    subtotal = sum((line.subtotal for line in plan.lines), Decimal("0.00"))
    order = await _insert_order(
        session,
        _order_values(principal, draft, plan, customer_id, subtotal, scope, digest, settings, now),
        pickup=pickup,
    )
    actor = principal.subject
    await _move_stock(session, order, plan, principal, actor=actor, now=now)

    used: list[tuple[Any, Any, Decimal]] = []
    if customer_id is not None:
        used = await _pay(session, principal, order, plan, draft, customer_id, settings, now)
    discount = order.coupon_discount + order.points_discount
    order.total = subtotal - discount
    order.updated_at = now

    lines = _add_lines(session, order, plan, used, actor=actor, pickup=pickup, now=now)
    await session.flush()
    await _record_violations(session, order, plan, now)
    if not pickup:
        # Sold and handed over (or shipped): points and level spend now; a pickup order
        # earns when it is picked up (api/orders/lifecycle/pickup.py).
        await complete_sale(
            session, order, lines, actor=actor, now=now, policy=settings.points_policy
        )
    await wiring.changed(session, OrderChange.CREATED, [order.id], [order.customer_id], now)
    publish(session, order, "created")
    return OrderResult(order, created=True)


async def _first_order(
    session: AsyncSession, principal: Principal, key: str, scope: str, digest: str
) -> OrderResult | None:
    """The order a retry with this idempotency key placed first, if any."""
    # Concurrent retries queue here; the unique (scope, key) is the backstop.
    await advisory_lock(session, f"order-key:{scope}:{key}")
    first = await session.scalar(
        select(Order).where(
            Order.idempotency_scope == scope,
            Order.idempotency_key == key,
        )
    )
    if first is None:
        return None
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


def _order_values(
    principal: Principal,
    draft: OrderDraft,
    plan: Plan,
    customer_id: int | None,
    subtotal: Decimal,
    scope: str,
    digest: str,
    settings: OrderSettings,
    now: datetime,
) -> dict[str, Any]:
    """The order row as placed, before its discounts."""
    pickup = draft.fulfillment is Fulfillment.PICKUP
    return {
        "channel": draft.channel,
        "fulfillment": draft.fulfillment,
        "status": OrderStatus.PLACED if pickup else OrderStatus.COMPLETED,
        # Locked already (lock_order_customer): the foreign key's key-share lock waits for
        # nobody.
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
    }


async def _pay(
    session: AsyncSession,
    principal: Principal,
    order: Order,
    plan: Plan,
    draft: OrderDraft,
    customer_id: int,
    settings: OrderSettings,
    now: datetime,
) -> list[tuple[Any, Any, Decimal]]:
    """Redeem the coupons and spend the points; the order's discounts set, the coupons used
    returned: [(coupon, template, discount)]."""
    used: list[tuple[Any, Any, Decimal]] = []
    if draft.coupon_codes:
        used = await use_coupons(
            session, principal, order, plan, draft.coupon_codes, customer_id, now
        )
        order.coupon_discount = sum((d for _, _, d in used), Decimal("0.00"))
    if draft.points_to_use:
        order.points_discount = await use_points(
            session,
            order,
            draft.points_to_use,
            customer_id,
            settings,
            own=principal.is_member,
            actor=principal.subject,
            now=now,
        )
        order.points_used = draft.points_to_use
    return used


def _add_lines(
    session: AsyncSession,
    order: Order,
    plan: Plan,
    used: Sequence[tuple[Any, Any, Decimal]],
    *,
    actor: str,
    pickup: bool,
    now: datetime,
) -> list[OrderLine]:
    """The order's lines with their share of the discounts, the coupons it used and its
    first history entry (added to the session, flushed by the caller)."""
    shares = line_discounts(plan.lines, used, order.points_discount)
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
            discount=yuan(share),
            total=line.subtotal - yuan(share),
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
    return lines


async def _record_violations(
    session: AsyncSession, order: Order, plan: Plan, now: datetime
) -> None:
    """The violations the plan found, now that the order has an id."""
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
