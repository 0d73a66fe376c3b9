"""The world of the stock tests, built through the services: partners A and B, their stores,
HQ's own store and warehouse, three SKUs, the principals who act on stock, and helpers that
read what a change left behind."""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select

from api import events
from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.catalog import editing, queries, rules
from api.db import Database
from api.inventory import adjusting
from api.inventory.models import StockAlert, StockLevel, StockMovement
from api.partners import service as partners
from api.partners.models import PartnerType, StoreKind
from tests.conftest import GraphQLClient

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

HQ = Principal("user:1", Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


def partner_admin(partner_id: int) -> Principal:
    return Principal(
        f"admin:{partner_id}",
        Role.PARTNER_ADMIN,
        partner_id=partner_id,
        scopes=ROLE_SCOPES[Role.PARTNER_ADMIN],
    )


def store_staff(partner_id: int | None, store_id: int) -> Principal:
    return Principal(
        f"staff:{store_id}",
        Role.STORE_STAFF,
        partner_id=partner_id,
        store_id=store_id,
        scopes=ROLE_SCOPES[Role.STORE_STAFF],
    )


@dataclass(frozen=True, slots=True)
class World:
    partner_a: int
    partner_b: int
    a1: int  # partner A's store, offers pickup
    a2: int  # partner A's second store, no pickup
    b1: int  # partner B's store, offers pickup
    hq: int  # HQ's own store, offers pickup
    wh: int  # HQ's warehouse
    tea: int  # SKU ids
    cup: int
    pot: int


_stores = itertools.count()


async def new_store(db: Database, partner_id: int | None, **fields: Any) -> int:
    async with db.transaction() as session:
        store = await partners.create_store(
            session,
            HQ,
            partners.StoreDraft(
                code=f"st-{next(_stores)}",
                name="Store",
                region_code="310115",
                address="上海市浦东新区世纪大道100号",
                partner_id=partner_id,
                **fields,
            ),
        )
        return store.id


async def new_skus(db: Database, prefix: str, n: int) -> list[int]:
    async with db.transaction() as session:
        product = await editing.create_product(
            session,
            HQ,
            editing.ProductDraft(
                code=prefix,
                name=prefix,
                skus=[
                    rules.SkuDraft(
                        code=f"{prefix}-{i}",
                        name=f"{prefix}-{i}",
                        suggested_retail_price=Decimal(100),
                        cost_price=Decimal(40),
                    )
                    for i in range(n)
                ],
            ),
            now=T0,
        )
        return [s.id for s in (await queries.skus_of_products(session, [product.id]))[product.id]]


@pytest_asyncio.fixture
async def world(db: Database) -> World:
    async with db.transaction() as session:
        a = await partners.create_partner(
            session, HQ, partners.PartnerDraft(code="pa", name="A", type=PartnerType.AGENT)
        )
        b = await partners.create_partner(
            session, HQ, partners.PartnerDraft(code="pb", name="B", type=PartnerType.AGENT)
        )
    a1 = await new_store(db, a.id, offers_pickup=True)
    a2 = await new_store(db, a.id)
    b1 = await new_store(db, b.id, offers_pickup=True)
    hq = await new_store(db, None, offers_pickup=True)
    wh = await new_store(db, None, kind=StoreKind.WAREHOUSE)
    tea, cup, pot = await new_skus(db, "TEA", 3)
    return World(a.id, b.id, a1, a2, b1, hq, wh, tea, cup, pot)


_keys = itertools.count()


async def stock(
    db: Database,
    store_id: int,
    sku_id: int,
    on_hand: int,
    *,
    safety: int | None = None,
    principal: Principal = HQ,
    now: datetime = T0,
) -> adjusting.AdjustResult:
    """Count ``on_hand`` units of a SKU at a location (a SET adjustment)."""
    async with db.transaction() as session:
        return await adjusting.adjust(
            session,
            principal,
            adjusting.AdjustDraft(
                store_id=store_id,
                sku_id=sku_id,
                mode=adjusting.AdjustMode.SET,
                quantity=on_hand,
                reason="count",
                idempotency_key=f"count-{next(_keys)}",
                safety_level=safety,
            ),
            now=now,
        )


async def move(
    db: Database,
    operation: Callable[..., Any],
    store_id: int,
    items: dict[int, int],
    source_id: str,
    *,
    source_type: str = "order",
    now: datetime = T0,
) -> None:
    """One of the order-side changes (reserve, release_reservation, ...) in its own
    transaction."""
    async with db.transaction() as session:
        await operation(
            session,
            store_id,
            items=items,
            source_type=source_type,
            source_id=source_id,
            reason=f"{operation.__name__} {source_id}",
            actor="test",
            now=now,
        )


async def level(db: Database, store_id: int, sku_id: int) -> tuple[int, int, int] | None:
    """(on hand, reserved, safety level), or None where the SKU was never stocked."""
    async with db.read() as session:
        row = (
            await session.execute(
                select(StockLevel.on_hand, StockLevel.reserved, StockLevel.safety_level).where(
                    StockLevel.store_id == store_id, StockLevel.sku_id == sku_id
                )
            )
        ).one_or_none()
    return None if row is None else tuple(row)


async def movements(db: Database, store_id: int, sku_id: int) -> list[StockMovement]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(StockMovement)
                .where(StockMovement.store_id == store_id, StockMovement.sku_id == sku_id)
                .order_by(StockMovement.id)
            )
        )


async def alerts(db: Database, store_id: int | None = None) -> list[StockAlert]:
    async with db.read() as session:
        stmt = select(StockAlert).order_by(StockAlert.id)
        if store_id is not None:
            stmt = stmt.where(StockAlert.store_id == store_id)
        return list(await session.scalars(stmt))


@pytest_asyncio.fixture
async def published(db: Database) -> AsyncIterator[list[events.Event]]:
    """The events committed transactions publish, in order."""
    seen: list[events.Event] = []

    async def publish(batch: Any) -> None:
        seen.extend(batch)

    previous, db.publisher = db.publisher, publish
    yield seen
    db.publisher = previous


def gid(type_name: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


@pytest_asyncio.fixture
async def as_principal(app: Any, issue_token: Any) -> AsyncIterator[Callable[..., GraphQLClient]]:
    """``as_principal(Role.PARTNER_ADMIN, partner_id=1)`` → a GraphQL client acting as it."""
    clients: list[httpx.AsyncClient] = []

    def make(role: Role, **claims: Any) -> GraphQLClient:
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://qudao.test",
            headers={"Authorization": f"Bearer {issue_token(role, **claims)}"},
        )
        clients.append(http)
        return GraphQLClient(http)

    yield make
    for http in clients:
        await http.aclose()
