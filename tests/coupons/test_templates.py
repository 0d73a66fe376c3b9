"""Coupon templates: every kind's rules, validity, stock and limits, restrictions, updates."""

from __future__ import annotations

from decimal import Decimal

import pytest

from api.coupons import templates as coupon_templates
from api.coupons.models import CouponKind, TemplateStatus
from tests.coupons.conftest import (
    DAY,
    HQ,
    T0,
    draft,
    failure,
    new_template,
    partner_admin,
    problem_fields,
    template_row,
)


async def create(db, principal=HQ, **overrides):
    async with db.transaction() as session:
        return await coupon_templates.create_template(session, principal, draft(**overrides))


AMOUNT_OFF = {
    "kind": CouponKind.AMOUNT_OFF_THRESHOLD,
    "threshold_amount": Decimal("100.00"),
    "discount_amount": Decimal("20.00"),
}
PERCENT_OFF = {"kind": CouponKind.PERCENT_OFF, "percent_off": 20, "discount_amount": None}
EXCHANGE = {"kind": CouponKind.EXCHANGE, "exchange_sku": "TEA-GIFT-50G", "discount_amount": None}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="直减 fixed off"),
        pytest.param(AMOUNT_OFF, id="满减 amount off over a threshold"),
        pytest.param(PERCENT_OFF, id="折扣 percent off"),
        pytest.param(
            {**PERCENT_OFF, "max_discount": Decimal("30.00"), "threshold_amount": Decimal("50")},
            id="折扣 with a cap and a minimum spend",
        ),
        pytest.param(EXCHANGE, id="兑换 exchange for a SKU"),
        pytest.param({"valid_from": None, "valid_until": None, "valid_days": 7}, id="valid 7 days"),
    ],
)
async def test_each_kind_of_template_is_created_with_its_terms(db, fields):
    template = await create(db, **fields)
    row = await template_row(db, template.id)
    assert row.status is TemplateStatus.ACTIVE
    assert row.issued == 0 and row.total_stock == 100
    for name, value in fields.items():
        assert getattr(row, name) == value


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # 满减 needs both amounts, and the threshold above the discount.
        ({**AMOUNT_OFF, "threshold_amount": None}, [("REQUIRED", ("thresholdAmount",))]),
        ({**AMOUNT_OFF, "discount_amount": None}, [("REQUIRED", ("discountAmount",))]),
        (
            {**AMOUNT_OFF, "threshold_amount": Decimal("20.00")},
            [("INVALID", ("thresholdAmount",))],
        ),
        ({**AMOUNT_OFF, "percent_off": 10}, [("INVALID", ("percentOff",))]),
        # 折扣 is 1-99 percent; the cap, if any, is a positive amount.
        ({**PERCENT_OFF, "percent_off": None}, [("REQUIRED", ("percentOff",))]),
        ({**PERCENT_OFF, "percent_off": 0}, [("INVALID", ("percentOff",))]),
        ({**PERCENT_OFF, "percent_off": 100}, [("INVALID", ("percentOff",))]),
        ({**PERCENT_OFF, "max_discount": Decimal("0")}, [("INVALID", ("maxDiscount",))]),
        ({**PERCENT_OFF, "discount_amount": Decimal("5")}, [("INVALID", ("discountAmount",))]),
        # 直减 needs an amount in cents, above zero.
        ({"discount_amount": None}, [("REQUIRED", ("discountAmount",))]),
        ({"discount_amount": Decimal("-1")}, [("INVALID", ("discountAmount",))]),
        ({"discount_amount": Decimal("9.999")}, [("INVALID", ("discountAmount",))]),
        ({"discount_amount": Decimal("NaN")}, [("INVALID", ("discountAmount",))]),
        ({"threshold_amount": Decimal("50")}, [("INVALID", ("thresholdAmount",))]),
        # 兑换 needs a SKU and nothing else.
        ({**EXCHANGE, "exchange_sku": "  "}, [("REQUIRED", ("exchangeSku",))]),
        ({**EXCHANGE, "exchange_sku": "X" * 65}, [("INVALID", ("exchangeSku",))]),
        ({**EXCHANGE, "discount_amount": Decimal("5")}, [("INVALID", ("discountAmount",))]),
        # Validity: fixed dates in order, or N days, not both, not neither.
        ({"valid_until": T0 - 2 * DAY}, [("INVALID", ("validUntil",))]),
        ({"valid_until": None}, [("REQUIRED", ("validUntil",))]),
        ({"valid_days": 7}, [("INVALID", ("validDays",))]),
        ({"valid_from": None, "valid_until": None}, [("REQUIRED", ("validDays",))]),
        (
            {"valid_from": None, "valid_until": None, "valid_days": 0},
            [("INVALID", ("validDays",))],
        ),
        ({"valid_from": (T0 - DAY).replace(tzinfo=None)}, [("INVALID", ("validFrom",))]),
        # The claim window is in order and closes by the time coupons expire.
        ({"claim_starts_at": T0, "claim_ends_at": T0}, [("INVALID", ("claimEndsAt",))]),
        ({"claim_ends_at": T0 + 31 * DAY}, [("INVALID", ("claimEndsAt",))]),
        # Stock and the per-person limit are at least one.
        ({"total_stock": 0}, [("INVALID", ("totalStock",))]),
        ({"per_person_limit": 0}, [("INVALID", ("perPersonLimit",))]),
        # Names and currencies.
        ({"name": "   "}, [("REQUIRED", ("name",))]),
        ({"currency": "rmb"}, [("INVALID", ("currency",))]),
    ],
)
async def test_invalid_terms_are_refused_on_the_field_at_fault(db, fields, expected):
    assert await problem_fields(create(db, **fields)) == expected


async def test_every_problem_is_reported_at_once(db):
    found = await problem_fields(
        create(db, name="", total_stock=0, per_person_limit=0, discount_amount=None)
    )
    assert {code for code, _ in found} == {"REQUIRED", "INVALID"}
    assert {field for _, field in found} == {
        ("name",),
        ("discountAmount",),
        ("totalStock",),
        ("perPersonLimit",),
    }


async def test_restrictions_name_existing_stores_and_partners(db, world):
    template = await create(db, store_ids=[world.store_a1, world.store_a1], partner_ids=[])
    async with db.read() as session:
        stores, partners = await coupon_templates.restrictions_of(session, [template.id])
    assert stores == {template.id: [world.store_a1]}  # a repeated id counts once
    assert partners == {template.id: []}

    found = await problem_fields(create(db, store_ids=[world.store_a1, 999], partner_ids=[998]))
    assert found == [("UNKNOWN_STORE", ("storeIds", "1")), ("UNKNOWN_PARTNER", ("partnerIds", "0"))]


async def test_only_hq_creates_and_changes_templates(db, world):
    assert await failure(create(db, principal=partner_admin(world.partner_a))) == "FORBIDDEN"
    template = await new_template(db)
    async with db.transaction() as session:
        call = coupon_templates.update_template(
            session, partner_admin(world.partner_a), template.id, total_stock=500
        )
        assert await failure(call) == "FORBIDDEN"


async def test_a_template_is_paused_resumed_and_its_stock_only_raised(db):
    template = await new_template(db, total_stock=10)

    async def update(**changes):
        async with db.transaction() as session:
            return await coupon_templates.update_template(session, HQ, template.id, **changes)

    assert (await update(status=TemplateStatus.PAUSED)).status is TemplateStatus.PAUSED
    assert (await update(status=TemplateStatus.ACTIVE)).status is TemplateStatus.ACTIVE
    assert (await update(total_stock=25)).total_stock == 25
    assert await problem_fields(update(total_stock=24)) == [("INVALID", ("totalStock",))]
    assert (await template_row(db, template.id)).total_stock == 25
    async with db.transaction() as session:
        missing = coupon_templates.update_template(session, HQ, template.id + 1, total_stock=30)
        assert await problem_fields(missing) == [("NOT_FOUND", ("id",))]
