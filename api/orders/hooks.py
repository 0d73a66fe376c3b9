"""Order hooks: what other domains keep in step with orders (per-customer metrics, lifetime
attribution, conversion touchpoints, referral rewards) without the orders domain knowing them.

A domain registers a hook when its service module is imported (``api.domains.load_services``),
like the customer merge steps. Hooks run inside the order's transaction, after the order and
its lines are written: what they write commits or rolls back with the order.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession


class OrderChange(enum.Enum):
    CREATED = "created"  # orderCreate (any fulfilment; a pickup order is paid, not yet sold)
    COMPLETED = "completed"  # a pickup order picked up
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # a pickup order not picked up in time
    REFUNDED = "refunded"  # wholly or in part
    IMPORTED = "imported"  # a batch of marketplace orders (``qudao import orders``)
    # Imported orders deleted again by the same import (their rows turned out split across
    # batches: api/orders/importer.py). The order ids no longer exist.
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class OrdersChanged:
    change: OrderChange
    order_ids: tuple[int, ...]  # one order, or an import batch
    customer_ids: tuple[int, ...]  # their (live) customers, without duplicates
    now: datetime


OrderHook = Callable[[AsyncSession, OrdersChanged], Awaitable[None]]

ORDER_HOOKS: dict[str, OrderHook] = {}


def register_order_hook(name: str, hook: OrderHook) -> None:
    # Keyed by name: re-importing a module (tests, reloads) replaces rather than duplicates.
    ORDER_HOOKS[name] = hook


async def run_order_hooks(
    session: AsyncSession,
    change: OrderChange,
    order_ids: list[int] | tuple[int, ...],
    customer_ids: list[int | None] | tuple[int | None, ...],
    now: datetime,
) -> None:
    if not order_ids:
        return
    # Every domain's hooks, whatever imported the orders service (the API, a CLI job, a test):
    # a hook that is missing would silently let metrics or attribution fall behind.
    from api.domains import load_services

    load_services()
    changed = OrdersChanged(
        change,
        tuple(order_ids),
        tuple(sorted({c for c in customer_ids if c is not None})),
        now,
    )
    for hook in ORDER_HOOKS.values():
        await hook(session, changed)
