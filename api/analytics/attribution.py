"""Lifetime attribution (终身归属) of orders to the partner, store and guide that recruited the
member (first touch) or last touched them (last touch), decided once per order and kept in
``order_attribution``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Select, case, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.models import OrderAttribution
from api.analytics.sql import counted_of_live_customers, insert_for, rows_written
from api.customers.models import Customer
from api.db import UTCDateTime, utcnow
from api.growth.models import Touchpoint
from api.growth.reads import attributable_touch
from api.orders.models import Order
from api.partners.models import Store

FIRST_TOUCH = "first_touch"
LAST_TOUCH = "last_touch"
ATTRIBUTION_RULES = (FIRST_TOUCH, LAST_TOUCH)


@dataclass(frozen=True, slots=True)
class AttributionPolicy:
    """Which recruiter an order counts for (api/settings.py ``attribution_rule`` and
    ``attribution_window_days``; 0 days = for life)."""

    rule: str = FIRST_TOUCH
    window_days: int = 0

    def __post_init__(self) -> None:
        if self.rule not in ATTRIBUTION_RULES:
            raise ValueError(f"attribution rule must be one of {', '.join(ATTRIBUTION_RULES)}")
        if self.window_days < 0:
            raise ValueError("attribution window must be 0 (for life) or a number of days")

    @classmethod
    def from_settings(cls, settings: Any) -> AttributionPolicy:
        return cls(settings.attribution_rule, settings.attribution_window_days)


def _attribution_select(order_ids: Sequence[int], rule: str, window_days: int) -> Select[Any]:
    """One row per attributable order among ``order_ids``, with the columns of
    ``order_attribution``: counted orders of live members who have a recruiter, placed at or
    after they were recruited (an earlier purchase is nobody's recruitment)."""
    recruiter = or_(
        Customer.recruited_partner_id.is_not(None),
        Customer.recruited_store_id.is_not(None),
        Customer.recruited_guide_id.is_not(None),
    )
    columns: list[Any]
    stmt: Select[Any]
    if rule == FIRST_TOUCH:
        columns = [
            Customer.recruited_partner_id.label("partner_id"),
            Customer.recruited_store_id.label("store_id"),
            Customer.recruited_guide_id.label("guide_id"),
        ]
        stmt = select(Order.id).join(Customer, Customer.id == Order.customer_id)
    else:
        # The latest touch with a store at or before the order (ties: the later recorded),
        # not counting what the order itself recorded (its first-order touchpoint): that is
        # the purchase, not what led to it.
        latest = (
            select(Touchpoint.id)
            .where(
                Touchpoint.customer_id == Order.customer_id,
                Touchpoint.store_id.is_not(None),
                Touchpoint.occurred_at <= Order.placed_at,
                or_(Touchpoint.order_id.is_(None), Touchpoint.order_id != Order.id),
                # Only touches that may move attribution: another partner's touch on a member
                # it did not recruit must not take over that member's orders (rebates).
                attributable_touch(Touchpoint, Customer.recruited_partner_id),
            )
            .order_by(Touchpoint.occurred_at.desc(), Touchpoint.id.desc())
            .limit(1)
            .correlate(Order, Customer)
            .scalar_subquery()
        )
        touched = Touchpoint.id.is_not(None)
        columns = [
            # The touch's store decides its partner (a store belongs to one partner, or HQ).
            case((touched, Store.partner_id), else_=Customer.recruited_partner_id).label(
                "partner_id"
            ),
            case((touched, Touchpoint.store_id), else_=Customer.recruited_store_id).label(
                "store_id"
            ),
            case((touched, Touchpoint.guide_id), else_=Customer.recruited_guide_id).label(
                "guide_id"
            ),
        ]
        stmt = (
            select(Order.id)
            .join(Customer, Customer.id == Order.customer_id)  # before the touch: it reads it
            .outerjoin(Touchpoint, Touchpoint.id == latest)
            .outerjoin(Store, Store.id == Touchpoint.store_id)
        )
    return stmt.add_columns(
        Order.customer_id,
        *columns,
        literal(rule).label("rule"),
        literal(window_days or None, Integer).label("window_days"),
        Order.placed_at,
    ).where(
        Order.id.in_(order_ids),
        *counted_of_live_customers(),
        Customer.member_since.is_not(None),
        recruiter,
        Order.placed_at >= Customer.member_since,
    )


async def attribute_orders(
    session: AsyncSession,
    order_ids: Sequence[int],
    rule: str,
    window_days: int,
    *,
    now: datetime | None = None,
) -> int:
    """Attribute these orders (an order, or an import batch) under ``rule`` (first_touch,
    last_touch) and ``window_days`` (0: for life; N: orders placed less than N days after
    the member's recruitment), recording both on each row; returns the rows written.

    Decided once and kept: an order already attributed keeps its row (a retry, or a rule
    changed since). One statement for life, two with a window (its cut-off is computed
    here rather than with each engine's own date arithmetic), however many orders."""
    AttributionPolicy(rule, window_days)  # validates
    ids = sorted(set(order_ids))
    if not ids:
        return 0
    if window_days:
        window = timedelta(days=window_days)
        candidates = await session.execute(
            select(Order.id, Order.placed_at, Customer.member_since)
            .join(Customer, Customer.id == Order.customer_id)
            .where(Order.id.in_(ids), Customer.member_since.is_not(None))
        )
        ids = [
            order_id
            for order_id, placed_at, member_since in candidates
            # Never None (the WHERE above): said again for the type checker.
            if member_since is not None and placed_at < member_since + window
        ]
        if not ids:
            return 0
    chosen = _attribution_select(ids, rule, window_days).add_columns(
        literal(now or utcnow(), UTCDateTime()).label("created_at")
    )
    stmt = (
        insert_for(session)(OrderAttribution)
        .from_select(
            [
                "order_id",
                "customer_id",
                "partner_id",
                "store_id",
                "guide_id",
                "rule",
                "window_days",
                "placed_at",
                "created_at",
            ],
            chosen,
        )
        .on_conflict_do_nothing(index_elements=[OrderAttribution.order_id])
    )
    written = await session.execute(stmt, execution_options={"synchronize_session": False})
    return rows_written(written)
