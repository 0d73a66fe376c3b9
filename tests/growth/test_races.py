"""Races through the API, each request its own transaction, on both engines: one event id
recorded by 20 requests at once is one touchpoint (and one new customer)."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import func, select

from api.customers.models import Customer
from tests.growth.conftest import all_touches
from tests.growth.test_record import RECORD, record_input
from tests.orders.conftest import caller, gid, partner_admin, token_of


async def _twenty(app, token: str, variables: dict) -> Counter:
    call = caller(app, token)
    bodies = await asyncio.gather(*(call(RECORD, variables) for _ in range(20)))
    outcomes: Counter = Counter()
    for body in bodies:
        assert "errors" not in body, body["errors"]
        payload = body["data"]["touchpointRecord"]
        assert payload["errors"] == [], payload["errors"]
        outcomes["created" if payload["created"] else "existing"] += 1
        outcomes[payload["touchpoint"]["id"]] += 1
    return outcomes


async def test_twenty_concurrent_records_of_one_event_make_one_touchpoint(
    db, shop, app, issue_token
):
    token = token_of(issue_token, partner_admin(shop.partner_a))
    variables = record_input(customer={"id": gid("Customer", shop.ann)})
    outcomes = await _twenty(app, token, variables)

    (touch,) = await all_touches(db)
    assert outcomes == {"created": 1, "existing": 19, gid("Touchpoint", touch.id): 20}


async def test_twenty_concurrent_records_of_a_new_person_make_one_customer(
    db, shop, app, issue_token
):
    token = token_of(issue_token, partner_admin(shop.partner_a))
    variables = record_input(customer={"identities": [{"kind": "PHONE", "value": "13900000077"}]})
    outcomes = await _twenty(app, token, variables)

    (touch,) = await all_touches(db)
    assert outcomes == {"created": 1, "existing": 19, gid("Touchpoint", touch.id): 20}
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 3 + 1
