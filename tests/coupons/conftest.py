"""A small world for the coupon tests: two partners with stores, an HQ store, customers
straight in the database, a fixed clock, and the principals who act on coupons."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.coupons import claims as coupon_claims
from api.coupons import redemption as coupon_redemption
from api.coupons import templates as coupon_templates
from api.coupons.models import Coupon, CouponChannel, CouponKind, CouponOrigin, CouponTemplate
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import Database
from api.errors import DomainError
from api.partners import service as partners
from api.partners.models import PartnerType
from tests.conftest import GraphQLClient

T0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)

HQ = Principal("user:1", Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])
MARKETER = Principal("user:2", Role.MARKETER, scopes=ROLE_SCOPES[Role.MARKETER])


def member(customer_id: int) -> Principal:
    return Principal(
        f"customer:{customer_id}",
        Role.MEMBER,
        customer_id=customer_id,
        scopes=ROLE_SCOPES[Role.MEMBER],
    )


def store_staff(partner_id: int, store_id: int) -> Principal:
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


@dataclass(frozen=True, slots=True)
class World:
    partner_a: int
    partner_b: int
    store_a1: int
    store_a2: int
    store_b1: int
    store_hq: int  # HQ-run, no partner
    ann: int  # recruited by store a1
    bob: int  # recruited by store b1


async def new_customers(db: Database, n: int = 1, **fields: Any) -> list[int]:
    async with db.transaction() as session:
        rows = [Customer(name=f"顾客{i}", **fields) for i in range(n)]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


@pytest_asyncio.fixture
async def world(db: Database) -> World:
    async with db.transaction() as session:
        a = await partners.create_partner(
            session, HQ, partners.PartnerDraft(code="pa", name="Partner A", type=PartnerType.AGENT)
        )
        b = await partners.create_partner(
            session, HQ, partners.PartnerDraft(code="pb", name="Partner B", type=PartnerType.AGENT)
        )
        stores = []
        for code, partner_id in (("a1", a.id), ("a2", a.id), ("b1", b.id), ("hq", None)):
            store = await partners.create_store(
                session,
                HQ,
                partners.StoreDraft(
                    code=f"s-{code}",
                    name=f"Store {code}",
                    region_code="310115",
                    address="上海市浦东新区世纪大道100号",
                    partner_id=partner_id,
                ),
            )
            stores.append(store.id)
        ann = Customer(name="王小丫", recruited_partner_id=a.id, recruited_store_id=stores[0])
        bob = Customer(name="李雷", recruited_partner_id=b.id, recruited_store_id=stores[2])
        session.add_all([ann, bob])
        await session.flush()
        session.add(
            CustomerIdentity(customer_id=ann.id, kind=IdentityKind.PHONE, value="13812341234")
        )
    return World(a.id, b.id, *stores, ann=ann.id, bob=bob.id)


def draft(**overrides: Any) -> coupon_templates.TemplateDraft:
    """A valid template: 直减 ¥10, claim and use anywhere, stock 100, one per person, valid
    from a day before T0 for 30 days."""
    values: dict[str, Any] = {
        "name": "新客立减10元",
        "kind": CouponKind.FIXED_OFF,
        "claim_channel": CouponChannel.BOTH,
        "use_channel": CouponChannel.BOTH,
        "total_stock": 100,
        "discount_amount": Decimal("10.00"),
        "valid_from": T0 - DAY,
        "valid_until": T0 + 30 * DAY,
    }
    values.update(overrides)
    return coupon_templates.TemplateDraft(**values)


async def new_template(db: Database, **overrides: Any) -> CouponTemplate:
    async with db.transaction() as session:
        return await coupon_templates.create_template(
            session, HQ, draft(**overrides), now=T0 - 2 * DAY
        )


async def claim(
    db: Database,
    template_id: int,
    customer_id: int,
    *,
    principal: Principal | None = None,
    channel: CouponChannel = CouponChannel.ONLINE,
    now: datetime = T0,
    **kwargs: Any,
) -> Coupon:
    """A member's own claim (or, with ``principal=HQ``, a grant)."""
    principal = principal or member(customer_id)
    origin = CouponOrigin.CLAIM if principal.is_member else CouponOrigin.GRANT
    async with db.transaction() as session:
        result = await coupon_claims.claim(
            session,
            principal,
            template_id,
            customer_id,
            channel=channel,
            now=now,
            origin=origin,
            **kwargs,
        )
    return result.coupon


async def redeem(
    db: Database, principal: Principal, code: str, *, now: datetime = T0, **kwargs: Any
) -> Coupon:
    async with db.transaction() as session:
        return await coupon_redemption.redeem(session, principal, code, now=now, **kwargs)


async def failure(call: Awaitable[Any]) -> str:
    """The error code a call fails with (its first problem), or "ok"."""
    try:
        await call
    except DomainError as error:
        return error.problems[0].code.name
    return "ok"


async def problem_fields(call: Awaitable[Any]) -> list[tuple[str, tuple[str, ...] | None]]:
    try:
        await call
    except DomainError as error:
        return [(p.code.name, p.field) for p in error.problems]
    raise AssertionError("expected a DomainError")


async def coupon(db: Database, coupon_id: int) -> Coupon:
    async with db.read() as session:
        return (await session.execute(select(Coupon).where(Coupon.id == coupon_id))).scalar_one()


async def template_row(db: Database, template_id: int) -> CouponTemplate:
    async with db.read() as session:
        stmt = select(CouponTemplate).where(CouponTemplate.id == template_id)
        return (await session.execute(stmt)).scalar_one()


def as_client(app: Any, token: str) -> Callable[[], httpx.AsyncClient]:
    def open_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://qudao.test",
            headers={"Authorization": f"Bearer {token}"},
        )

    return open_client


__all__ = ["GraphQLClient"]
