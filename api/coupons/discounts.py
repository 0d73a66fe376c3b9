"""What coupons take off an order, and which may be used together (used by orders)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from api.coupons.errors import CouponErrorCode
from api.coupons.models import CouponKind, CouponTemplate, Stacking
from api.errors import DomainError

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class OrderLine:
    """What ``discount_for`` needs of an order line (兑换 coupons take one unit of a SKU)."""

    sku: str
    unit_price: Decimal
    quantity: int


def discount_for(
    template: CouponTemplate,
    subtotal: Decimal,
    lines: Sequence[OrderLine] = (),
) -> Decimal:
    """The discount a template gives on an order of ``subtotal`` (and ``lines``), in cents.

    Zero when it does not apply (threshold not met, SKU not bought); never more than the
    subtotal, so an order never goes below zero.
    """
    if subtotal <= 0:
        return Decimal("0.00")
    kind = template.kind
    threshold = template.threshold_amount
    if threshold is not None and subtotal < threshold:
        return Decimal("0.00")
    if kind is CouponKind.AMOUNT_OFF_THRESHOLD or kind is CouponKind.FIXED_OFF:
        discount = template.discount_amount or Decimal(0)
    elif kind is CouponKind.PERCENT_OFF:
        percent = Decimal(template.percent_off or 0)
        # Half up to the cent, as a till rounds; the cap then bounds it.
        discount = (subtotal * percent / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        if template.max_discount is not None:
            discount = min(discount, template.max_discount)
    else:  # EXCHANGE: one unit of the SKU is free (the cheapest line of it, if priced apart)
        prices = [
            line.unit_price
            for line in lines
            if line.sku == template.exchange_sku and line.quantity > 0
        ]
        discount = min(prices) if prices else Decimal(0)
    return min(discount, subtotal).quantize(CENT, rounding=ROUND_HALF_UP)


def check_stacking(templates: Sequence[CouponTemplate]) -> None:
    """Coupons used together on one order: an exclusive one stands alone, and stackable
    ones combine at most one per template. Raises NOT_STACKABLE otherwise."""
    if len(templates) <= 1:
        return
    exclusive = [t for t in templates if t.stacking is Stacking.EXCLUSIVE]
    if exclusive:
        raise DomainError.one(
            CouponErrorCode.NOT_STACKABLE,
            f"{exclusive[0].name!r} cannot be combined with other coupons.",
            "couponCodes",
        )
    repeated = [t for t, n in Counter(t.id for t in templates).items() if n > 1]
    if repeated:
        name = next(t.name for t in templates if t.id == repeated[0])
        raise DomainError.one(
            CouponErrorCode.NOT_STACKABLE,
            f"Only one {name!r} coupon per order.",
            "couponCodes",
        )
