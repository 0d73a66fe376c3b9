"""The outbox is written in the transaction of the change it announces: committed together,
rolled back together."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from api.outbox.models import OutboxMessage
from api.outbox.service import enqueue

T0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


async def messages(db) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def test_a_message_is_stored_with_its_transaction(db):
    async with db.transaction() as session:
        first = await enqueue(
            session, "order.expired", "customer:7", {"orderId": 3, "storeName": "静安店"}, now=T0
        )
        second = await enqueue(session, "order.refunded", None, {"orderId": 4})
    assert second == first + 1
    stored = await messages(db)
    assert [(m.topic, m.recipient, m.payload) for m in stored] == [
        ("order.expired", "customer:7", {"orderId": 3, "storeName": "静安店"}),
        ("order.refunded", None, {"orderId": 4}),
    ]
    assert stored[0].created_at == T0
    assert all(m.attempts == 0 and m.delivered_at is None for m in stored)


async def test_a_rolled_back_change_leaves_no_message(db):
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await enqueue(session, "order.cancelled", "customer:7", {"orderId": 3})
            raise RuntimeError("the change failed")
    assert await messages(db) == []


@pytest.mark.parametrize(
    ("topic", "recipient"), [("", None), ("t" * 65, None), ("order.expired", "r" * 65)]
)
async def test_bad_topics_and_recipients_are_refused(db, topic, recipient):
    async with db.transaction() as session:
        with pytest.raises(ValueError):
            await enqueue(session, topic, recipient, {})
    assert await messages(db) == []
