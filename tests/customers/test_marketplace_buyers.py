"""The order import's customers: marketplace buyers made customers in bulk, by the customers
domain (api/customers/marketplace_buyers.py); tests/orders/test_import.py covers it through
the import."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from api.customers.marketplace_buyers import BuyerSeen, upsert_marketplace_buyers
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.upsert import upsert_customer
from api.db import count_statements

NOW = datetime(2026, 11, 11, tzinfo=UTC)


async def _customer(db, kind: IdentityKind, value: str, channel: str | None = None) -> int:
    async with db.transaction() as session:
        draft = CustomerDraft([(kind, value)], first_channel=channel)
        return (await upsert_customer(session, draft, actor="test", now=NOW)).customer.id


async def test_buyers_are_found_by_buyer_id_or_phone_else_created_in_fixed_statements(db):
    by_phone = await _customer(db, IdentityKind.PHONE, "13800138000")
    by_buyer = await _customer(db, IdentityKind.MARKETPLACE_BUYER, "jd:jd_9", "jd")
    seen = [
        BuyerSeen("tmall:tb_1", None, "tmall"),
        BuyerSeen("tmall:tb_1", "13800138000", "tmall"),  # the sighting with a phone counts
        BuyerSeen("jd:jd_9", "13900139000", "jd"),
        BuyerSeen("douyin:dy_1", "13700137000", "douyin"),
    ]
    with count_statements(db) as counted:
        async with db.transaction() as session:
            upserted = await upsert_marketplace_buyers(session, seen, now=NOW)
    new = upserted.customer_ids["douyin:dy_1"]
    assert upserted.created == 1
    assert upserted.customer_ids == {
        "tmall:tb_1": by_phone,
        "jd:jd_9": by_buyer,
        "douyin:dy_1": new,
    }
    # The owners, the new ids, the customers, the identities, who holds them, two fills.
    assert counted.count == 7
    async with db.read() as session:
        buyers = dict(
            (
                await session.execute(
                    select(CustomerIdentity.value, CustomerIdentity.customer_id).where(
                        CustomerIdentity.kind == IdentityKind.MARKETPLACE_BUYER
                    )
                )
            ).all()
        )
        profiles = {
            c.id: (c.contact_phone, c.first_channel)
            for c in await session.scalars(select(Customer))
        }
        phones = list(
            await session.scalars(
                select(CustomerIdentity.value).where(CustomerIdentity.kind == IdentityKind.PHONE)
            )
        )
    assert buyers == {"tmall:tb_1": by_phone, "jd:jd_9": by_buyer, "douyin:dy_1": new}
    # Blanks filled, nothing overwritten; an order's phone is never a login identity.
    assert profiles == {
        by_phone: ("13800138000", "tmall"),
        by_buyer: ("13900139000", "jd"),
        new: ("13700137000", "douyin"),
    }
    assert phones == ["13800138000"]


async def test_no_buyers_cost_one_statement(db):
    with count_statements(db) as counted:
        async with db.transaction() as session:
            upserted = await upsert_marketplace_buyers(session, [], now=NOW)
    assert (upserted.customer_ids, upserted.created, counted.count) == ({}, 0, 1)
