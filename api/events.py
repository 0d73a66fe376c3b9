"""Events for GraphQL subscriptions, published only once the transaction that caused them has
committed: a subscriber must never hear of an order that a rollback then unmade.

Services call ``emit(session, channel, payload)`` next to the change; ``Database.transaction``
hands the session's events to its publisher after the commit (the app publishes them through
the cache's pub/sub, so every API process's subscribers hear them).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

_KEY = "qudao.events"

Event = tuple[str, str]  # (channel, JSON message)
Publisher = Callable[[Sequence[Event]], Awaitable[None]]


def stock_alerts_channel(store_id: int) -> str:
    return f"stock-alerts:{store_id}"


def customer_orders_channel(customer_id: int) -> str:
    return f"order-updates:customer:{customer_id}"


def store_orders_channel(store_id: int) -> str:
    return f"order-updates:store:{store_id}"


def emit(session: AsyncSession, channel: str, payload: Mapping[str, Any]) -> None:
    """Queue an event on this unit of work; it is published after the commit, or never."""
    message = json.dumps(payload, separators=(",", ":"), default=str)
    session.info.setdefault(_KEY, []).append((channel, message))


def take(session: AsyncSession) -> list[Event]:
    """The session's queued events, removed from it."""
    return session.info.pop(_KEY, [])


def discard(session: AsyncSession) -> None:
    session.info.pop(_KEY, None)
