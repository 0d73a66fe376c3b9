"""Outbound messages, written in the transaction of the change they announce."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, utcnow


class OutboxMessage(Base):
    """``topic`` says what happened ("order.ready_for_pickup"); ``recipient`` whom it is for
    ("customer:42"); a delivery worker sends undelivered rows in id order and marks them."""

    __tablename__ = "outbox_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_message_delivered_at_id", "delivered_at", "id"),)
