"""The one hand-computed data set every report test works out its numbers from.

Two partners, A and B, each with a store (a1, b1) and a shopping guide (gA at a1, gB at b1);
HQ's own store ``hq``. Two SKUs: TEA-1 sells at 100.00 and costs 40.00 (margin 60), TEA-2
sells at 50.00 and costs 20.00 (margin 30). Two member levels: silver, gold. Every order is
paid at 04:00Z (noon in Beijing), so its business day is its UTC day. Two channels: the
mini-program (MP, delivered) and the store counter (POS, at the store named).

Customers (members since 2025-12-01 when recruited; the recruiter is kept for life):

    customer  partner  store  guide  level
    c1        A        a1     gA     gold
    c2        A        a1     gA     silver
    c3        A        a1     -      silver
    c4        B        b1     gB     gold
    c5        B        b1     gB     silver
    c6        B        b1     gB     -
    c7        -        -      -      -       (not a member)
    c8        -        -      -      -       (not a member)
    c9        A        a1     gA     -
    c10       B        b1     -      -
    c11       A        a1     gA     -       (only a wholly refunded order: never a buyer)
    c12       -        -      -      -       (no orders)

Orders of 2026 (revenue = total - refunded; margin = revenue - (cost - cost of refunded units)):

    order cust  day    channel      lines               what happened     revenue  margin
    o1    c1    01-05  MP           TEA-1                                  100      60
    o2    c1    01-20  MP           2 TEA-2                                100      60
    o3    c1    03-10  POS a1       TEA-1                                  100      60
    o26   c1    05-10  MP           TEA-1                                  100      60
    o4    c2    01-12  POS a1       2 TEA-1             1 refunded         100      60
    o5    c2    02-11  POS a1       TEA-2                                   50      30
    o6    c3    01-25  MP           TEA-2                                   50      30
    o7    c3    04-10  MP           TEA-1                                  100      60
    o8    c4    02-03  POS b1       3 TEA-1                                300     180
    o9    c4    02-20  POS b1       2 TEA-2                                100      60
    o10   c4    04-15  MP           TEA-1                                  100      60
    o11   c5    02-14  MP           TEA-1               wholly refunded    (not counted)
    o12   c5    02-16  MP           TEA-2                                   50      30
    o13   c5    05-30  MP           TEA-1                                  100      60
    o14   c6    02-22  POS b1       TEA-1                                  100      60
    o15   c7    03-02  MP           TEA-1                                  100      60
    o16   c7    03-05  MP           TEA-1               cancelled          (not counted)
    o17   c7    03-09  MP           TEA-2                                   50      30
    o18   c8    03-15  MP           2 TEA-1 + TEA-2     TEA-2 refunded     200     120
    o19   c8    04-20  POS hq       TEA-2                                   50      30
    o20   c9    03-20  POS a1       TEA-1                                  100      60
    o21   c10   03-28  MP           2 TEA-2                                100      60
    o22   c10   03-29  MP           TEA-2                                   50      30
    o23   c10   04-28  MP           TEA-2                                   50      30
    o24   c11   01-30  POS a1       TEA-1               wholly refunded    (not counted)
    o25   -     04-02  POS a1       TEA-1               no customer        (not counted)

    (o18: 250 paid, 50 refunded → 200; cost 2×40 + 20 = 100, 20 of it refunded → 200 - 80.)

Per buyer (counted orders; first order = acquisition):

    cust  orders  revenue  margin  first order   last order
    c1    4       400      240     01-05 MP      05-10
    c2    2       150       90     01-12 POS     02-11
    c3    2       150       90     01-25 MP      04-10
    c4    3       500      300     02-03 POS     04-15
    c5    2       150       90     02-16 MP      05-30   (o11 refunded: not the first)
    c6    1       100       60     02-22 POS     02-22
    c7    2       150       90     03-02 MP      03-09
    c8    2       250      150     03-15 MP      04-20
    c9    1       100       60     03-20 POS     03-20
    c10   3       200      120     03-28 MP      04-28
    all   22      2150     1290

Lifetime attribution (first touch, for life): every counted order of a member counts for
their recruiter, as the order hook records it; o11 and o24 were attributed when placed and
refunded since. Channel spend (recorded by HQ):

    spend  channel  partner  period             amount
    s1     MP       A        01-01 .. 03-31     9000.00   (90 days)
    s2     MP       -        03-01 .. 03-31     1000.00
    s3     POS      B        02-01 .. 02-28     1200.00
    s4     POS      B        03-16 .. 04-14      600.00   (30 days)
    s5     MP       B        04-01 .. 04-30      500.00
    s6     POS      A        01-31 .. 02-02      100.00   (3 days)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.attribution import attribute_orders
from api.analytics.metrics import rebuild_customer_metrics
from api.analytics.models import OrderAttribution
from api.analytics.rfm_scoring import score_rfm
from api.analytics.spend import SpendDraft, record_channel_spend
from api.auth.models import StaffUser
from api.auth.principal import Principal, Role
from api.catalog.models import Product, SalesChannel, Sku
from api.customers.models import Customer, LevelMetric, MemberLevel
from api.db import Database
from api.orders.models import Fulfillment, Order, OrderLine, OrderStatus
from api.partners import service as partners
from api.partners.models import PartnerType, Store
from tests.orders.conftest import HQ, partner_admin

__all__ = ["HQ", "MP", "POS", "SCORED_AT", "World", "at", "build", "partner_admin"]

MP = SalesChannel.MINI_PROGRAM
POS = SalesChannel.STORE_POS
PRICES = {
    "TEA-1": (Decimal("100.00"), Decimal("40.00")),
    "TEA-2": (Decimal("50.00"), Decimal("20.00")),
}
MEMBER_SINCE = datetime(2025, 12, 1, tzinfo=UTC)
# When the RFM scoring ran (and "now" for recency): after the last order.
SCORED_AT = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


def at(month: int, day: int, year: int = 2026) -> datetime:
    """04:00Z on a day of 2026: noon in Beijing, so the business day is the UTC day."""
    return datetime(year, month, day, 4, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Sale:
    name: str
    customer: str | None
    placed_at: datetime
    channel: SalesChannel
    store: str | None  # where a POS sale happened
    lines: tuple[tuple[str, int], ...]  # (SKU, units)
    refunded: tuple[int, ...] = ()  # units refunded, per line
    cancelled: bool = False


SALES = (
    Sale("o1", "c1", at(1, 5), MP, None, (("TEA-1", 1),)),
    Sale("o2", "c1", at(1, 20), MP, None, (("TEA-2", 2),)),
    Sale("o3", "c1", at(3, 10), POS, "a1", (("TEA-1", 1),)),
    Sale("o4", "c2", at(1, 12), POS, "a1", (("TEA-1", 2),), refunded=(1,)),
    Sale("o5", "c2", at(2, 11), POS, "a1", (("TEA-2", 1),)),
    Sale("o6", "c3", at(1, 25), MP, None, (("TEA-2", 1),)),
    Sale("o7", "c3", at(4, 10), MP, None, (("TEA-1", 1),)),
    Sale("o8", "c4", at(2, 3), POS, "b1", (("TEA-1", 3),)),
    Sale("o9", "c4", at(2, 20), POS, "b1", (("TEA-2", 2),)),
    Sale("o10", "c4", at(4, 15), MP, None, (("TEA-1", 1),)),
    Sale("o11", "c5", at(2, 14), MP, None, (("TEA-1", 1),), refunded=(1,)),
    Sale("o12", "c5", at(2, 16), MP, None, (("TEA-2", 1),)),
    Sale("o13", "c5", at(5, 30), MP, None, (("TEA-1", 1),)),
    Sale("o14", "c6", at(2, 22), POS, "b1", (("TEA-1", 1),)),
    Sale("o15", "c7", at(3, 2), MP, None, (("TEA-1", 1),)),
    Sale("o16", "c7", at(3, 5), MP, None, (("TEA-1", 1),), cancelled=True),
    Sale("o17", "c7", at(3, 9), MP, None, (("TEA-2", 1),)),
    Sale("o18", "c8", at(3, 15), MP, None, (("TEA-1", 2), ("TEA-2", 1)), refunded=(0, 1)),
    Sale("o19", "c8", at(4, 20), POS, "hq", (("TEA-2", 1),)),
    Sale("o20", "c9", at(3, 20), POS, "a1", (("TEA-1", 1),)),
    Sale("o21", "c10", at(3, 28), MP, None, (("TEA-2", 2),)),
    Sale("o22", "c10", at(3, 29), MP, None, (("TEA-2", 1),)),
    Sale("o23", "c10", at(4, 28), MP, None, (("TEA-2", 1),)),
    Sale("o24", "c11", at(1, 30), POS, "a1", (("TEA-1", 1),), refunded=(1,)),
    Sale("o25", None, at(4, 2), POS, "a1", (("TEA-1", 1),)),
    Sale("o26", "c1", at(5, 10), MP, None, (("TEA-1", 1),)),
)

# name → (partner, store, guide, level)
CUSTOMERS: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "c1": ("A", "a1", "gA", "gold"),
    "c2": ("A", "a1", "gA", "silver"),
    "c3": ("A", "a1", None, "silver"),
    "c4": ("B", "b1", "gB", "gold"),
    "c5": ("B", "b1", "gB", "silver"),
    "c6": ("B", "b1", "gB", None),
    "c7": (None, None, None, None),
    "c8": (None, None, None, None),
    "c9": ("A", "a1", "gA", None),
    "c10": ("B", "b1", None, None),
    "c11": ("A", "a1", "gA", None),
    "c12": (None, None, None, None),
}

# name → (channel, partner, first day, last day, amount)
SPENDS: dict[str, tuple[SalesChannel, str | None, date, date, str]] = {
    "s1": (MP, "A", date(2026, 1, 1), date(2026, 3, 31), "9000.00"),
    "s2": (MP, None, date(2026, 3, 1), date(2026, 3, 31), "1000.00"),
    "s3": (POS, "B", date(2026, 2, 1), date(2026, 2, 28), "1200.00"),
    "s4": (POS, "B", date(2026, 3, 16), date(2026, 4, 14), "600.00"),
    "s5": (MP, "B", date(2026, 4, 1), date(2026, 4, 30), "500.00"),
    "s6": (POS, "A", date(2026, 1, 31), date(2026, 2, 2), "100.00"),
}


@dataclass(slots=True)
class World:
    """Ids of everything the data set made, by the names above."""

    partners: dict[str, int] = field(default_factory=dict)
    stores: dict[str, int] = field(default_factory=dict)
    guides: dict[str, int] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)
    customers: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    spends: dict[str, int] = field(default_factory=dict)
    skus: dict[str, int] = field(default_factory=dict)

    def partner(self, name: str) -> Principal:
        """Partner ``name``'s admin (analytics:read, scoped to the partner)."""
        return partner_admin(self.partners[name])


def _status(sale: Sale) -> OrderStatus:
    if sale.cancelled:
        return OrderStatus.CANCELLED
    if sale.refunded and sum(sale.refunded) == sum(units for _, units in sale.lines):
        return OrderStatus.REFUNDED
    if any(sale.refunded):
        return OrderStatus.PARTIALLY_REFUNDED
    return OrderStatus.COMPLETED


async def build(db: Database) -> World:
    """Write the data set; keep the metrics table (and RFM, scored at SCORED_AT) and the
    attributions as the order hook and the scoring run would have left them."""
    world = World()
    async with db.transaction() as session:
        for code in ("A", "B"):
            partner = await partners.create_partner(
                session,
                HQ,
                partners.PartnerDraft(
                    code=f"p{code}", name=f"Partner {code}", type=PartnerType.AGENT
                ),
            )
            world.partners[code] = partner.id
        for code, owner in (("a1", "A"), ("b1", "B"), ("hq", None)):
            store = await partners.create_store(
                session,
                HQ,
                partners.StoreDraft(
                    code=code,
                    name=f"Store {code}",
                    region_code="310115",
                    address="上海市浦东新区世纪大道100号",
                    partner_id=world.partners[owner] if owner else None,
                ),
            )
            world.stores[code] = store.id
        for name, store, owner in (("gA", "a1", "A"), ("gB", "b1", "B")):
            guide = StaffUser(
                email=f"{name.lower()}@guides.example.com",
                password_hash="-",
                role=Role.STORE_STAFF,
                partner_id=world.partners[owner],
                store_id=world.stores[store],
            )
            session.add(guide)
            await session.flush()
            world.guides[name] = guide.id
        for rank, code in enumerate(("silver", "gold")):
            level = MemberLevel(
                code=code,
                name=f"{code.title()} 会员",
                rank=rank,
                metric=LevelMetric.SPEND,
                threshold=Decimal(rank * 1000),
            )
            session.add(level)
            await session.flush()
            world.levels[code] = level.id
        product = Product(code="TEA", name="茶具")
        session.add(product)
        await session.flush()
        for code, (price, cost) in PRICES.items():
            sku = Sku(
                product_id=product.id,
                code=code,
                name=f"茶具 {code}",
                suggested_retail_price=price,
                cost_price=cost,
            )
            session.add(sku)
            await session.flush()
            world.skus[code] = sku.id
        for name, (partner, store, guide, level) in CUSTOMERS.items():
            customer = Customer(
                name=name,
                member_since=MEMBER_SINCE if partner else None,
                recruited_partner_id=world.partners[partner] if partner else None,
                recruited_store_id=world.stores[store] if store else None,
                recruited_guide_id=world.guides[guide] if guide else None,
                level_id=world.levels[level] if level else None,
                created_at=MEMBER_SINCE,
            )
            session.add(customer)
            await session.flush()
            world.customers[name] = customer.id
        for sale in SALES:
            world.orders[sale.name] = await _insert_sale(session, world, sale, product.id)
        counted = [world.orders[s.name] for s in SALES if s.customer]
        await attribute_orders(session, counted, "first_touch", 0, now=SCORED_AT)
        # Attributed when they were placed (the hook runs at orderCreate), refunded since.
        for name in ("o11", "o24"):
            sale = next(s for s in SALES if s.name == name)
            assert sale.customer is not None
            partner, store, guide, _ = CUSTOMERS[sale.customer]
            await session.execute(
                insert(OrderAttribution).values(
                    order_id=world.orders[name],
                    customer_id=world.customers[sale.customer],
                    partner_id=world.partners[partner] if partner else None,
                    store_id=world.stores[store] if store else None,
                    guide_id=world.guides[guide] if guide else None,
                    rule="first_touch",
                    window_days=None,
                    placed_at=sale.placed_at,
                    created_at=sale.placed_at,
                )
            )
        await rebuild_customer_metrics(session, now=SCORED_AT)
        await score_rfm(session, SCORED_AT)
        for name, (channel, partner, start, end, amount) in SPENDS.items():
            result = await record_channel_spend(
                session,
                HQ,
                SpendDraft(
                    channel=channel,
                    partner_id=world.partners[partner] if partner else None,
                    period_start=start,
                    period_end=end,
                    amount=Decimal(amount),
                    idempotency_key=name,
                ),
                now=SCORED_AT,
            )
            world.spends[name] = result.spend.id
    return world


async def _insert_sale(session: AsyncSession, world: World, sale: Sale, product_id: int) -> int:
    refunded = sale.refunded or tuple(0 for _ in sale.lines)
    subtotal = sum((PRICES[sku][0] * units for sku, units in sale.lines), Decimal("0.00"))
    cost = sum((PRICES[sku][1] * units for sku, units in sale.lines), Decimal("0.00"))
    refund = sum(
        (PRICES[sku][0] * back for (sku, _), back in zip(sale.lines, refunded, strict=True)),
        Decimal("0.00"),
    )
    store = world.stores[sale.store] if sale.store else None
    seller = (
        await session.scalar(select(Store.partner_id).where(Store.id == store)) if store else None
    )
    order_id = (
        await session.execute(
            insert(Order)
            .values(
                channel=sale.channel,
                fulfillment=Fulfillment.IN_STORE if store else Fulfillment.DELIVERY,
                status=_status(sale),
                customer_id=world.customers[sale.customer] if sale.customer else None,
                partner_id=seller,
                store_id=store,
                currency="CNY",
                subtotal=subtotal,
                total=subtotal,
                cost_total=cost,
                refunded_amount=refund,
                placed_at=sale.placed_at,
                completed_at=sale.placed_at,
                created_at=sale.placed_at,
                updated_at=sale.placed_at,
            )
            .returning(Order.id)
        )
    ).scalar_one()
    await session.execute(
        insert(OrderLine),
        [
            {
                "order_id": order_id,
                "line_no": number,
                "sku_id": world.skus[sku],
                "sku_code": sku,
                "product_id": product_id,
                "quantity": units,
                "unit_price": PRICES[sku][0],
                "unit_cost": PRICES[sku][1],
                "subtotal": PRICES[sku][0] * units,
                "discount": Decimal("0.00"),
                "total": PRICES[sku][0] * units,
                "refunded_quantity": back,
            }
            for number, ((sku, units), back) in enumerate(
                zip(sale.lines, refunded, strict=True), start=1
            )
        ],
    )
    return order_id
