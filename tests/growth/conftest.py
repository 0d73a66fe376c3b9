"""The growth tests work in the orders tests' shop (see tests/orders/conftest.py: partners A
and B, stores a1 and a2 of A, b1 of B, HQ's hq; customers ann (member at a1, phone
13812341234), bob (recruited at b1), cat), plus guides: staff users of a1 and b1.

Helpers record touchpoints through the service (``record``), or put them straight in the
table (``add_touches``) when a test needs touches at exact past times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import insert, select

from api.auth.models import StaffUser
from api.auth.principal import Role
from api.customers.models import IdentityKind
from api.db import Database
from api.growth.models import Touchpoint, TouchpointStep
from api.growth.recording import (
    CustomerRef,
    RecordOutcome,
    RecordResult,
    TouchpointDraft,
    record_touchpoint,
    record_touchpoints,
)
from tests.orders.conftest import NOW, shop

HOUR = timedelta(hours=1)
PHONE = "13900000001"
# The funnel tests' clock: Monday 2 March 2026, 00:00 UTC.
BASE = datetime(2026, 3, 2, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Guides:
    a1: int  # an active staff user of store a1
    b1: int  # of store b1
    gone: int  # a staff user of a1 who left (inactive)


@pytest_asyncio.fixture
async def guides(db: Database, shop: Any) -> Guides:
    async with db.transaction() as session:
        ids = []
        for email, partner, store, active in (
            ("guide-a1@example.com", shop.partner_a, shop.a1, True),
            ("guide-b1@example.com", shop.partner_b, shop.b1, True),
            ("gone-a1@example.com", shop.partner_a, shop.a1, False),
        ):
            ids.append(
                await session.scalar(
                    insert(StaffUser)
                    .values(
                        email=email,
                        password_hash="x",
                        role=Role.STORE_STAFF,
                        partner_id=partner,
                        store_id=store,
                        is_active=active,
                    )
                    .returning(StaffUser.id)
                )
            )
    return Guides(*ids)


def draft(**overrides: Any) -> TouchpointDraft:
    """A QR scan (campaign card-1, via tmall) an hour ago by the person with PHONE."""
    values: dict[str, Any] = {
        "event_id": "e1",
        "step": TouchpointStep.QR_SCAN,
        "customer": CustomerRef(identities=[(IdentityKind.PHONE, PHONE)]),
        "occurred_at": NOW - HOUR,
        "source_channel": "tmall",
        "campaign_id": "card-1",
    }
    values.update(overrides)
    return TouchpointDraft(**values)


async def record(db: Database, principal: Any, **overrides: Any) -> RecordResult:
    """Record ``draft(**overrides)`` as ``principal`` in its own transaction."""
    async with db.transaction() as session:
        return await record_touchpoint(session, principal, draft(**overrides), now=NOW)


async def record_many(
    db: Database, principal: Any, drafts: list[TouchpointDraft]
) -> list[RecordOutcome]:
    async with db.transaction() as session:
        return await record_touchpoints(session, principal, drafts, now=NOW)


async def all_touches(db: Database) -> list[Touchpoint]:
    async with db.read() as session:
        return list(await session.scalars(select(Touchpoint).order_by(Touchpoint.id)))


async def add_touches(db: Database, rows: list[dict[str, Any]]) -> None:
    """Touchpoints straight into the table: ``customer_id``, ``step``, ``at`` (a datetime)
    and any other column; event ids are numbered."""
    async with db.transaction() as session:
        start = len(list(await session.scalars(select(Touchpoint.id))))
        await session.execute(
            insert(Touchpoint),
            [
                {
                    "recorded_scope": "hq",
                    "event_id": f"t{start + number}",
                    "occurred_at": row.pop("at"),
                    "created_at": NOW,
                    **row,
                }
                for number, row in enumerate(rows)
            ],
        )


__all__ = ["shop"]
