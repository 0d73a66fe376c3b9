"""The shop every orders test works in (``shop`` fixture), the principals who place orders,
and helpers that place one and look at what it did.

The shop, built straight in the database (the catalog and stock are plain rows; partners,
stores, coupons and points go through their services):

* partner A (territory: province 310000 Shanghai) with store ``a1`` (310115, pickup) and
  store ``a2`` (440305 Shenzhen: outside A's territory, pickup); partner B (territory
  110000 Beijing) with store ``b1`` (110105, pickup); HQ's own store ``hq`` (310101, no
  pickup) and warehouse ``wh`` (310115);
* product 茶具 with SKUs ``TEA-1`` (SRP 100, cost 40; bands: MINI_PROGRAM and WEB 80-120
  listed at 99, STORE_POS 90-110 at the SRP, TMALL 85-115), ``TEA-2`` (SRP 50, cost 20, no
  bands), ``NET-1`` (SRP 60, cost 25, 线上专供: MINI_PROGRAM and WEB only) and ``OLD-1``
  (inactive); all priced in CNY;
* stock: ``STOCK`` (20) of every SKU at every location;
* customers: ``ann`` (member recruited at a1, phone 13812341234, ``POINTS`` (10,000) spendable
  points, coupon ``ann_coupon``: ¥10 off, usable anywhere online or offline), ``bob``
  (recruited at b1, coupon ``bob_coupon`` of the same template), ``cat`` (no recruiter);
* an earning rule: 1 point per yuan paid, any channel (earned points are pending 7 days).

Times: ``NOW`` is the real clock at import (HTTP mutations use the real clock; coupons are
valid from a day before it for 30 days). Service calls pass ``now=NOW``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import func, insert, select

from api import events
from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.catalog.models import PriceBand, Product, SalesChannel, Sku, SkuExclusiveChannel
from api.coupons import claims as coupon_claims
from api.coupons import templates as coupon_templates
from api.coupons.models import Coupon, CouponChannel, CouponKind, CouponOrigin, CouponTemplate
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import Database, utcnow
from api.errors import DomainError
from api.graphql.ids import encode_id
from api.inventory.models import StockLevel
from api.loyalty import balances as loyalty_balances
from api.loyalty import earning as loyalty_earning
from api.loyalty.models import PointsEarningRule
from api.loyalty.rules import PointsPolicy
from api.orders import placing
from api.orders.drafts import LineDraft, OrderDraft
from api.orders.models import Fulfillment, Order, OrderLine
from api.orders.reactions import OrdersWiring
from api.partners import service as partners
from api.partners.models import PartnerType, StoreKind
from tests.wiring import POINTS_POLICY, orders_wiring

NOW = utcnow()
DAY = timedelta(days=1)
STOCK = 20
POINTS = 10_000

HQ = Principal("user:1", Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


def member(customer_id: int) -> Principal:
    return Principal(
        f"customer:{customer_id}",
        Role.MEMBER,
        customer_id=customer_id,
        scopes=ROLE_SCOPES[Role.MEMBER],
    )


def store_staff(partner_id: int | None, store_id: int) -> Principal:
    return Principal(
        f"staff:{store_id}",
        Role.STORE_STAFF,
        partner_id=partner_id,
        store_id=store_id,
        scopes=ROLE_SCOPES[Role.STORE_STAFF],
    )


def partner_admin(partner_id: int) -> Principal:
    return Principal(
        f"admin:{partner_id}",
        Role.PARTNER_ADMIN,
        partner_id=partner_id,
        scopes=ROLE_SCOPES[Role.PARTNER_ADMIN],
    )


def integration(partner_id: int, store_id: int | None = None) -> Principal:
    """A partner's system (ERP, POS, marketplace shop) over client credentials."""
    return Principal(
        f"client:erp-{partner_id}",
        Role.INTEGRATION,
        partner_id=partner_id,
        store_id=store_id,
        scopes=frozenset({"orders:read", "orders:write", "stock:write"}),
    )


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings an order reads (``api.orders.reactions.OrderSettings``), set per test."""

    pickup_window_hours: int = 72
    points_per_yuan: int = 100
    points_max_share_percent: int = 50
    points_policy: PointsPolicy = field(default_factory=PointsPolicy)


@dataclass(frozen=True, slots=True)
class Shop:
    partner_a: int
    partner_b: int
    a1: int
    a2: int
    b1: int
    hq: int
    wh: int
    sku: dict[str, int]  # code -> id
    product: int
    ann: int
    bob: int
    cat: int
    template: int  # the ¥10-off template of ann's and bob's coupons
    ann_coupon: str
    bob_coupon: str


async def _location(session: Any, code: str, partner_id: int | None, region: str, **kw: Any) -> int:
    store = await partners.create_store(
        session,
        HQ,
        partners.StoreDraft(
            code=code,
            name=f"Store {code}",
            region_code=region,
            address="上海市浦东新区世纪大道100号",
            partner_id=partner_id,
            offers_pickup=kw.pop("offers_pickup", True),
        ),
    )
    for name, value in kw.items():
        setattr(store, name, value)
    return store.id


@pytest_asyncio.fixture
async def shop(db: Database) -> Shop:
    async with db.transaction() as session:
        a = await partners.create_partner(
            session,
            HQ,
            partners.PartnerDraft(
                code="pa", name="Partner A", type=PartnerType.AGENT, territories=["310000"]
            ),
        )
        b = await partners.create_partner(
            session,
            HQ,
            partners.PartnerDraft(
                code="pb", name="Partner B", type=PartnerType.AGENT, territories=["110000"]
            ),
        )
        a1 = await _location(session, "a1", a.id, "310115")
        a2 = await _location(session, "a2", a.id, "440305")
        b1 = await _location(session, "b1", b.id, "110105")
        hq = await _location(session, "hq", None, "310101", offers_pickup=False)
        wh = await _location(
            session, "wh", None, "310115", offers_pickup=False, kind=StoreKind.WAREHOUSE
        )
        product = Product(code="TEA", name="茶具")
        session.add(product)
        await session.flush()
        skus = {
            code: Sku(
                product_id=product.id,
                code=code,
                name=f"茶具 {code}",
                suggested_retail_price=Decimal(srp),
                cost_price=Decimal(cost),
                active=code != "OLD-1",
            )
            for code, srp, cost in (
                ("TEA-1", "100.00", "40.00"),
                ("TEA-2", "50.00", "20.00"),
                ("NET-1", "60.00", "25.00"),
                ("OLD-1", "30.00", "10.00"),
            )
        }
        session.add_all(skus.values())
        await session.flush()
        tea = skus["TEA-1"].id
        session.add_all(
            [
                PriceBand(
                    sku_id=tea,
                    channel=SalesChannel.MINI_PROGRAM,
                    floor=Decimal("80.00"),
                    ceiling=Decimal("120.00"),
                    list_price=Decimal("99.00"),
                ),
                PriceBand(
                    sku_id=tea,
                    channel=SalesChannel.WEB,
                    floor=Decimal("80.00"),
                    ceiling=Decimal("120.00"),
                    list_price=Decimal("99.00"),
                ),
                PriceBand(
                    sku_id=tea,
                    channel=SalesChannel.STORE_POS,
                    floor=Decimal("90.00"),
                    ceiling=Decimal("110.00"),
                ),
                PriceBand(
                    sku_id=tea,
                    channel=SalesChannel.TMALL,
                    floor=Decimal("85.00"),
                    ceiling=Decimal("115.00"),
                ),
                SkuExclusiveChannel(sku_id=skus["NET-1"].id, channel=SalesChannel.MINI_PROGRAM),
                SkuExclusiveChannel(sku_id=skus["NET-1"].id, channel=SalesChannel.WEB),
            ]
        )
        await session.execute(
            insert(StockLevel),
            [
                {"store_id": location, "sku_id": sku.id, "on_hand": STOCK, "reserved": 0}
                for location in (a1, a2, b1, hq, wh)
                for sku in skus.values()
            ],
        )
        ann = Customer(
            name="王小丫",
            recruited_partner_id=a.id,
            recruited_store_id=a1,
            member_since=NOW - 30 * DAY,
        )
        bob = Customer(name="李雷", recruited_partner_id=b.id, recruited_store_id=b1)
        cat = Customer(name="韩梅梅")
        session.add_all([ann, bob, cat])
        await session.flush()
        session.add(
            CustomerIdentity(customer_id=ann.id, kind=IdentityKind.PHONE, value="13812341234")
        )
        session.add(PointsEarningRule(name="1 point a yuan", points_per_yuan=Decimal(1)))
        await loyalty_earning.earn(
            session,
            ann.id,
            POINTS,
            source_type="test",
            source_id="welcome",
            reason="welcome",
            actor=None,
            now=NOW - DAY,
            pending=False,
            policy=POINTS_POLICY,
        )
        template = await coupon_templates.create_template(
            session, HQ, coupon_draft(name="立减10元", per_person_limit=5), now=NOW - 2 * DAY
        )
        held = {}
        for customer in (ann, bob):
            result = await coupon_claims.claim(
                session,
                HQ,
                template.id,
                customer.id,
                channel=CouponChannel.ONLINE,
                now=NOW - DAY,
                origin=CouponOrigin.GRANT,
            )
            held[customer.id] = result.coupon.code
    return Shop(
        partner_a=a.id,
        partner_b=b.id,
        a1=a1,
        a2=a2,
        b1=b1,
        hq=hq,
        wh=wh,
        sku={code: sku.id for code, sku in skus.items()},
        product=product.id,
        ann=ann.id,
        bob=bob.id,
        cat=cat.id,
        template=template.id,
        ann_coupon=held[ann.id],
        bob_coupon=held[bob.id],
    )


def coupon_draft(**overrides: Any) -> coupon_templates.TemplateDraft:
    """A template: ¥10 off (直减), claimed and used anywhere, valid a day before NOW for 30."""
    values: dict[str, Any] = {
        "name": "立减",
        "kind": CouponKind.FIXED_OFF,
        "claim_channel": CouponChannel.BOTH,
        "use_channel": CouponChannel.BOTH,
        "total_stock": 1000,
        "discount_amount": Decimal("10.00"),
        "valid_from": NOW - DAY,
        "valid_until": NOW + 30 * DAY,
    }
    values.update(overrides)
    return coupon_templates.TemplateDraft(**values)


async def grant_coupon(db: Database, customer_id: int, **template: Any) -> str:
    """A new template (``coupon_draft`` with ``template`` overrides) and its coupon for the
    customer; returns the code."""
    async with db.transaction() as session:
        created = await coupon_templates.create_template(
            session, HQ, coupon_draft(**template), now=NOW - 2 * DAY
        )
        result = await coupon_claims.claim(
            session,
            HQ,
            created.id,
            customer_id,
            channel=CouponChannel.ONLINE,
            now=NOW - DAY,
            origin=CouponOrigin.GRANT,
        )
    return result.coupon.code


def line(code: str = "TEA-1", quantity: int = 1, price: str | None = None) -> LineDraft:
    return LineDraft(quantity=quantity, sku_code=code, unit_price=Decimal(price) if price else None)


def draft(**overrides: Any) -> OrderDraft:
    """An order draft: by default a MINI_PROGRAM DELIVERY of one TEA-1, no customer."""
    values: dict[str, Any] = {
        "channel": SalesChannel.MINI_PROGRAM,
        "fulfillment": Fulfillment.DELIVERY,
        "lines": [line()],
    }
    values.update(overrides)
    return OrderDraft(**values)


async def place(
    db: Database,
    principal: Principal,
    policy: Policy | None = None,
    now: Any = NOW,
    wiring: OrdersWiring | None = None,
    **overrides: Any,
) -> placing.OrderResult:
    """Place ``draft(**overrides)`` as ``principal`` in its own transaction (with every
    reaction of ``api/wiring.py``, under ``policy``, unless a test hands its own ``wiring``)."""
    async with db.transaction() as session:
        return await placing.create_order(
            session,
            principal,
            draft(**overrides),
            wiring=wiring or orders_wiring(policy or Policy()),
            now=now,
        )


async def refusal(call: Awaitable[Any]) -> list[tuple[str, tuple[str, ...] | None]]:
    """The (code, field) of every problem a call is refused with; [] when it succeeds."""
    try:
        await call
    except DomainError as error:
        return [(p.code.name, p.field) for p in error.problems]
    return []


async def stock(db: Database, store_id: int, sku_id: int) -> tuple[int, int]:
    """(on hand, reserved) of a SKU at a location."""
    async with db.read() as session:
        row = (
            await session.execute(
                select(StockLevel.on_hand, StockLevel.reserved).where(
                    StockLevel.store_id == store_id, StockLevel.sku_id == sku_id
                )
            )
        ).one()
    return row.on_hand, row.reserved


async def balance(db: Database, customer_id: int) -> loyalty_balances.Balance:
    async with db.read() as session:
        return (await loyalty_balances.balances_of(session, [customer_id], NOW))[customer_id]


async def coupon_row(db: Database, code: str) -> Coupon:
    async with db.read() as session:
        return (await session.execute(select(Coupon).where(Coupon.code == code))).scalar_one()


async def order_count(db: Database) -> int:
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(Order)) or 0


async def lines_of(db: Database, order_id: int) -> list[OrderLine]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.line_no)
            )
        )


async def template_row(db: Database, template_id: int) -> CouponTemplate:
    async with db.read() as session:
        return await session.get_one(CouponTemplate, template_id)


class Published:
    """The events the database publishes after commits, while installed (``published``)."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    async def __call__(self, batch: Sequence[events.Event]) -> None:
        self.events.extend(batch)

    def channels(self) -> list[str]:
        return [channel for channel, _ in self.events]


@pytest_asyncio.fixture
async def published(db: Database) -> Any:
    """Capture what committed transactions publish (the app is not needed)."""
    capture = Published()
    previous, db.publisher = db.publisher, capture
    yield capture
    db.publisher = previous


Caller = Callable[..., Awaitable[dict[str, Any]]]


def caller(app: Any, token: str) -> Caller:
    """``await call(query, variables)``: the whole response body of one request over HTTP."""

    async def call(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://qudao.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as http:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        return response.json()

    return call


def token_of(issue_token: Any, principal: Principal) -> str:
    """An access token for one of the principals above (``issue_token`` fixture)."""
    assert principal.role is not None
    return issue_token(
        principal.role,
        partner_id=principal.partner_id,
        store_id=principal.store_id,
        customer_id=principal.customer_id,
        subject=principal.subject,
        scopes=set(principal.scopes),
    )


def gid(type_name: str, pk: int) -> str:
    return encode_id(type_name, pk)
