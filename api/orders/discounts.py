"""What an order's coupons and points take off, and each line's share of it.

Coupons are redeemed (exactly once each) and priced in sequence, each on what the ones
before left; points pay at most a share of what is left after them. The discounts are then
spread over the lines to the cent (``allocate``), so a refund of a line gives back what was
paid for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.catalog.models import SalesChannel
from api.coupons import discounts as coupon_discounts
from api.coupons import redemption as coupon_redemption
from api.coupons.models import CouponChannel, CouponKind
from api.errors import DomainError
from api.loyalty import errors as loyalty_errors
from api.loyalty import spending as loyalty_spending
from api.orders.errors import OrderErrorCode, translated
from api.orders.models import ORDER_SOURCE, Fulfillment, Order
from api.orders.planning import Plan, PricedLine
from api.orders.reactions import OrderSettings
from api.orders.validation import CENT


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


def line_discounts(
    lines: Sequence[PricedLine],
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


def yuan(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


async def use_coupons(
    session: AsyncSession,
    principal: Principal,
    order: Order,
    plan: Plan,
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
        raise translated(error, OrderErrorCode.COUPON_INVALID) from None
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


async def use_points(
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
    paid = yuan(points * 100 // settings.points_per_yuan)
    due = order.subtotal - order.coupon_discount
    share = settings.points_max_share_percent
    cap = (due * share / 100).quantize(CENT, rounding=ROUND_DOWN)
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
