"""Writing to the outbox: a message joins the transaction of the change it announces, so it
exists exactly when the change does (a rollback takes both back)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import utcnow
from api.outbox.models import OutboxMessage

MAX_TOPIC = 64
MAX_RECIPIENT = 64


async def enqueue(
    session: AsyncSession,
    topic: str,
    recipient: str | None,
    payload: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> int:
    """Queue a message for delivery; returns its id.

    ``topic`` names what happened ("order.ready_for_pickup"), ``recipient`` whom it is for
    ("customer:42"; None: whoever subscribes to the topic). The payload is stored as JSON:
    plain values only, and nothing a message must not carry (a pickup code, a token).
    """
    if not topic or len(topic) > MAX_TOPIC:
        raise ValueError(f"an outbox topic is 1 to {MAX_TOPIC} characters; got {topic!r}")
    if recipient is not None and not 0 < len(recipient) <= MAX_RECIPIENT:
        raise ValueError(f"an outbox recipient is 1 to {MAX_RECIPIENT} characters")
    stmt = (
        insert(OutboxMessage)
        .values(
            topic=topic,
            recipient=recipient,
            payload=dict(payload),
            created_at=now or utcnow(),
            attempts=0,
        )
        .returning(OutboxMessage.id)
    )
    return (await session.execute(stmt)).scalar_one()
