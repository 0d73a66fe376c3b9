"""What the metrics, attribution and RFM tests share.

They work in the orders tests' shop (``shop``, see tests/orders/conftest.py: stores a1, a2 of
partner A, b1 of partner B, HQ's hq; TEA-1 SRP 100 cost 40, listed at 99 on the mini-program,
90-110 at a POS; TEA-2 SRP 50 cost 20, no bands; NET-1 SRP 60 cost 25, online only) and
place, refund, cancel and expire orders through the real orders services, as HQ, at times
counted from ``T0`` (the order's ``now`` is its placed_at).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from api.analytics.attribution import AttributionPolicy
from api.analytics.metrics import METRIC_COLUMNS, metrics_differences, rebuild_customer_metrics
from api.analytics.models import CustomerMetrics, OrderAttribution
from api.analytics.reactions import MetricsAndAttribution
from api.auth.models import StaffUser
from api.auth.principal import Role
from api.catalog.models import SalesChannel
from api.customers.models import Customer
from api.db import Database
from api.orders.lifecycle import cancel as cancelling
from api.orders.lifecycle import expiry
from api.orders.lifecycle import refund as refunds
from api.orders.models import Fulfillment, Order
from api.orders.reactions import OrderReaction, OrdersWiring
from tests.orders.conftest import DAY, HQ, NOW, Policy, Shop, line, place, shop
from tests.wiring import orders_wiring

__all__ = [
    "DAY",
    "HQ",
    "T0",
    "Shop",
    "attribution",
    "cancel",
    "configured",
    "expire",
    "guide",
    "line",
    "metrics",
    "metrics_reaction",
    "new_customer",
    "order",
    "reacting_with",
    "rebuild_agrees",
    "refund",
    "shop",
    "table",
    "wiring_in_force",
]

# Well before NOW, so that a pickup's window (72 hours) can pass and still lie in the past.
T0 = NOW - 90 * DAY
# What the helpers below hand the orders domain: every reaction, attributing by first touch
# for life unless a test says otherwise (``configured``).
_DEFAULT = orders_wiring(Policy())
_DEFAULT_POLICY = AttributionPolicy()
_wiring, _policy = _DEFAULT, _DEFAULT_POLICY


async def new_customer(
    db: Database,
    name: str,
    *,
    since: datetime | None = None,
    store_id: int | None = None,
    partner_id: int | None = None,
    guide_id: int | None = None,
) -> int:
    """A customer; a member recruited at ``since`` by the store (its partner) and guide."""
    async with db.transaction() as session:
        customer = Customer(
            name=name,
            member_since=since,
            recruited_store_id=store_id,
            recruited_partner_id=partner_id,
            recruited_guide_id=guide_id,
            created_at=T0 - 400 * DAY,
        )
        session.add(customer)
        await session.flush()
        return customer.id


async def guide(db: Database, email: str, partner_id: int | None, store_id: int) -> int:
    """A shopping guide (导购): store staff of the store."""
    async with db.transaction() as session:
        user = StaffUser(
            email=email,
            password_hash="-",
            role=Role.STORE_STAFF,
            partner_id=partner_id,
            store_id=store_id,
        )
        session.add(user)
        await session.flush()
        return user.id


async def order(
    db: Database,
    customer_id: int,
    *lines: Any,
    at: datetime = T0,
    channel: SalesChannel = SalesChannel.MINI_PROGRAM,
    fulfillment: Fulfillment = Fulfillment.DELIVERY,
    store_id: int | None = None,
) -> Order:
    """An order placed (paid) at ``at`` by HQ for the customer: a delivery is completed at
    once, a pickup waits at ``store_id``. Lines: ``line("TEA-1", 2)`` (default one TEA-1)."""
    result = await place(
        db,
        HQ,
        now=at,
        wiring=_wiring,
        customer_id=customer_id,
        channel=channel,
        fulfillment=fulfillment,
        store_id=store_id,
        lines=list(lines) or [line()],
    )
    return result.order


async def refund(
    db: Database,
    order_id: int,
    key: str,
    lines: list[tuple[int, int]] | None = None,
    *,
    at: datetime = NOW,
) -> Order:
    """Refund ``(order line id, units)`` of the order, or all that is left."""
    draft = refunds.RefundDraft(
        idempotency_key=key,
        reason="returned",
        lines=None
        if lines is None
        else tuple(refunds.RefundLineDraft(line_id, n) for line_id, n in lines),
    )
    async with db.transaction() as session:
        result = await refunds.refund(session, HQ, order_id, draft, now=at, wiring=_wiring)
    return result.order


async def cancel(db: Database, order_id: int, *, at: datetime = NOW) -> Order:
    async with db.transaction() as session:
        return await cancelling.cancel(
            session, HQ, order_id, reason="changed my mind", now=at, wiring=_wiring
        )


async def expire(db: Database, at: datetime) -> expiry.ExpiryRun:
    """The pickup expiry job as of ``at``."""
    return await expiry.expire_pickups(db, now=at, wiring=_wiring)


def _row(row: CustomerMetrics) -> dict[str, Any]:
    return {"customer_id": row.customer_id} | {c: getattr(row, c) for c in _COLUMNS}


_COLUMNS = (
    *METRIC_COLUMNS,
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
    "rfm_segment",
    "rfm_scored_at",
)


async def metrics(db: Database, customer_id: int) -> dict[str, Any] | None:
    """The customer's metric columns (without customer_id and the RFM ones), or None."""
    async with db.read() as session:
        row = await session.get(CustomerMetrics, customer_id)
    if row is None:
        return None
    return {c: getattr(row, c) for c in METRIC_COLUMNS}


async def table(db: Database) -> list[dict[str, Any]]:
    """Every row of customer_metrics, every column but updated_at, by customer."""
    async with db.read() as session:
        rows = await session.scalars(select(CustomerMetrics).order_by(CustomerMetrics.customer_id))
        return [_row(r) for r in rows]


async def rebuild_agrees(db: Database) -> list[dict[str, Any]]:
    """Check that the incrementally kept table is what a rebuild writes: the check finds no
    difference, and a rebuild rewrites every row exactly as it was (all columns but
    updated_at; the RFM scores stay). Returns the table."""
    before = await table(db)
    async with db.read() as session:
        assert await metrics_differences(session) == []
    async with db.transaction() as session:
        written = await rebuild_customer_metrics(session)
    assert written == len(before)
    assert await table(db) == before
    return before


async def attribution(db: Database) -> dict[int, tuple[Any, ...]]:
    """order id → (customer, partner, store, guide, rule, window_days) of every attribution."""
    async with db.read() as session:
        rows = await session.scalars(select(OrderAttribution).order_by(OrderAttribution.order_id))
        return {
            r.order_id: (r.customer_id, r.partner_id, r.store_id, r.guide_id, r.rule, r.window_days)
            for r in rows
        }


@contextmanager
def configured(rule: str, window_days: int = 0) -> Iterator[AttributionPolicy]:
    """Orders placed inside are attributed under this rule and window."""
    global _wiring, _policy
    policy = AttributionPolicy(rule, window_days)
    _wiring, _policy = orders_wiring(Policy(), attribution=policy), policy
    try:
        yield policy
    finally:
        _wiring, _policy = _DEFAULT, _DEFAULT_POLICY


def wiring_in_force() -> OrdersWiring:
    """What the helpers hand the orders domain now (see ``configured``)."""
    return _wiring


def metrics_reaction() -> MetricsAndAttribution:
    """The analytics reaction to orders, under the attribution policy in force."""
    return MetricsAndAttribution(_policy)


@contextmanager
def reacting_with(*reactions: OrderReaction) -> Iterator[None]:
    """Orders changed inside run only these reactions (to count one reaction's statements)."""
    global _wiring
    saved = _wiring
    _wiring = replace(saved, reactions=reactions)
    try:
        yield
    finally:
        _wiring = saved
