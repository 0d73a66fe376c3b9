"""What other domains do when orders change, and how the orders domain tells them.

The orders domain announces a change (``OrdersChanged``) at the end of each use case, inside
the order's transaction, after the order and its lines are written; the reactions it runs
are the composition root's table (``api/wiring.py``), handed in as ``OrdersWiring``. What a
reaction writes commits or rolls back with the order. The orders domain never imports the
domains that react.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from api.loyalty.rules import PointsPolicy


class OrderChange(enum.Enum):
    CREATED = "created"  # orderCreate (any fulfilment; a pickup order is paid, not yet sold)
    COMPLETED = "completed"  # a pickup order picked up
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # a pickup order not picked up in time
    REFUNDED = "refunded"  # wholly or in part
    IMPORTED = "imported"  # a batch of marketplace orders (``qudao import orders``)
    # Imported orders deleted again by the same import (their rows turned out split across
    # batches: api/orders/importer/running.py). The order ids no longer exist.
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class OrdersChanged:
    change: OrderChange
    order_ids: tuple[int, ...]  # one order, or an import batch
    customer_ids: tuple[int, ...]  # their (live) customers, without duplicates
    now: datetime


OrderReaction = Callable[[AsyncSession, OrdersChanged], Awaitable[None]]


class OrderSettings(Protocol):
    """What placing an order reads of the settings (``api.settings.Settings`` is one)."""

    @property
    def pickup_window_hours(self) -> int: ...

    @property
    def points_per_yuan(self) -> int: ...

    @property
    def points_max_share_percent(self) -> int: ...

    @property
    def points_policy(self) -> PointsPolicy: ...


@dataclass(frozen=True, slots=True)
class OrdersWiring:
    """What the orders domain is handed by the composition root: its settings, and the
    reactions to run, in order, whenever orders change."""

    settings: OrderSettings
    reactions: tuple[OrderReaction, ...] = ()

    async def changed(
        self,
        session: AsyncSession,
        change: OrderChange,
        order_ids: Sequence[int],
        customer_ids: Sequence[int | None],
        now: datetime,
    ) -> None:
        if not order_ids:
            return
        changed = OrdersChanged(
            change,
            tuple(order_ids),
            tuple(sorted({c for c in customer_ids if c is not None})),
            now,
        )
        for react in self.reactions:
            await react(session, changed)
