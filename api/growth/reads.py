"""Reading touchpoints: what a principal may read (``touch_scope``), which touches may decide
attribution (``attributable_touch``), and the scoped list and batch reads.

A partner principal sees the touchpoints of its own partner id (store staff their store's),
not every touchpoint of the customers it recruited: a touchpoint names the store, guide and
campaign of whoever recorded it, and one partner's member may well scan another partner's
QR code. Members see none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.auth.principal import Principal
from api.customers.models import Customer
from api.growth.models import HQ_SCOPE, SYSTEM_SCOPE, Touchpoint, TouchpointStep


@dataclass(slots=True)
class TouchpointFilter:
    customer_ids: Sequence[int] = ()
    steps: Sequence[TouchpointStep] = ()
    campaign_ids: Sequence[str] = ()
    store_ids: Sequence[int] = ()
    occurred_from: datetime | None = None  # inclusive
    occurred_to: datetime | None = None  # exclusive


TOUCHPOINT_KEYSET = (Touchpoint.id,)


def touch_scope(principal: Principal, touch: Any = Touchpoint) -> list[ColumnElement[bool]]:
    """The conditions that limit touchpoints (``touch``: the model or an alias of it) to what
    the principal may read: HQ all, a partner its partner id's, store staff their store's
    (an HQ-run store's touches have no partner), members and anyone else none."""
    if principal.is_hq:
        return []
    if principal.is_member:
        return [false()]
    if principal.partner_id is None:
        if principal.store_id is None:
            return [false()]
        return [touch.partner_id.is_(None), touch.store_id == principal.store_id]
    conditions = [touch.partner_id == principal.partner_id]
    if principal.store_id is not None:
        conditions.append(touch.store_id == principal.store_id)
    return conditions


def attributable_touch(
    touch: Any = Touchpoint, recruited_partner_id: Any = None
) -> ColumnElement[bool]:
    """Whether a touch (``touch``: the model or an alias of it) may decide whom its
    customer's orders are attributed to (last_touch): one Qudao recorded itself (memberJoin,
    orders) or HQ recorded, or one counting for the partner that recruited the customer (an
    HQ-run store's touch for a customer HQ recruited). Any partner may record a touch of any
    customer it can name by phone; without this, partner B's QR scan of partner A's member
    would take A's revenue (and rebates). Self-contained (a primary-key probe of the
    customer): usable in any statement over touchpoints, correlated or not. A statement
    that has the touch's customer at hand passes its ``recruited_partner_id`` instead."""
    recruiter = recruited_partner_id
    if recruiter is None:
        customer = aliased(Customer, name="attributed_customer")
        recruiter = (
            select(customer.recruited_partner_id)
            .where(customer.id == touch.customer_id)
            .scalar_subquery()
        )
    return or_(
        touch.recorded_scope.in_((SYSTEM_SCOPE, HQ_SCOPE)),
        touch.partner_id.is_not_distinct_from(recruiter),
    )


def touchpoints_query(principal: Principal, where: TouchpointFilter | None = None) -> Select[Any]:
    stmt = select(Touchpoint).where(*touch_scope(principal))
    if where is None:
        return stmt
    if where.customer_ids:
        stmt = stmt.where(Touchpoint.customer_id.in_(where.customer_ids))
    if where.steps:
        stmt = stmt.where(Touchpoint.step.in_(where.steps))
    if where.campaign_ids:
        stmt = stmt.where(Touchpoint.campaign_id.in_(where.campaign_ids))
    if where.store_ids:
        stmt = stmt.where(Touchpoint.store_id.in_(where.store_ids))
    if where.occurred_from is not None:
        stmt = stmt.where(Touchpoint.occurred_at >= where.occurred_from)
    if where.occurred_to is not None:
        stmt = stmt.where(Touchpoint.occurred_at < where.occurred_to)
    return stmt


async def touchpoints_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Touchpoint]:
    if not ids:
        return {}
    rows = await session.scalars(touchpoints_query(principal).where(Touchpoint.id.in_(set(ids))))
    return {row.id: row for row in rows}
