"""The world of the purchasing tests, built through the services: partner A (tier A
distributor) with two stores, partner B (tier B agent) with one, HQ's warehouse, three SKUs,
and helpers that run one purchasing step in its own transaction."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import select

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.db import Database
from api.partners import service as partners
from api.partners.models import PartnerTier, PartnerType, StoreKind
from api.purchasing import credit_lines, pricing, service
from api.purchasing.models import PartnerCredit, PurchaseOrder
from tests.inventory.conftest import new_skus, new_store

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)

HQ = Principal("user:1", Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


def partner_admin(partner_id: int) -> Principal:
    return Principal(
        f"admin:{partner_id}",
        Role.PARTNER_ADMIN,
        partner_id=partner_id,
        scopes=ROLE_SCOPES[Role.PARTNER_ADMIN],
    )


@dataclass(frozen=True, slots=True)
class World:
    a: int  # partner A: tier A distributor
    b: int  # partner B: tier B agent
    a1: int  # A's stores
    a2: int
    b1: int  # B's store
    wh: int  # HQ's warehouse
    tea: int  # SKU ids
    cup: int
    pot: int


async def new_partner(db: Database, code: str, tier: PartnerTier, kind: PartnerType) -> int:
    async with db.transaction() as session:
        draft = partners.PartnerDraft(code=code, name=code, type=kind, tier=tier)
        return (await partners.create_partner(session, HQ, draft)).id


@pytest_asyncio.fixture
async def world(db: Database) -> World:
    a = await new_partner(db, "pa", PartnerTier.A, PartnerType.DISTRIBUTOR)
    b = await new_partner(db, "pb", PartnerTier.B, PartnerType.AGENT)
    a1, a2, b1 = await new_store(db, a), await new_store(db, a), await new_store(db, b)
    wh = await new_store(db, None, kind=StoreKind.WAREHOUSE)
    tea, cup, pot = await new_skus(db, "PTEA", 3)
    return World(a, b, a1, a2, b1, wh, tea, cup, pot)


async def price_list(
    db: Database,
    items: list[pricing.ItemDraft],
    *,
    tier: PartnerTier | None = None,
    partner_type: PartnerType | None = None,
    partner_id: int | None = None,
    valid_from: datetime = T0 - DAY,
    valid_until: datetime | None = None,
    name: str = "list",
) -> int:
    async with db.transaction() as session:
        draft = pricing.PriceListDraft(
            name=name,
            valid_from=valid_from,
            valid_until=valid_until,
            items=items,
            tier=tier,
            partner_type=partner_type,
            partner_id=partner_id,
        )
        return (await pricing.create_price_list(session, HQ, draft)).id


async def credit(db: Database, partner_id: int, limit_cents: int) -> credit_lines.Credit:
    async with db.transaction() as session:
        return await credit_lines.set_credit(
            session, HQ, partner_id, limit_cents=limit_cents, payment_terms_days=30, now=T0
        )


async def used(db: Database, partner_id: int) -> int:
    async with db.read() as session:
        found = await session.scalar(
            select(PartnerCredit.used_cents).where(PartnerCredit.partner_id == partner_id)
        )
    assert found is not None
    return found


_keys = itertools.count()


async def create(
    db: Database,
    principal: Principal,
    store_id: int,
    lines: list[tuple[int, int]],
    *,
    key: str | None = None,
    partner_id: int | None = None,
    now: datetime = T0,
) -> service.Created:
    async with db.transaction() as session:
        draft = service.OrderDraft(
            store_id=store_id,
            lines=lines,
            idempotency_key=key or f"po-{next(_keys)}",
            partner_id=partner_id,
        )
        return await service.create_order(session, principal, draft, now=now)


async def step(
    db: Database,
    operation: Callable[..., Awaitable[PurchaseOrder]],
    principal: Principal,
    order_id: int,
    **kwargs: Any,
) -> PurchaseOrder:
    async with db.transaction() as session:
        return await operation(session, principal, order_id, now=T0, **kwargs)
