"""Sell-through (进销存) and turnover on a small data set, worked out by hand."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from api.auth.principal import Role
from api.errors import InputError
from api.graphql.ids import encode_id
from api.inventory import movements as inventory
from api.purchasing.sell_through import sell_through
from tests.inventory.conftest import move, stock
from tests.purchasing.conftest import DAY, HQ, T0, partner_admin


@pytest.fixture
async def month(db, world):
    """At A's store a1, tea over [T0, T0 + 30 days):
    opening 100 (counted before the period); +50 received, −60 sold, +10 returned, all inside;
    a sale after the period that must not count. B's store b1 holds 7 cups, untouched."""
    await stock(db, world.a1, world.tea, 100, now=T0 - 10 * DAY)
    await move(db, inventory.receive, world.a1, {world.tea: 50}, "po-1", now=T0 + DAY)
    await move(db, inventory.deduct, world.a1, {world.tea: 60}, "sale-1", now=T0 + 2 * DAY)
    await move(db, inventory.restock, world.a1, {world.tea: 10}, "ret-1", now=T0 + 3 * DAY)
    await move(db, inventory.deduct, world.a1, {world.tea: 5}, "sale-2", now=T0 + 31 * DAY)
    await stock(db, world.b1, world.cup, 7, now=T0 - DAY)
    return world


async def test_a_month_of_one_sku_by_hand(db, month):
    async with db.read() as session:
        rows = await sell_through(session, HQ, start=T0, end=T0 + 30 * DAY)
    tea = next(r for r in rows if (r.store_id, r.sku_id) == (month.a1, month.tea))
    # closing = 100 + 50 − 60 + 10 = 100; average (100 + 100) / 2 = 100
    assert (tea.opening, tea.purchased, tea.sold, tea.returned, tea.closing) == (
        100,
        50,
        60,
        10,
        100,
    )
    assert tea.turnover == Decimal("0.60")  # 60 / 100
    assert tea.days_of_inventory == Decimal("50.00")  # 100 × 30 / 60
    cups = next(r for r in rows if r.store_id == month.b1)
    assert (cups.opening, cups.sold, cups.closing, cups.turnover, cups.days_of_inventory) == (
        7,
        0,
        7,
        Decimal("0.00"),
        None,
    )


async def test_a_partner_sees_only_its_own_locations(db, month):
    async with db.read() as session:
        mine = await sell_through(session, partner_admin(month.a), start=T0, end=T0 + 30 * DAY)
        theirs = await sell_through(
            session, partner_admin(month.a), start=T0, end=T0 + 30 * DAY, store_ids=[month.b1]
        )
    assert {r.store_id for r in mine} == {month.a1}
    assert theirs == []


async def test_a_backward_or_overlong_period_is_refused(db, month):
    async with db.read() as session:
        for start, end in ((T0, T0), (T0, T0 + timedelta(days=367))):
            with pytest.raises(InputError):
                await sell_through(session, HQ, start=start, end=end)


async def test_over_http_with_the_rows_named(app, issue_token, month):
    token = issue_token(Role.PARTNER_ADMIN, partner_id=month.a, subject="user:a")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        response = await http.post(
            "/graphql",
            json={
                "query": "query($from: DateTime!, $to: DateTime!) { sellThrough(from: $from, "
                "to: $to) { store { id } sku { code } opening purchased sold returned closing "
                "turnover daysOfInventory } }",
                "variables": {
                    "from": T0.isoformat(),
                    "to": (T0 + 30 * DAY).isoformat(),
                },
            },
        )
    assert response.json()["data"]["sellThrough"] == [
        {
            "store": {"id": encode_id("Store", month.a1)},
            "sku": {"code": "PTEA-0"},
            "opening": 100,
            "purchased": 50,
            "sold": 60,
            "returned": 10,
            "closing": 100,
            "turnover": "0.60",
            "daysOfInventory": "50.00",
        }
    ]
