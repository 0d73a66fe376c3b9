"""The people every segment test selects from (``people`` fixture), built row by row.

``NOW`` is the real clock at import (the API evaluates relative dates against the clock);
service calls pass ``now=NOW``. Days below are "days before NOW".

| who | member | partner/store | level | gender | first channel | tags | attributes |
| --- | --- | --- | --- | --- | --- | --- | --- |
| ann | 100d ago | pa / a1 | gold | female | mini_program | vip | color red, age 34 |
| bob | 400d ago | pb / b1 | platinum | male | tmall | vip, vip_blacklist | color blue, age '40' |
| cat | no | none | none | none | store_pos | none | none |
| dan | 20d ago | pa / a1 | silver | male | mini_program | new | color red |
| fay | 5d ago | pa / a1 | gold | female | douyin | none | age 29 |
| eve | merged into ann: never a member of anything | | | | | vip | |

ann's guide is guide@a.test; bob's age is the text '40', the others' ages are numbers.

| who | created | orders | spent | avg | margin | first / last order | R/F/M, RFM segment | points |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| ann | 400d | 5 | 900.00 | 180.00 | 300 | 300d / 10d (first on tmall) | 5/4/5 champions | 1200 |
| bob | 500d | 3 | 450.50 | 150.17 | 100 | 200d / 45d | 3/3/3 loyal | 0 (an account) |
| cat | 3d | (no metrics row: 0 orders, 0 spent) | | | | | | (no account) |
| dan | 25d | 1 | 99.00 | 99.00 | 30 | 20d / 20d | none | 50 |
| fay | 6d | 2 | 200.00 | 100.00 | 50 | 150d / 100d | 1/2/2 at_risk | 10 |

Consent to marketing messages: ann, bob, dan granted; cat refused; fay never asked.
Consent to profiling: ann, fay.

Orders (products TEA: SKUs TEA-1, TEA-2; NET: SKU NET-1):
ann bought TEA-1 10d ago; bob TEA-2 45d ago, and TEA-1 in an order wholly refunded; dan 20d
ago TEA-1 (that line refunded) and NET-1 in one partially refunded order; fay TEA-2 100d ago.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio

from api.analytics.models import CustomerMetrics
from api.auth.models import StaffUser
from api.auth.principal import Role
from api.catalog.models import Product, SalesChannel, Sku
from api.customers.models import (
    ConsentPurpose,
    Customer,
    CustomerConsent,
    CustomerStatus,
    CustomerTag,
    LevelMetric,
    MemberLevel,
)
from api.db import Database, utcnow
from api.loyalty.models import PointsAccount
from api.orders.models import Fulfillment, Order, OrderLine, OrderStatus
from api.partners import service as partners
from api.partners.models import PartnerType
from api.segments import compiler
from api.segments.parser import parse
from tests.catalog.conftest import as_principal
from tests.orders.conftest import HQ

NOW = utcnow()
DAY = timedelta(days=1)
NAMES = ("ann", "bob", "cat", "dan", "fay", "eve")


@dataclass(frozen=True, slots=True)
class People:
    ids: dict[str, int]  # name -> customer id
    partner_a: int
    partner_b: int
    a1: int
    b1: int
    guide: int

    def names(self, ids: Iterable[int]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[i] for i in ids}


def _metrics(customer_id: int, **values: Any) -> CustomerMetrics:
    return CustomerMetrics(customer_id=customer_id, updated_at=NOW, **values)


def _order(
    customer_id: int, placed_days: int, status: OrderStatus, lines: list[dict[str, Any]]
) -> Order:
    total = sum((line["total"] for line in lines), Decimal(0))
    return Order(
        channel=SalesChannel.MINI_PROGRAM,
        fulfillment=Fulfillment.DELIVERY,
        status=status,
        customer_id=customer_id,
        subtotal=total,
        total=total,
        cost_total=Decimal("10.00") * len(lines),
        refunded_amount=Decimal(0),
        placed_at=NOW - placed_days * DAY,
        created_at=NOW - placed_days * DAY,
        updated_at=NOW,
    )


@pytest_asyncio.fixture
async def people(db: Database) -> People:
    async with db.transaction() as session:
        pa = await partners.create_partner(
            session, HQ, partners.PartnerDraft(code="pa", name="Partner A", type=PartnerType.AGENT)
        )
        pb = await partners.create_partner(
            session, HQ, partners.PartnerDraft(code="pb", name="Partner B", type=PartnerType.AGENT)
        )
        stores = {}
        for code, partner in (("a1", pa.id), ("b1", pb.id)):
            store = await partners.create_store(
                session,
                HQ,
                partners.StoreDraft(
                    code=code,
                    name=f"Store {code}",
                    region_code="310115",
                    address="上海市浦东新区世纪大道100号",
                    partner_id=partner,
                ),
            )
            stores[code] = store.id
        guide = StaffUser(
            email="guide@a.test",
            password_hash="-",
            role=Role.STORE_STAFF,
            partner_id=pa.id,
            store_id=stores["a1"],
        )
        levels = {
            code: MemberLevel(
                code=code,
                name=code.title(),
                rank=rank,
                metric=LevelMetric.SPEND,
                threshold=Decimal(rank * 1000),
            )
            for rank, code in enumerate(("silver", "gold", "platinum"))
        }
        session.add_all([guide, *levels.values()])
        await session.flush()

        def person(**values: Any) -> Customer:
            created = values.pop("created_days")
            since = values.pop("member_days", None)
            level = values.pop("level", None)
            values.setdefault("status", CustomerStatus.ACTIVE)
            return Customer(
                created_at=NOW - created * DAY,
                updated_at=NOW,
                member_since=NOW - since * DAY if since is not None else None,
                level_id=levels[level].id if level else None,
                **values,
            )

        ann = person(
            name="ann", created_days=400, member_days=100, level="gold", gender="female",
            first_channel="mini_program", attributes={"color": "red", "age": 34},
            recruited_partner_id=pa.id, recruited_store_id=stores["a1"],
            recruited_guide_id=guide.id,
        )  # fmt: skip
        bob = person(
            name="bob", created_days=500, member_days=400, level="platinum", gender="male",
            first_channel="tmall", attributes={"color": "blue", "age": "40"},
            recruited_partner_id=pb.id, recruited_store_id=stores["b1"],
        )  # fmt: skip
        cat = person(name="cat", created_days=3, first_channel="store_pos", attributes={})
        dan = person(
            name="dan", created_days=25, member_days=20, level="silver", gender="male",
            first_channel="mini_program", attributes={"color": "red"},
            recruited_partner_id=pa.id, recruited_store_id=stores["a1"],
        )  # fmt: skip
        fay = person(
            name="fay", created_days=6, member_days=5, level="gold", gender="female",
            first_channel="douyin", attributes={"age": 29},
            recruited_partner_id=pa.id, recruited_store_id=stores["a1"],
        )  # fmt: skip
        session.add_all([ann, bob, cat, dan, fay])
        await session.flush()
        eve = person(
            name="eve", created_days=50, member_days=40, attributes={"color": "red"},
            status=CustomerStatus.MERGED, merged_into_id=ann.id,
            recruited_partner_id=pa.id, recruited_store_id=stores["a1"],
        )  # fmt: skip
        session.add(eve)
        await session.flush()
        ids = {c.name: c.id for c in (ann, bob, cat, dan, fay, eve)}

        session.add_all(
            [
                CustomerTag(customer_id=ids[who], tag=tag, created_at=NOW)
                for who, tag in (
                    ("ann", "vip"),
                    ("bob", "vip"),
                    ("bob", "vip_blacklist"),
                    ("dan", "new"),
                    ("eve", "vip"),
                )
            ]
        )
        session.add_all(
            [
                CustomerConsent(
                    customer_id=ids[who],
                    purpose=purpose,
                    granted=granted,
                    source="test",
                    decided_at=NOW,
                )
                for who, purpose, granted in (
                    ("ann", ConsentPurpose.MARKETING_MESSAGES, True),
                    ("bob", ConsentPurpose.MARKETING_MESSAGES, True),
                    ("cat", ConsentPurpose.MARKETING_MESSAGES, False),
                    ("dan", ConsentPurpose.MARKETING_MESSAGES, True),
                    ("eve", ConsentPurpose.MARKETING_MESSAGES, True),
                    ("ann", ConsentPurpose.PROFILING, True),
                    ("fay", ConsentPurpose.PROFILING, True),
                )
            ]
        )
        session.add_all(
            [
                _metrics(
                    ids["ann"], orders_count=5, total_spent=Decimal("900.00"),
                    avg_order_value=Decimal("180.00"), gross_margin=Decimal("300.00"),
                    first_order_at=NOW - 300 * DAY, last_order_at=NOW - 10 * DAY,
                    first_order_channel="tmall", rfm_recency=5, rfm_frequency=4,
                    rfm_monetary=5, rfm_segment="champions",
                ),
                _metrics(
                    ids["bob"], orders_count=3, total_spent=Decimal("450.50"),
                    avg_order_value=Decimal("150.17"), gross_margin=Decimal("100.00"),
                    first_order_at=NOW - 200 * DAY, last_order_at=NOW - 45 * DAY,
                    first_order_channel="mini_program", rfm_recency=3, rfm_frequency=3,
                    rfm_monetary=3, rfm_segment="loyal",
                ),
                _metrics(
                    ids["dan"], orders_count=1, total_spent=Decimal("99.00"),
                    avg_order_value=Decimal("99.00"), gross_margin=Decimal("30.00"),
                    first_order_at=NOW - 20 * DAY, last_order_at=NOW - 20 * DAY,
                    first_order_channel="mini_program",
                ),
                _metrics(
                    ids["fay"], orders_count=2, total_spent=Decimal("200.00"),
                    avg_order_value=Decimal("100.00"), gross_margin=Decimal("50.00"),
                    first_order_at=NOW - 150 * DAY, last_order_at=NOW - 100 * DAY,
                    first_order_channel="douyin", rfm_recency=1, rfm_frequency=2,
                    rfm_monetary=2, rfm_segment="at_risk",
                ),
            ]
        )  # fmt: skip
        session.add_all(
            [
                PointsAccount(
                    customer_id=ids[who],
                    balance=balance,
                    pending=0,
                    debt=0,
                    version=0,
                    updated_at=NOW,
                )
                for who, balance in (("ann", 1200), ("bob", 0), ("dan", 50), ("fay", 10))
            ]
        )

        tea, net = Product(code="TEA", name="茶"), Product(code="NET", name="网")
        session.add_all([tea, net])
        await session.flush()
        skus = {
            code: Sku(
                product_id=product.id,
                code=code,
                name=code,
                suggested_retail_price=Decimal("100.00"),
                cost_price=Decimal("10.00"),
            )
            for code, product in (("TEA-1", tea), ("TEA-2", tea), ("NET-1", net))
        }
        session.add_all(skus.values())
        await session.flush()

        def line(code: str, refunded: int = 0) -> dict[str, Any]:
            sku = skus[code]
            return {
                "sku_id": sku.id,
                "sku_code": code,
                "product_id": sku.product_id,
                "quantity": 1,
                "unit_price": Decimal("100.00"),
                "unit_cost": Decimal("10.00"),
                "subtotal": Decimal("100.00"),
                "discount": Decimal(0),
                "total": Decimal("100.00"),
                "refunded_quantity": refunded,
            }

        for who, days, status, lines in (
            ("ann", 10, OrderStatus.COMPLETED, [line("TEA-1")]),
            ("bob", 45, OrderStatus.COMPLETED, [line("TEA-2")]),
            ("bob", 30, OrderStatus.REFUNDED, [line("TEA-1", refunded=1)]),
            ("dan", 20, OrderStatus.PARTIALLY_REFUNDED, [line("TEA-1", 1), line("NET-1")]),
            ("fay", 100, OrderStatus.PLACED, [line("TEA-2")]),
        ):
            order = _order(ids[who], days, status, lines)
            session.add(order)
            await session.flush()
            session.add_all(
                [OrderLine(order_id=order.id, line_no=i + 1, **v) for i, v in enumerate(lines)]
            )
    return People(
        ids=ids,
        partner_a=pa.id,
        partner_b=pb.id,
        a1=stores["a1"],
        b1=stores["b1"],
        guide=guide.id,
    )


async def members(
    db: Database, people: People, query: str, *, partner_id: int | None = None
) -> set[str]:
    """Who the query selects (by name), through the compiled members statement; the count
    statement must agree."""
    expr = parse(query)
    async with db.read() as session:
        ids = list(
            await session.scalars(compiler.members_statement(expr, now=NOW, partner_id=partner_id))
        )
        counted = await session.scalar(
            compiler.count_statement(expr, now=NOW, partner_id=partner_id)
        )
    assert counted == len(ids), query
    return people.names(ids)


async def selections(
    db: Database, people: People, table: dict[str, set[str]]
) -> dict[str, set[str]]:
    """Each query of ``table`` → who it selects; compare with ``table`` in one assert."""
    return {query: await members(db, people, query) for query in table}


__all__ = ["as_principal"]
