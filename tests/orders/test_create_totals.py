"""Money: discounts shared over lines to the cent (property-tested), and a merge moving a
person's orders to the survivor."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from api.customers.merge import merge_customers
from api.orders.discounts import allocate
from api.orders.models import Order
from tests.orders.conftest import HQ, NOW, line, lines_of, member, place
from tests.wiring import CUSTOMERS

weights = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30)


@given(weights=weights, data=st.data())
def test_shares_add_up_exactly_and_never_exceed_their_line(weights, data):
    total = data.draw(st.integers(min_value=0, max_value=sum(weights)))
    shares = allocate(total, weights)
    assert sum(shares) == total
    assert all(0 <= share <= weight for share, weight in zip(shares, weights, strict=True))
    # Proportional: each share is within a cent of its exact part.
    if sum(weights):
        assert all(
            abs(share * sum(weights) - total * weight) < sum(weights)
            for share, weight in zip(shares, weights, strict=True)
        )


def test_ties_go_to_the_earlier_line():
    assert allocate(1, [1, 1, 1]) == [1, 0, 0]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(0, [0, 0]) == [0, 0]


@given(
    quantities=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=4),
    points=st.integers(min_value=0, max_value=99),
)
def test_line_totals_add_up_to_the_order_total(quantities, points):
    """The same split an order makes: subtotals in cents, a discount, lines paying the rest."""
    prices = [Decimal("99.00"), Decimal("50.00"), Decimal("33.33"), Decimal("0.01")]
    subtotals = [prices[i % 4] * q for i, q in enumerate(quantities)]
    cents = [int(s * 100) for s in subtotals]
    discount = sum(cents) * points // 100
    shares = allocate(discount, cents)
    totals = [c - s for c, s in zip(cents, shares, strict=True)]
    assert sum(totals) == sum(cents) - discount and min(totals) >= 0


async def test_line_totals_of_a_placed_order_add_up_to_its_total(db, shop):
    order = (
        await place(
            db,
            member(shop.ann),
            lines=[line("TEA-1", 3), line("TEA-2", 1), line("NET-1", 7)],
            coupon_codes=[shop.ann_coupon],
            points_to_use=3_333,
        )
    ).order
    lines = await lines_of(db, order.id)
    assert sum(ln.discount for ln in lines) == order.coupon_discount + order.points_discount
    assert sum(ln.total for ln in lines) == order.total == Decimal("723.67")


async def test_a_merge_moves_the_orders_to_the_survivor(db, shop):
    bobs = (await place(db, HQ, customer_id=shop.bob)).order
    anns = (await place(db, HQ, customer_id=shop.ann)).order
    async with db.transaction() as session:
        preview = await merge_customers(
            session, HQ, shop.ann, [shop.bob], dry_run=True, wiring=CUSTOMERS, now=NOW
        )
    assert [m.description for m in preview.moves if m.kind == "orders"] == ["1 order"]
    async with db.transaction() as session:
        await merge_customers(
            session, HQ, shop.ann, [shop.bob], dry_run=False, wiring=CUSTOMERS, now=NOW
        )
    async with db.read() as session:
        owners = dict((await session.execute(select(Order.id, Order.customer_id))).all())
    assert owners == {bobs.id: shop.ann, anns.id: shop.ann}
