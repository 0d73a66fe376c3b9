"""orderCreate's rules through the service: what an order does (stock, coupons, points, totals,
events), who may place what, and that a refusal anywhere leaves nothing behind."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from api.catalog.models import SalesChannel, Sku
from api.conflicts.models import ChannelViolation
from api.coupons.models import CouponChannel, CouponKind, CouponStatus, Stacking
from api.customers.models import CustomerIdentity, IdentityKind, QualifyingSpend
from api.customers.profile import CustomerDraft
from api.orders.drafts import LineDraft
from api.orders.models import Fulfillment, Order, OrderCoupon, OrderEvent, OrderStatus
from api.partners.models import Store, StoreStatus
from tests.orders.conftest import (
    HQ,
    NOW,
    POINTS,
    STOCK,
    Policy,
    balance,
    coupon_row,
    grant_coupon,
    integration,
    line,
    lines_of,
    member,
    order_count,
    partner_admin,
    place,
    refusal,
    stock,
    store_staff,
)

PICKUP = {"fulfillment": Fulfillment.PICKUP}
COUNTER = {"channel": SalesChannel.STORE_POS, "fulfillment": Fulfillment.IN_STORE}


async def violations(db) -> list[ChannelViolation]:
    async with db.read() as session:
        return list(await session.scalars(select(ChannelViolation).order_by(ChannelViolation.id)))


# --- what an order does ----------------------------------------------------------------------


async def test_a_members_pickup_order_reserves_stock_and_pays_with_a_coupon_and_points(
    db, shop, published
):
    result = await place(
        db,
        member(shop.ann),
        **PICKUP,
        store_id=shop.a1,
        lines=[line("TEA-1", 2), line("TEA-2", 1)],
        coupon_codes=[shop.ann_coupon],
        points_to_use=5_000,
        idempotency_key="cart-1",
    )
    order = result.order
    assert result.created
    # 2 × 99 (the mini-program's list price) + 50 (no band: the SRP); ¥10 off; 5000 points
    # pay ¥50 (100 points a yuan), at most half of the ¥238 left.
    assert (order.subtotal, order.coupon_discount, order.points_discount, order.total) == (
        Decimal("248.00"),
        Decimal("10.00"),
        Decimal("50.00"),
        Decimal("188.00"),
    )
    assert (order.points_used, order.points_earned) == (5_000, 0)  # earned at pickup
    assert order.cost_total == Decimal("100.00")
    assert (order.status, order.partner_id, order.customer_id) == (
        OrderStatus.PLACED,
        shop.partner_a,  # the seller: the store's partner
        shop.ann,
    )
    assert not order.reported_by_partner and order.taken_by is None
    assert order.pickup_code is not None and len(order.pickup_code) == 6
    assert order.pickup_expires_at == NOW + timedelta(hours=72)
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 2)
    assert await stock(db, shop.a1, shop.sku["TEA-2"]) == (STOCK, 1)
    used = await coupon_row(db, shop.ann_coupon)
    assert (used.status, used.redeemed_for, used.redeemed_store_id) == (
        CouponStatus.REDEEMED,
        str(order.id),
        shop.a1,
    )
    assert (await balance(db, shop.ann)).balance == POINTS - 5_000
    lines = await lines_of(db, order.id)
    assert [(ln.sku_code, ln.quantity, ln.unit_price, ln.unit_cost) for ln in lines] == [
        ("TEA-1", 2, Decimal("99.00"), Decimal("40.00")),
        ("TEA-2", 1, Decimal("50.00"), Decimal("20.00")),
    ]
    # ¥60 of discounts split 198 : 50, to the cent, adding up exactly.
    assert [ln.discount for ln in lines] == [Decimal("47.90"), Decimal("12.10")]
    assert sum(ln.total for ln in lines) == order.total
    async with db.read() as session:
        used_rows = list(await session.scalars(select(OrderCoupon)))
        history = list(await session.scalars(select(OrderEvent)))
    assert [(u.order_id, u.code, u.discount) for u in used_rows] == [
        (order.id, shop.ann_coupon, Decimal("10.00"))
    ]
    assert [(e.status, e.note, e.actor) for e in history] == [
        (OrderStatus.PLACED, "placed", f"customer:{shop.ann}")
    ]
    message = f'{{"orderId":{order.id},"status":"placed","event":"created"}}'
    assert published.events == [
        (f"order-updates:customer:{shop.ann}", message),
        (f"order-updates:store:{shop.a1}", message),
    ]


async def test_a_counter_sale_deducts_stock_and_earns_points_and_spend_at_once(db, shop):
    staff = store_staff(shop.partner_a, shop.a1)
    result = await place(
        db, staff, **COUNTER, customer_id=shop.ann, lines=[line("TEA-1", 1, "95.00")]
    )
    order = result.order
    assert (order.status, order.store_id, order.completed_at) == (
        OrderStatus.COMPLETED,
        shop.a1,  # store staff sell at their own store by default
        NOW,
    )
    assert order.reported_by_partner and order.taken_by == f"staff:{shop.a1}"
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK - 1, 0)
    # 1 point a yuan, pending for the return window.
    assert order.points_earned == 95
    assert (await balance(db, shop.ann)).pending == 95
    async with db.read() as session:
        spend = (await session.execute(select(QualifyingSpend))).scalar_one()
    assert (spend.customer_id, spend.amount, spend.source_id) == (
        shop.ann,
        Decimal("95.00"),
        str(order.id),
    )


async def test_delivery_moves_stock_only_from_a_named_location(db, shop):
    shipped = (await place(db, HQ, customer_id=shop.cat, store_id=shop.wh)).order
    assert await stock(db, shop.wh, shop.sku["TEA-1"]) == (STOCK - 1, 0)
    anywhere = (await place(db, HQ, customer_id=shop.cat)).order
    assert (shipped.status, anywhere.status) == (OrderStatus.COMPLETED, OrderStatus.COMPLETED)
    assert anywhere.store_id is None and anywhere.partner_id is None
    assert await stock(db, shop.wh, shop.sku["TEA-1"]) == (STOCK - 1, 0)


async def test_an_order_without_a_customer_earns_nothing(db, shop):
    order = (await place(db, HQ, **COUNTER, store_id=shop.hq)).order
    assert (order.customer_id, order.points_earned, order.total) == (None, 0, Decimal("100.00"))


async def test_gross_margin_is_total_less_the_brands_cost(db, shop):
    order = (await place(db, HQ, lines=[line("TEA-1", 3), line("TEA-2", 2)])).order
    assert (order.subtotal, order.cost_total) == (Decimal("397.00"), Decimal("160.00"))


async def test_a_customer_given_by_identities_is_found_or_created(db, shop):
    identities = [(IdentityKind.PHONE, "+86 138-1234-1234")]
    known = await place(db, HQ, customer=CustomerDraft(identities=identities, name="别名"))
    assert known.order.customer_id == shop.ann
    new = await place(
        db, HQ, customer=CustomerDraft(identities=[(IdentityKind.PHONE, "13900000009")])
    )
    async with db.read() as session:
        owner = await session.scalar(
            select(CustomerIdentity.customer_id).where(CustomerIdentity.value == "13900000009")
        )
    assert new.order.customer_id == owner and owner not in (shop.ann, shop.bob, shop.cat)
    bad = place(db, HQ, customer=CustomerDraft(identities=[(IdentityKind.PHONE, "12")]))
    assert await refusal(bad) == [("INVALID", ("customer", "identities", "0", "value"))]


# --- prices, SKUs and the channel -------------------------------------------------------------


async def test_first_party_prices_outside_the_band_are_refused_naming_the_line(db, shop):
    low = place(db, HQ, lines=[line("TEA-2"), line("TEA-1", price="79.99")])
    assert await refusal(low) == [("PRICE_BELOW_FLOOR", ("lines", "1", "unitPrice"))]
    high = place(db, HQ, **COUNTER, store_id=shop.hq, lines=[line("TEA-1", price="110.01")])
    assert await refusal(high) == [("PRICE_ABOVE_CEILING", ("lines", "0", "unitPrice"))]
    at_edges = await place(
        db, HQ, lines=[line("TEA-1", price="80.00"), line("TEA-1", price="120.00")]
    )
    assert at_edges.order.subtotal == Decimal("200.00")
    assert await violations(db) == []


async def test_a_partners_own_sale_outside_the_band_is_accepted_and_recorded(db, shop):
    erp = integration(shop.partner_a)
    order = (
        await place(
            db,
            erp,
            channel=SalesChannel.TMALL,
            store_id=shop.a1,
            lines=[line("TEA-1", 2, "70.00"), line("TEA-1", 1, "120.00")],
        )
    ).order
    assert order.reported_by_partner and order.subtotal == Decimal("260.00")
    found = [
        (v.kind.name, v.source_key, v.sku_id, v.expected_amount, v.actual_amount, v.partner_id)
        for v in await violations(db)
    ]
    assert found == [
        (
            "PRICE_BELOW_FLOOR",
            f"order:{order.id}:line:1:price_below_floor",
            shop.sku["TEA-1"],
            Decimal("85.00"),
            Decimal("70.00"),
            shop.partner_a,
        ),
        (
            "PRICE_ABOVE_CEILING",
            f"order:{order.id}:line:2:price_above_ceiling",
            shop.sku["TEA-1"],
            Decimal("115.00"),
            Decimal("120.00"),
            shop.partner_a,
        ),
    ]


async def test_channel_exclusive_skus_are_refused_elsewhere_first_party_and_recorded_for_partners(
    db, shop
):
    online = await place(db, HQ, lines=[line("NET-1")])  # MINI_PROGRAM: its channel
    assert online.order.subtotal == Decimal("60.00")
    at_counter = place(db, HQ, **COUNTER, store_id=shop.hq, lines=[line("TEA-2"), line("NET-1")])
    assert await refusal(at_counter) == [("CHANNEL_EXCLUSIVE", ("lines", "1"))]
    staff = store_staff(shop.partner_a, shop.a1)
    sold = (await place(db, staff, **COUNTER, lines=[line("NET-1")])).order
    assert [(v.kind.name, v.order_id) for v in await violations(db)] == [("EXCLUSIVE_SKU", sold.id)]


async def test_unknown_and_inactive_skus_are_named(db, shop):
    call = place(
        db,
        HQ,
        lines=[
            line("NOPE"),
            line("OLD-1"),
            line("TEA-1", 0),
            service_line(sku_id=shop.sku["TEA-2"]),
            service_line(sku_id=987654),
        ],
    )
    assert await refusal(call) == [("INVALID", ("lines", "2", "quantity"))]
    call = place(
        db,
        HQ,
        lines=[line("NOPE"), line("OLD-1"), service_line(sku_id=987654), line("TEA-2")],
    )
    assert await refusal(call) == [
        ("NOT_FOUND", ("lines", "0", "sku")),
        ("SKU_UNAVAILABLE", ("lines", "1")),
        ("NOT_FOUND", ("lines", "2", "skuId")),
    ]
    assert await order_count(db) == 0


def service_line(**fields):
    return LineDraft(quantity=1, **fields)


async def test_cross_region_sales_by_a_partner_are_recorded(db, shop):
    admin = partner_admin(shop.partner_a)
    inside = (await place(db, admin, **COUNTER, store_id=shop.a1)).order
    outside = (await place(db, admin, **COUNTER, store_id=shop.a2)).order
    shipped_far = (
        await place(db, integration(shop.partner_a), delivery_region_code="110105")
    ).order
    shipped_near = (
        await place(db, integration(shop.partner_a), delivery_region_code="310104")
    ).order
    by_hq = (await place(db, HQ, **COUNTER, store_id=shop.a2)).order  # first-party
    assert {inside.id, shipped_near.id, by_hq.id}.isdisjoint(
        v.order_id for v in await violations(db)
    )
    assert [(v.kind.name, v.order_id, v.region_code) for v in await violations(db)] == [
        ("CROSS_REGION_SALE", outside.id, "440305"),
        ("CROSS_REGION_SALE", shipped_far.id, "110105"),
    ]
    assert shipped_far.partner_id == shop.partner_a and shipped_far.store_id is None


async def test_a_line_price_in_another_currency_is_refused(db, shop):
    async with db.transaction() as session:
        sku = await session.get_one(Sku, shop.sku["TEA-2"])
        sku.currency = "USD"
    refused = place(db, HQ, lines=[line("TEA-1"), line("TEA-2")])
    assert await refusal(refused) == [("CURRENCY_MISMATCH", ("lines", "1"))]


# --- who places what ----------------------------------------------------------------------------


async def test_members_order_for_themselves_online_at_the_list_price(db, shop):
    ann = member(shop.ann)
    assert await refusal(place(db, ann, channel=SalesChannel.STORE_POS)) == [
        ("FORBIDDEN", ("channel",))
    ]
    assert await refusal(place(db, ann, **COUNTER, store_id=shop.a1)) == [
        ("FORBIDDEN", ("channel",)),
        ("FORBIDDEN", ("fulfillment",)),
    ]
    assert await refusal(place(db, ann, lines=[line(price="80.00")])) == [
        ("FORBIDDEN", ("lines", "0", "unitPrice"))
    ]
    # Someone else's id, or one that does not exist, is refused alike.
    for other in (shop.bob, 987654):
        assert await refusal(place(db, ann, customer_id=other)) == [("FORBIDDEN", ("customerId",))]
    own = (await place(db, ann, channel=SalesChannel.WEB, customer_id=shop.ann)).order
    assert (own.customer_id, own.subtotal) == (shop.ann, Decimal("99.00"))


async def test_store_staff_sell_at_their_own_store_counter_or_for_pickup(db, shop):
    staff = store_staff(shop.partner_a, shop.a1)
    assert await refusal(place(db, staff, channel=SalesChannel.STORE_POS)) == [
        ("FORBIDDEN", ("fulfillment",))
    ]
    assert await refusal(place(db, staff, **COUNTER, store_id=shop.a2)) == [
        ("NOT_FOUND", ("storeId",))
    ]
    pickup = await place(db, staff, channel=SalesChannel.STORE_POS, **PICKUP, customer_id=shop.ann)
    assert (pickup.order.store_id, pickup.order.status) == (shop.a1, OrderStatus.PLACED)


async def test_another_partners_store_answers_like_a_missing_one(db, shop):
    for principal in (partner_admin(shop.partner_a), integration(shop.partner_a)):
        foreign = await refusal(place(db, principal, **COUNTER, store_id=shop.b1))
        missing = await refusal(place(db, principal, **COUNTER, store_id=987654))
        assert foreign == missing == [("NOT_FOUND", ("storeId",))]
    # ... and another partner's customer like a missing one.
    admin = partner_admin(shop.partner_a)
    assert await refusal(place(db, admin, customer_id=shop.bob)) == await refusal(
        place(db, admin, customer_id=987654)
    )
    assert await order_count(db) == 0


async def test_pickup_needs_an_open_store_that_offers_it(db, shop):
    ann = member(shop.ann)
    assert await refusal(place(db, ann, **PICKUP)) == [("REQUIRED", ("storeId",))]
    for store in (shop.hq, shop.wh):
        assert await refusal(place(db, ann, **PICKUP, store_id=store)) == [
            ("STORE_UNAVAILABLE", ("storeId",))
        ]
    async with db.transaction() as session:
        (await session.get_one(Store, shop.a1)).status = StoreStatus.CLOSED
    assert await refusal(place(db, ann, **PICKUP, store_id=shop.a1)) == [
        ("STORE_UNAVAILABLE", ("storeId",))
    ]
    assert await refusal(place(db, HQ, **PICKUP, store_id=shop.b1)) == [
        ("REQUIRED", ("customerId",))
    ]


async def test_only_a_partner_reporting_its_sale_says_when_it_happened(db, shop):
    earlier = NOW - timedelta(days=2)
    assert await refusal(place(db, HQ, placed_at=earlier)) == [("FORBIDDEN", ("placedAt",))]
    erp = integration(shop.partner_a)
    future = place(db, erp, placed_at=NOW + timedelta(hours=1), channel=SalesChannel.TMALL)
    assert await refusal(future) == [("INVALID", ("placedAt",))]
    order = (await place(db, erp, placed_at=earlier, channel=SalesChannel.TMALL)).order
    assert (order.placed_at, order.created_at) == (earlier, NOW)


# --- stock ------------------------------------------------------------------------------------


async def test_a_pickup_beyond_the_stock_names_the_line_and_leaves_nothing(db, shop, published):
    call = place(
        db,
        member(shop.ann),
        **PICKUP,
        store_id=shop.a1,
        lines=[line("TEA-1", 2), line("TEA-2", STOCK - 1), line("TEA-2", 2)],
    )
    problems = await refusal(call)
    assert problems == [("INSUFFICIENT_STOCK", ("lines", "1"))]
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)
    assert await order_count(db) == 0 and published.events == []


# --- coupons and points ------------------------------------------------------------------------


async def test_a_failing_coupon_after_the_reservation_leaves_stock_points_and_coupons_as_they_were(
    db, shop, published
):
    stackable = await grant_coupon(db, shop.ann, stacking=Stacking.STACKABLE, name="叠加券")
    expired = await grant_coupon(
        db,
        shop.ann,
        stacking=Stacking.STACKABLE,
        name="过期券",
        valid_from=NOW - timedelta(days=10),
        valid_until=NOW - timedelta(seconds=1),
    )
    call = place(
        db,
        member(shop.ann),
        **PICKUP,
        store_id=shop.a1,
        coupon_codes=[stackable, expired],
        points_to_use=2_000,
    )
    assert await refusal(call) == [("COUPON_INVALID", ("couponCodes", "1"))]
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 0)
    assert (await balance(db, shop.ann)).balance == POINTS
    assert (await coupon_row(db, stackable)).status is CouponStatus.CLAIMED
    assert await order_count(db) == 0 and published.events == []


async def test_coupons_must_be_the_customers_usable_here_and_combinable(db, shop):
    ann = member(shop.ann)
    someone_elses = await refusal(place(db, ann, coupon_codes=[shop.bob_coupon]))
    unknown = await refusal(place(db, ann, coupon_codes=["ABCDEFGHJKMNPQRS"]))
    assert someone_elses == unknown == [("COUPON_INVALID", ("couponCodes", "0"))]
    offline_only = await grant_coupon(db, shop.ann, use_channel=CouponChannel.OFFLINE)
    assert await refusal(place(db, ann, coupon_codes=[offline_only])) == [
        ("COUPON_INVALID", ("couponCodes", "0"))
    ]
    big_spender = await grant_coupon(
        db,
        shop.ann,
        kind=CouponKind.AMOUNT_OFF_THRESHOLD,
        threshold_amount=Decimal("500.00"),
        discount_amount=Decimal("50.00"),
    )
    assert await refusal(place(db, ann, coupon_codes=[big_spender])) == [
        ("COUPON_INVALID", ("couponCodes", "0"))
    ]
    # The shop's coupon is exclusive: alone on an order.
    stackable = await grant_coupon(db, shop.ann, stacking=Stacking.STACKABLE)
    together = place(db, ann, coupon_codes=[stackable, shop.ann_coupon])
    assert await refusal(together) == [("COUPON_INVALID", ("couponCodes",))]
    twice = place(db, ann, coupon_codes=[shop.ann_coupon, shop.ann_coupon.lower()])
    assert await refusal(twice) == [("COUPON_INVALID", ("couponCodes", "1"))]
    assert (await coupon_row(db, shop.ann_coupon)).status is CouponStatus.CLAIMED


async def test_stacked_coupons_apply_in_sequence_on_what_is_left(db, shop):
    percent = await grant_coupon(
        db,
        shop.ann,
        kind=CouponKind.PERCENT_OFF,
        percent_off=10,
        discount_amount=None,
        stacking=Stacking.STACKABLE,
    )
    fixed = await grant_coupon(db, shop.ann, stacking=Stacking.STACKABLE, name="再减10")
    order = (
        await place(db, member(shop.ann), lines=[line("TEA-1", 2)], coupon_codes=[percent, fixed])
    ).order
    # 198: 10% off is 19.80, then ¥10 off the 178.20 left.
    assert (order.coupon_discount, order.total) == (Decimal("29.80"), Decimal("168.20"))


async def test_points_pay_a_capped_share_of_what_coupons_left(db, shop):
    ann = member(shop.ann)
    # 99 - 10 = 89 left; half is 44.50 = 4450 points.
    over = place(db, ann, coupon_codes=[shop.ann_coupon], points_to_use=4_451)
    assert await refusal(over) == [("POINTS_LIMIT", ("pointsToUse",))]
    many = place(db, ann, lines=[line("TEA-1", 100)], points_to_use=POINTS + 1)
    assert await refusal(many) == [("INSUFFICIENT_POINTS", ("pointsToUse",))]
    odd = place(db, ann, points_to_use=7, policy=Policy(points_per_yuan=300))
    assert await refusal(odd) == [("INVALID", ("pointsToUse",))]
    assert await refusal(place(db, HQ, points_to_use=100)) == [("REQUIRED", ("customerId",))]
    exact = await place(db, ann, coupon_codes=[shop.ann_coupon], points_to_use=4_450)
    assert (exact.order.points_discount, exact.order.total) == (
        Decimal("44.50"),
        Decimal("44.50"),
    )
    assert (await balance(db, shop.ann)).balance == POINTS - 4_450
    thirds = await place(db, ann, points_to_use=30, policy=Policy(points_per_yuan=300))
    assert thirds.order.points_discount == Decimal("0.10")


# --- idempotency ----------------------------------------------------------------------------


async def test_a_retry_returns_the_first_order_and_a_changed_request_is_refused(db, shop):
    ann = member(shop.ann)
    first = await place(db, ann, **PICKUP, store_id=shop.a1, idempotency_key="k1")
    again = await place(db, ann, **PICKUP, store_id=shop.a1, idempotency_key="k1")
    assert (again.created, again.order.id) == (False, first.order.id)
    assert await stock(db, shop.a1, shop.sku["TEA-1"]) == (STOCK, 1)
    changed = place(db, ann, **PICKUP, store_id=shop.a1, idempotency_key="k1", points_to_use=100)
    assert await refusal(changed) == [("IDEMPOTENCY_KEY_REUSED", ("idempotencyKey",))]
    # Keys are the caller's own: another customer's "k1" is another order.
    other = await place(db, HQ, idempotency_key="k1")
    assert other.created and other.order.id != first.order.id
    async with db.read() as session:
        scopes = list(await session.scalars(select(Order.idempotency_scope).order_by(Order.id)))
    assert scopes == [f"customer:{shop.ann}", "hq"]
