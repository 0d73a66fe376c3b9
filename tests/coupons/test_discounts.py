"""What a coupon takes off an order, and which coupons go together (used by orders)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.coupons.discounts import OrderLine, check_stacking, discount_for
from api.coupons.models import CouponKind, CouponTemplate, Stacking
from api.errors import DomainError


def template(kind: CouponKind, **terms) -> CouponTemplate:
    terms.setdefault("stacking", Stacking.EXCLUSIVE)
    return CouponTemplate(kind=kind, name=terms.pop("name", kind.name), **terms)


def D(text: str) -> Decimal:
    return Decimal(text)


MANJIAN = template(
    CouponKind.AMOUNT_OFF_THRESHOLD, threshold_amount=D("100.00"), discount_amount=D("20.00")
)
ZHEKOU = template(CouponKind.PERCENT_OFF, percent_off=15)
ZHEKOU_CAPPED = template(
    CouponKind.PERCENT_OFF, percent_off=20, max_discount=D("30.00"), threshold_amount=D("50.00")
)
ZHIJIAN = template(CouponKind.FIXED_OFF, discount_amount=D("10.00"))
DUIHUAN = template(CouponKind.EXCHANGE, exchange_sku="TEA-50G")


@pytest.mark.parametrize(
    ("coupon", "subtotal", "expected"),
    [
        # 满100减20: nothing below the threshold, 20 at or above it.
        (MANJIAN, "99.99", "0.00"),
        (MANJIAN, "100.00", "20.00"),
        (MANJIAN, "350.00", "20.00"),
        # 15% off, to the cent, half up.
        (ZHEKOU, "100.00", "15.00"),
        (ZHEKOU, "33.33", "5.00"),  # 4.9995 → 5.00
        (ZHEKOU, "0.03", "0.00"),  # 0.0045 → 0.00
        # 20% off over 50, at most 30.
        (ZHEKOU_CAPPED, "49.99", "0.00"),
        (ZHEKOU_CAPPED, "50.00", "10.00"),
        (ZHEKOU_CAPPED, "150.00", "30.00"),
        (ZHEKOU_CAPPED, "1000.00", "30.00"),
        # ¥10 off, never more than the order.
        (ZHIJIAN, "58.00", "10.00"),
        (ZHIJIAN, "6.50", "6.50"),
        (ZHIJIAN, "0.00", "0.00"),
    ],
)
def test_each_kind_takes_off_what_its_terms_say(coupon, subtotal, expected):
    assert discount_for(coupon, D(subtotal)) == D(expected)


def test_an_exchange_coupon_takes_one_unit_of_its_sku_off():
    lines = [
        OrderLine("CUP", D("39.00"), 1),
        OrderLine("TEA-50G", D("68.00"), 3),
    ]
    assert discount_for(DUIHUAN, D("243.00"), lines) == D("68.00")
    # Not bought (or bought zero of): nothing.
    assert discount_for(DUIHUAN, D("39.00"), lines[:1]) == D("0.00")
    assert discount_for(DUIHUAN, D("39.00"), [OrderLine("TEA-50G", D("68"), 0)]) == D("0.00")
    # Priced apart on two lines (a promotion line): the cheaper unit.
    two = [OrderLine("TEA-50G", D("68.00"), 1), OrderLine("TEA-50G", D("55.00"), 1)]
    assert discount_for(DUIHUAN, D("123.00"), two) == D("55.00")


money = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False, allow_infinity=False)


@given(
    subtotal=money,
    percent=st.integers(1, 99),
    cap=st.none() | money.filter(lambda m: m > 0),
    threshold=money.filter(lambda m: m > 0),
    amount=money.filter(lambda m: m > 0),
)
def test_no_discount_is_negative_or_larger_than_the_order(
    subtotal, percent, cap, threshold, amount
):
    coupons = [
        template(CouponKind.PERCENT_OFF, percent_off=percent, max_discount=cap),
        template(CouponKind.FIXED_OFF, discount_amount=amount),
        template(
            CouponKind.AMOUNT_OFF_THRESHOLD,
            threshold_amount=threshold + amount,
            discount_amount=amount,
        ),
        template(CouponKind.EXCHANGE, exchange_sku="S"),
    ]
    lines = [OrderLine("S", amount, 1)]
    for coupon in coupons:
        discount = discount_for(coupon, subtotal, lines)
        assert D("0") <= discount <= subtotal
        assert discount == discount.quantize(D("0.01"))
        if coupon.kind is CouponKind.PERCENT_OFF and cap is not None:
            assert discount <= cap


def test_an_exclusive_coupon_stands_alone():
    solo = template(CouponKind.FIXED_OFF, discount_amount=D("5"), name="店庆券")
    solo.id = 1
    other = template(CouponKind.FIXED_OFF, discount_amount=D("5"), stacking=Stacking.STACKABLE)
    other.id = 2
    check_stacking([solo])  # alone: fine
    check_stacking([])
    with pytest.raises(DomainError) as refused:
        check_stacking([other, solo])
    assert refused.value.problems[0].code.name == "NOT_STACKABLE"
    assert "店庆券" in refused.value.problems[0].message


def test_stackable_coupons_combine_one_per_template():
    first = template(CouponKind.FIXED_OFF, discount_amount=D("5"), stacking=Stacking.STACKABLE)
    first.id = 1
    second = template(CouponKind.PERCENT_OFF, percent_off=5, stacking=Stacking.STACKABLE)
    second.id = 2
    check_stacking([first, second])
    with pytest.raises(DomainError) as refused:
        check_stacking([first, second, first])
    assert refused.value.problems[0].code.name == "NOT_STACKABLE"
