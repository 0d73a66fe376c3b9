"""Property: whatever happens to orders, in whatever order, the incrementally kept
``customer_metrics`` equal what a rebuild computes, row for row and column for column.

Hypothesis draws a sequence of: orders (mini-program delivery, POS sales at a1 or b1, pickups
at a1; one or two lines) of three customers (a member recruited at a1, one at b1, one with no
recruiter), partial refunds (one unit) and refunds of the rest, cancellations, pickups,
the expiry job, time passing, merges (one of the three into another, through the real
merge), and marketplace imports found by a customer's phone. Every step goes through the
real services (api/orders/placing.py, lifecycle/, importer/, api/customers/merge.py);
a step the services refuse (refunding an open pickup, ...) changes nothing and is fine.

After every step ``metrics_differences`` finds nothing; after the sequence a rebuild
rewrites every row exactly as it was, and every attribution belongs to the live customer
who holds its order.

Each example uses three new customers in the same database (a fresh database per example
would make this slow); the checks are global, so they cover what later steps do to earlier
examples' orders too (the expiry job, imports).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from api.analytics.metrics import metrics_differences, rebuild_customer_metrics
from api.analytics.models import OrderAttribution
from api.cache import InProcessCache
from api.catalog.models import SalesChannel
from api.customers.merge import merge_customers
from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.db import Database
from api.errors import DomainError
from api.inventory.models import StockLevel
from api.orders.importer import running
from api.orders.importer.records import ImportFormat
from api.orders.importer.running import ImportOptions
from api.orders.lifecycle import cancel as cancelling
from api.orders.lifecycle import pickup as pickups
from api.orders.models import OPEN_PICKUP, Fulfillment, Order
from api.orders.pickup_codes import pickup_secret
from tests.analytics.shop_metrics import (
    HQ,
    T0,
    Shop,
    configured,
    expire,
    line,
    new_customer,
    order,
    rebuild_agrees,
    refund,
    shop,
    wiring_in_force,
)
from tests.orders.conftest import lines_of, store_staff
from tests.orders.test_import import csv_text, row
from tests.wiring import CUSTOMERS

__all__ = ["shop"]  # a fixture: pytest finds it here

WHO = st.integers(0, 2)
ORDER = st.integers(0, 30)  # which of the example's orders (modulo how many there are)
KINDS = {
    "mini": (SalesChannel.MINI_PROGRAM, Fulfillment.DELIVERY, None),
    "pos_a1": (SalesChannel.STORE_POS, Fulfillment.IN_STORE, "a1"),
    "pos_b1": (SalesChannel.STORE_POS, Fulfillment.IN_STORE, "b1"),
    "pickup_a1": (SalesChannel.MINI_PROGRAM, Fulfillment.PICKUP, "a1"),
}
# An order's lines: one unit or several, one line or two (a partial refund takes one unit).
LINES = st.sampled_from(
    [
        (("TEA-1", 1),),
        (("TEA-2", 2),),
        (("TEA-1", 3), ("TEA-2", 1)),
        (("TEA-2", 1), ("TEA-1", 2)),
    ]
)
ORDER_OP = st.tuples(st.just("order"), WHO, st.sampled_from(sorted(KINDS)), LINES)

# A few orders first, so that what follows has something to act on; then anything (orders
# again twice as likely as each other step).
operations = st.tuples(
    st.lists(ORDER_OP, min_size=1, max_size=3),
    st.lists(
        st.one_of(
            ORDER_OP,
            ORDER_OP,
            st.tuples(st.just("refund_part"), ORDER),
            st.tuples(st.just("refund_all"), ORDER),
            st.tuples(st.just("cancel"), ORDER),
            st.tuples(st.just("pickup"), ORDER),
            st.tuples(st.just("expire")),
            st.tuples(st.just("wait"), st.integers(1, 120)),  # hours
            st.tuples(st.just("merge"), WHO, WHO),
            st.tuples(st.just("import"), WHO, st.integers(1, 3)),
        ),
        max_size=10,
    ),
).map(lambda parts: parts[0] + parts[1])
POLICIES = st.sampled_from([("first_touch", 0), ("last_touch", 30)])

_examples = itertools.count()
_phones = itertools.count()


@dataclass
class World:
    db: Database
    shop: Shop
    secret: bytes
    customers: list[int]
    phones: list[str]
    tag: str
    now: datetime = T0
    merged: dict[int, int] = field(default_factory=dict)  # customer → who it went into
    orders: list[int] = field(default_factory=list)
    serial: itertools.count = field(default_factory=itertools.count)

    def live(self, who: int) -> int:
        customer = self.customers[who]
        while customer in self.merged:
            customer = self.merged[customer]
        return customer

    def pick(self, index: int) -> int | None:
        return self.orders[index % len(self.orders)] if self.orders else None


async def new_world(db: Database, shop: Shop, secret: bytes) -> World:
    tag = f"x{next(_examples)}"
    recruiters = [(shop.a1, shop.partner_a), (shop.b1, shop.partner_b), (None, None)]
    customers, phones = [], []
    for n, (store, partner) in enumerate(recruiters):
        since = T0 if store else None
        customers.append(
            await new_customer(db, f"{tag}-{n}", since=since, store_id=store, partner_id=partner)
        )
        phones.append(f"139{next(_phones):08d}")
    async with db.transaction() as session:
        session.add_all(
            CustomerIdentity(customer_id=c, kind=IdentityKind.PHONE, value=p)
            for c, p in zip(customers, phones, strict=True)
        )
        # Enough stock for any example: the checks are about money, not shortages.
        await session.execute(update(StockLevel).values(on_hand=StockLevel.reserved + 100_000))
    return World(db, shop, secret, customers, phones, tag)


async def status_of(db: Database, order_id: int) -> Order:
    async with db.read() as session:
        return await session.get_one(Order, order_id)


async def step(world: World, op: tuple) -> None:
    db, shop = world.db, world.shop
    kind = op[0]
    if kind == "order":
        _, who, shape, lines = op
        channel, fulfillment, store = KINDS[shape]
        placed = await order(
            db,
            world.live(who),
            *(line(code, n) for code, n in lines),
            at=world.now,
            channel=channel,
            fulfillment=fulfillment,
            store_id=getattr(shop, store) if store else None,
        )
        world.orders.append(placed.id)
    elif kind in ("refund_part", "refund_all"):
        order_id = world.pick(op[1])
        if order_id is None:
            return
        units = None
        if kind == "refund_part":
            left = [x for x in await lines_of(db, order_id) if x.refunded_quantity < x.quantity]
            if not left:
                return
            units = [(left[0].id, 1)]
        await refund(db, order_id, f"{world.tag}-r{next(world.serial)}", units, at=world.now)
    elif kind == "cancel":
        order_id = world.pick(op[1])
        if order_id is not None:
            async with db.transaction() as session:
                await cancelling.cancel(
                    session, HQ, order_id, reason="no", now=world.now, wiring=wiring_in_force()
                )
    elif kind == "pickup":
        order_id = world.pick(op[1])
        if order_id is None:
            return
        found = await status_of(db, order_id)
        if found.status not in OPEN_PICKUP or found.pickup_code is None:
            return
        async with db.transaction() as session:
            await pickups.pickup(
                session,
                InProcessCache(),
                store_staff(shop.partner_a, shop.a1),
                pickups.PickupProof(code=found.pickup_code),
                store_id=shop.a1,
                secret=world.secret,
                now=world.now,
                wiring=wiring_in_force(),
            )
    elif kind == "expire":
        await expire(db, world.now)
    elif kind == "wait":
        world.now += timedelta(hours=op[1])
    elif kind == "merge":
        source, target = world.live(op[1]), world.live(op[2])
        if source == target:
            return
        async with db.transaction() as session:
            await merge_customers(
                session, HQ, target, [source], dry_run=False, wiring=CUSTOMERS, now=world.now
            )
        world.merged[source] = target
    elif kind == "import":
        _, who, n = op
        data = csv_text(
            *(
                row(
                    f"{world.tag}-{next(world.serial)}",
                    buyer=f"{world.tag}-b{who}",
                    phone=world.phones[who],
                    paid_at=world.now.isoformat(),
                )
                for _ in range(n)
            )
        )
        await running.import_orders(
            db,
            io.BytesIO(data.encode()),
            ImportFormat.CSV,
            options=ImportOptions(),
            now=world.now,
            wiring=wiring_in_force(),
        )
    else:  # pragma: no cover - the strategy draws only the kinds above
        raise AssertionError(kind)


async def attributions_follow_their_orders(db: Database) -> None:
    async with db.read() as session:
        astray = await session.scalar(
            select(func.count())
            .select_from(OrderAttribution)
            .join(Order, Order.id == OrderAttribution.order_id)
            .join(Customer, Customer.id == OrderAttribution.customer_id)
            .where(
                (OrderAttribution.customer_id != Order.customer_id)
                | (Customer.status != CustomerStatus.ACTIVE)
            )
        )
    assert astray == 0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, policy=POLICIES)
async def test_incremental_metrics_equal_a_rebuild_after_any_sequence(
    db, shop, settings, ops, policy
):
    world = await new_world(db, shop, pickup_secret(settings.key_ring()))
    # A failing example (while Hypothesis shrinks) must not leave its wrong rows to the next.
    async with db.transaction() as session:
        await rebuild_customer_metrics(session)
    with configured(*policy):
        for op in ops:
            try:
                await step(world, op)
                event(op[0])
            except DomainError:
                # Refused (not refundable, not cancellable ...): nothing changed.
                event(f"{op[0]} refused")
            async with db.read() as session:
                assert await metrics_differences(session) == [], op
    await rebuild_agrees(db)
    await attributions_follow_their_orders(db)
