"""What the orders review found, each pinned: points by phone number, amounts past what the
database and loyalty take, idempotency keys across stores, coupons outside a territory,
exchange coupons' line shares, what members learn of stock, member limits, and what members
see of the staff on an order."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select, update

from api.catalog.models import SalesChannel
from api.conflicts.models import ChannelViolation, ViolationKind
from api.coupons.models import CouponKind, Stacking
from api.customers.models import IdentityKind
from api.customers.profile import CustomerDraft
from api.errors import DomainError, Problem
from api.loyalty import earning as loyalty_earning
from api.loyalty import errors as loyalty_errors
from api.orders import validation
from api.orders.errors import OrderErrorCode
from api.orders.models import Fulfillment, Order
from tests.orders.conftest import (
    HQ,
    POINTS,
    STOCK,
    balance,
    caller,
    gid,
    grant_coupon,
    integration,
    line,
    lines_of,
    member,
    place,
    refusal,
    store_staff,
    token_of,
)

ANN_PHONE = "13812341234"


def by_phone(phone: str) -> CustomerDraft:
    return CustomerDraft(identities=[(IdentityKind.PHONE, phone)])


async def problems_of(db, principal, **overrides) -> list[Problem]:
    try:
        await place(db, principal, **overrides)
    except DomainError as error:
        return list(error.problems)
    return []


# --- 1. points and coupons of a customer found by phone ------------------------------------


async def test_a_partner_cannot_spend_or_read_the_points_of_a_customer_found_by_phone(db, shop):
    b = integration(shop.partner_b)
    counter = {
        "channel": SalesChannel.STORE_POS,
        "fulfillment": Fulfillment.IN_STORE,
        "store_id": shop.b1,
        "lines": [line("TEA-1", 1, "100.00")],
    }
    # Ann is partner A's member: B finds her by her phone, and may sell to her, no more.
    answers = [
        await problems_of(db, b, customer=by_phone(phone), points_to_use=points, **counter)
        for phone in (ANN_PHONE, "13900009999")  # hers, and nobody's (created, then rolled back)
        for points in (5000, 50_000)
    ]
    assert {(p.code.name, p.field, p.message) for ps in answers for p in ps} == {
        (
            "FORBIDDEN",
            ("pointsToUse",),
            "Points and coupons are used by the member, or for a customer you serve "
            "(give customerId).",
        )
    }
    refused = await problems_of(
        db, b, customer=by_phone(ANN_PHONE), coupon_codes=[shop.ann_coupon], **counter
    )
    assert [(p.code.name, p.field) for p in refused] == [("FORBIDDEN", ("couponCodes",))]
    assert (await balance(db, shop.ann)).balance == POINTS
    # Selling to her without points is fine: the order is hers.
    sold = await place(db, b, customer=by_phone(ANN_PHONE), **counter)
    assert sold.order.customer_id == shop.ann


async def test_the_recruiting_partner_may_use_its_members_points_by_phone(db, shop):
    staff = store_staff(shop.partner_a, shop.a1)
    sold = await place(
        db,
        staff,
        channel=SalesChannel.STORE_POS,
        fulfillment=Fulfillment.IN_STORE,
        customer=by_phone(ANN_PHONE),
        points_to_use=1000,
        lines=[line("TEA-1", 1, "100.00")],
    )
    assert (sold.order.customer_id, sold.order.points_used) == (shop.ann, 1000)


async def test_only_the_member_is_told_their_balance(db, shop):
    staff = store_staff(shop.partner_a, shop.a1)
    as_staff = await problems_of(
        db,
        staff,
        channel=SalesChannel.STORE_POS,
        fulfillment=Fulfillment.IN_STORE,
        customer_id=shop.ann,
        points_to_use=2 * POINTS,
        lines=[line("TEA-1", 10, "100.00")],
    )
    assert [(p.code.name, p.message) for p in as_staff] == [
        ("INSUFFICIENT_POINTS", "The customer has not enough points for this.")
    ]
    as_member = await problems_of(
        db, member(shop.ann), points_to_use=2 * POINTS, lines=[line("TEA-1", 10)]
    )
    assert [p.code.name for p in as_member] == ["INSUFFICIENT_POINTS"]
    assert str(POINTS) in as_member[0].message  # their own balance


# --- 2. amounts ------------------------------------------------------------------------------


async def test_a_line_past_loyaltys_limit_is_refused_on_its_quantity(db, shop):
    refused = await problems_of(
        db,
        HQ,
        channel=SalesChannel.WEB,
        customer_id=shop.cat,
        lines=[line("TEA-2", 200, "10000000.00"), line("TEA-2", 1, "1.00")],
    )
    assert [(p.code.name, p.field) for p in refused] == [("INVALID", ("lines", "0", "quantity"))]
    # Exactly at the limit: stored, and its points earned (on PostgreSQL's Numeric(14, 2) too).
    at_limit = await place(
        db,
        HQ,
        channel=SalesChannel.WEB,
        customer_id=shop.cat,
        lines=[line("TEA-2", 100, "10000000.00")],
    )
    assert at_limit.order.total == Decimal("1000000000.00")
    assert at_limit.order.points_earned > 0


async def test_an_order_past_the_subtotal_limit_is_refused(db, shop):
    lines = [line("TEA-2", 100, "10000000.00")] * 11  # 11 lines at the line limit
    refused = await problems_of(db, HQ, channel=SalesChannel.WEB, lines=lines)
    assert [(p.code.name, p.field) for p in refused] == [("INVALID", ("lines",))]


async def test_another_domains_refusal_in_a_sale_is_an_order_error(db, shop, monkeypatch):
    async def refuse(*args, **kwargs):
        raise DomainError.one(loyalty_errors.PointsErrorCode.INVALID_AMOUNT, "No.", "amount")

    monkeypatch.setattr(loyalty_earning, "earn_for_purchase", refuse)
    refused = await problems_of(db, HQ, channel=SalesChannel.WEB, customer_id=shop.cat)
    assert [(p.code, p.field) for p in refused] == [(OrderErrorCode.INVALID, ("amount",))]


# --- 3. idempotency keys -------------------------------------------------------------------


async def test_two_stores_receipt_numbers_are_two_orders(db, shop):
    counter = {
        "channel": SalesChannel.STORE_POS,
        "fulfillment": Fulfillment.IN_STORE,
        "lines": [line("TEA-2", 1)],
        "idempotency_key": "receipt-1",
    }
    s1 = store_staff(shop.partner_a, shop.a1)
    s2 = store_staff(shop.partner_a, shop.a2)
    first = await place(db, s1, **counter)
    second = await place(db, s2, **counter)
    assert (second.created, second.order.store_id) == (True, shop.a2)
    again = await place(db, s1, **counter)
    assert (again.created, again.order.id) == (False, first.order.id)
    # A partner's own key: the store it resolves to is part of the request.
    admin = integration(shop.partner_a)
    await place(db, admin, **{**counter, "store_id": shop.a1})
    assert await refusal(place(db, admin, **{**counter, "store_id": shop.a2})) == [
        ("IDEMPOTENCY_KEY_REUSED", ("idempotencyKey",))
    ]


async def test_a_retry_is_answered_only_with_an_order_the_caller_still_sees(db, shop):
    admin = integration(shop.partner_a)
    counter = {
        "channel": SalesChannel.STORE_POS,
        "fulfillment": Fulfillment.IN_STORE,
        "store_id": shop.a1,
        "lines": [line("TEA-2", 1)],
        "idempotency_key": "k",
    }
    first = await place(db, admin, **counter)
    async with db.transaction() as session:  # the sale now belongs to partner B
        await session.execute(
            update(Order).where(Order.id == first.order.id).values(partner_id=shop.partner_b)
        )
    assert await refusal(place(db, admin, **counter)) == [
        ("IDEMPOTENCY_KEY_REUSED", ("idempotencyKey",))
    ]


# --- 4. coupons outside a territory --------------------------------------------------------


async def violations(db) -> list[ChannelViolation]:
    async with db.read() as session:
        return list(await session.scalars(select(ChannelViolation).order_by(ChannelViolation.id)))


async def test_a_coupon_used_at_a_store_outside_its_partners_territories_is_recorded(db, shop):
    other = await grant_coupon(db, shop.ann)
    inside = {"fulfillment": Fulfillment.PICKUP, "store_id": shop.a1}
    await place(db, member(shop.ann), coupon_codes=[other], **inside)
    assert await violations(db) == []
    sold = await place(
        db,
        member(shop.ann),
        fulfillment=Fulfillment.PICKUP,
        store_id=shop.a2,
        coupon_codes=[shop.ann_coupon],
    )
    (found,) = await violations(db)
    assert (found.kind, found.store_id, found.partner_id) == (
        ViolationKind.CROSS_REGION_REDEMPTION,
        shop.a2,
        shop.partner_a,
    )
    assert found.coupon_id is not None and sold.order.coupon_discount == Decimal("10.00")


# --- 5. exchange coupons -------------------------------------------------------------------


async def test_an_exchange_coupons_discount_is_the_gift_lines(db, shop):
    exchange = {"kind": CouponKind.EXCHANGE, "discount_amount": None, "exchange_sku": "TEA-2"}
    gift = await grant_coupon(db, shop.ann, name="换购", stacking=Stacking.STACKABLE, **exchange)
    ten_off = await grant_coupon(db, shop.ann, stacking=Stacking.STACKABLE)
    points = {"points_to_use": 1000}  # ¥10, spread over what is left
    sold = await place(
        db,
        member(shop.ann),
        coupon_codes=[ten_off, gift],
        lines=[line("TEA-1", 2), line("TEA-2", 1), line("TEA-2", 3)],
        **points,
    )
    tea, gift_line, more = await lines_of(db, sold.order.id)
    assert gift_line.discount == gift_line.subtotal == Decimal("50.00")
    assert gift_line.total == 0
    assert sum(x.total for x in (tea, gift_line, more)) == sold.order.total
    assert sum(x.discount for x in (tea, gift_line, more)) == Decimal("70.00")
    assert sold.order.total == Decimal("198.00") + Decimal("200.00") - Decimal("70.00")


# --- 6 and 7. what members learn and may do ------------------------------------------------


async def test_a_member_is_not_told_a_stores_stock(db, shop):
    too_many = {"fulfillment": Fulfillment.PICKUP, "store_id": shop.a1}
    as_member = await problems_of(
        db, member(shop.ann), lines=[line("TEA-2", 1), line("TEA-1", STOCK + 1)], **too_many
    )
    assert [(p.code.name, p.field, p.message) for p in as_member] == [
        ("INSUFFICIENT_STOCK", ("lines", "1"), "Not enough TEA-1 at this store.")
    ]
    staff = store_staff(shop.partner_a, shop.a1)
    as_staff = await problems_of(
        db,
        staff,
        channel=SalesChannel.STORE_POS,
        customer_id=shop.ann,
        lines=[line("TEA-1", STOCK + 1)],
        **too_many,
    )
    assert str(STOCK) in as_staff[0].message


async def test_members_ask_about_a_basket_of_stock_only(db, shop, app, issue_token):
    ask = caller(app, token_of(issue_token, member(shop.ann)))
    query = """query($store: ID!, $quantity: Int!) { sku(code: "TEA-1") {
      pickupAvailable(storeId: $store, quantity: $quantity) } }"""
    store = gid("Store", shop.a1)
    five = await ask(query, {"store": store, "quantity": 5})
    assert five["data"]["sku"] == {"pickupAvailable": True}
    six = await ask(query, {"store": store, "quantity": 6})
    assert six["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    staff = caller(app, token_of(issue_token, store_staff(shop.partner_a, shop.a1)))
    many = await staff(query, {"store": store, "quantity": STOCK + 1})
    assert many["data"]["sku"] == {"pickupAvailable": False}


async def test_a_member_does_not_choose_where_a_delivery_ships_from(db, shop):
    assert await refusal(place(db, member(shop.ann), store_id=shop.wh)) == [
        ("FORBIDDEN", ("storeId",))
    ]


async def test_a_member_has_a_limited_number_of_open_pickups(db, shop):
    ann = member(shop.ann)
    pickup = {"fulfillment": Fulfillment.PICKUP, "store_id": shop.a1, "lines": [line("TEA-2")]}
    for _ in range(validation.MAX_OPEN_PICKUPS):
        await place(db, ann, **pickup)
    assert await refusal(place(db, ann, **pickup)) == [("TOO_MANY_OPEN_PICKUPS", ("fulfillment",))]
    # Staff placing one for her at the counter is not her hoarding stock.
    staff = store_staff(shop.partner_a, shop.a1)
    await place(db, staff, channel=SalesChannel.STORE_POS, customer_id=shop.ann, **pickup)


# --- 9. the staff on an order --------------------------------------------------------------


async def test_a_member_sees_no_staff_on_their_order(db, shop, app, issue_token):
    staff = store_staff(shop.partner_a, shop.a1)
    sold = await place(
        db,
        staff,
        channel=SalesChannel.STORE_POS,
        fulfillment=Fulfillment.IN_STORE,
        customer_id=shop.ann,
    )
    query = """query($id: ID!) { order(id: $id) { takenBy events { note actor } } }"""
    variables = {"id": gid("Order", sold.order.id)}
    own = await caller(app, token_of(issue_token, member(shop.ann)))(query, variables)
    assert own["data"]["order"] == {"takenBy": None, "events": [{"note": None, "actor": None}]}
    seen = await caller(app, token_of(issue_token, staff))(query, variables)
    assert seen["data"]["order"] == {
        "takenBy": staff.subject,
        "events": [{"note": "sold", "actor": staff.subject}],
    }
