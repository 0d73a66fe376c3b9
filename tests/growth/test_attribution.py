"""Which touches may decide attribution (``attributable_touch``): any partner may
record a touch of anyone it can name by phone, so under last_touch attribution partner B's
scan of partner A's member would otherwise take A's revenue.

ann is partner A's member (recruited at a1), bob partner B's (b1)."""

from __future__ import annotations

from sqlalchemy import select

from api.catalog.models import SalesChannel
from api.customers.models import Customer, IdentityKind
from api.growth.models import Touchpoint
from api.growth.reads import attributable_touch
from api.growth.recording import CustomerRef
from api.orders.models import Fulfillment, Order
from tests.growth.conftest import HOUR, record
from tests.orders.conftest import HQ, NOW, partner_admin, place, store_staff

ANN_PHONE = "13812341234"


def ann() -> CustomerRef:
    return CustomerRef(identities=[(IdentityKind.PHONE, ANN_PHONE)])


async def attributable(db) -> dict[str, bool]:
    """Every touchpoint's event id → whether it may attribute."""
    async with db.read() as session:
        rows = await session.execute(select(Touchpoint.event_id, attributable_touch()))
    return dict(rows.all())


async def test_only_the_recruiting_partner_hq_and_qudao_touches_attribute(db, shop):
    await record(db, partner_admin(shop.partner_b), event_id="b-on-ann", customer=ann())
    await record(db, partner_admin(shop.partner_a), event_id="a-on-ann", customer=ann())
    await record(db, store_staff(shop.partner_a, shop.a2), event_id="a2-on-ann", customer=ann())
    await record(db, HQ, event_id="hq-on-ann", customer=ann(), store_id=shop.b1)
    await record(
        db,
        partner_admin(shop.partner_b),
        event_id="b-on-bob",
        customer=CustomerRef(id=shop.bob),
    )
    # An HQ-run store's staff: HQ's own customers, not a partner's.
    hq_store = store_staff(None, shop.hq)
    await record(db, hq_store, event_id="hq-store-on-ann", customer=ann())
    await record(db, hq_store, event_id="hq-store-on-new")  # a new person: nobody's
    # Qudao's own: ann's purchase at partner B's store.
    sale = await place(
        db,
        HQ,
        channel=SalesChannel.STORE_POS,
        fulfillment=Fulfillment.IN_STORE,
        store_id=shop.b1,
        customer_id=shop.ann,
    )

    assert await attributable(db) == {
        "b-on-ann": False,
        "a-on-ann": True,
        "a2-on-ann": True,
        "hq-on-ann": True,
        "b-on-bob": True,
        "hq-store-on-ann": False,
        "hq-store-on-new": True,
        f"order:{sale.order.id}": True,
    }


async def test_partner_b_cannot_take_over_the_last_touch_of_as_member(db, shop):
    """The last_touch question (api/analytics), asked with the condition: the latest
    attributable touch with a store before ann's order is A's, though B's came later. The
    condition composes in a subquery correlated to the order, on both engines."""
    await record(
        db,
        partner_admin(shop.partner_a),
        event_id="a",
        customer=ann(),
        store_id=shop.a1,
        occurred_at=NOW - 3 * HOUR,
    )
    await record(
        db,
        partner_admin(shop.partner_b),
        event_id="b",
        customer=ann(),
        store_id=shop.b1,
        occurred_at=NOW - 2 * HOUR,
    )
    order = (await place(db, HQ, customer_id=shop.ann)).order

    def latest(*conditions):
        return (
            select(Touchpoint.event_id)
            .where(
                Touchpoint.customer_id == Order.customer_id,
                Touchpoint.store_id.is_not(None),
                Touchpoint.occurred_at <= Order.placed_at,
                *conditions,
            )
            .order_by(Touchpoint.occurred_at.desc(), Touchpoint.id.desc())
            .limit(1)
            .correlate(Order)
            .scalar_subquery()
        )

    async with db.read() as session:
        row = (
            await session.execute(
                select(latest(), latest(attributable_touch()))
                .select_from(Order)
                .join(Customer, Customer.id == Order.customer_id)
                .where(Order.id == order.id)
            )
        ).one()
    assert tuple(row) == ("b", "a")
