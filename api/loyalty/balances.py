"""What a points account shows as of now: its balance, its entries and lots; and whose
account a principal may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.locks import resolve_customer_id
from api.customers.models import Customer
from api.loyalty.models import PointsAccount, PointsEntry, PointsLot
from api.partners.models import Store
from api.partners.service import stores_query

EXPIRING_SOON = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Balance:
    """A customer's points as of ``now`` (not as of the last write)."""

    balance: int  # spendable now
    pending: int  # still inside the return window
    debt: int  # owed from reversals, settled from the next points
    expiring_soon: int  # spendable points that expire within EXPIRING_SOON
    next_expires_at: datetime | None  # the earliest expiry among spendable points


ZERO_BALANCE = Balance(0, 0, 0, 0, None)


async def balances_of(
    session: AsyncSession, customer_ids: Sequence[int], now: datetime
) -> dict[int, Balance]:
    """Point-in-time balances of many customers in one statement.

    The cached account row is the state as of the customer's last write; jobs expire and
    release lots later. So this computes from the lots at ``now``: a lot past its
    ``expires_at`` counts nowhere even if the expire job has not run; a pending lot whose
    ``available_at`` has passed counts as spendable even if the release job has not run,
    less the debt its release would settle first. ``debt`` comes from the account.
    """
    if not customer_ids:
        return {}
    lot = PointsLot
    valid = or_(lot.expires_at.is_(None), lot.expires_at > now)
    released = lot.released == true()
    matured = and_(lot.released == false(), lot.available_at <= now)
    waiting = and_(lot.released == false(), lot.available_at > now)
    spendable = or_(released, lot.available_at <= now)
    soon = and_(lot.expires_at.is_not(None), lot.expires_at <= now + EXPIRING_SOON)

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, lot.remaining), else_=0)), 0)

    lots = (
        select(
            lot.customer_id,
            total(and_(valid, released)).label("released"),
            total(and_(valid, matured)).label("matured"),
            total(and_(valid, waiting)).label("pending"),
            total(and_(valid, spendable, soon)).label("soon"),
            func.min(case((and_(valid, spendable), lot.expires_at), else_=None)).label("next"),
        )
        .where(lot.customer_id.in_(customer_ids), lot.remaining > 0)
        .group_by(lot.customer_id)
        .subquery()
    )
    # Every customer with a lot has an account (lots are written under the account lock),
    # so the account is the driving table and customers without one read as zero.
    stmt = (
        select(
            PointsAccount.customer_id,
            PointsAccount.debt,
            lots.c.released,
            lots.c.matured,
            lots.c.pending,
            lots.c.soon,
            lots.c.next,
        )
        .outerjoin(lots, lots.c.customer_id == PointsAccount.customer_id)
        .where(PointsAccount.customer_id.in_(customer_ids))
    )
    found: dict[int, Balance] = {}
    for row in (await session.execute(stmt)).all():
        released_pts, matured_pts = int(row.released or 0), int(row.matured or 0)
        settled = min(row.debt, matured_pts)  # what releasing now would pay off first
        balance = released_pts + matured_pts - settled
        next_expiry = row.next
        if isinstance(next_expiry, str):  # SQLite returns MIN() of a CASE untyped
            next_expiry = datetime.fromisoformat(next_expiry).replace(tzinfo=UTC)
        found[row.customer_id] = Balance(
            balance=balance,
            pending=int(row.pending or 0),
            debt=row.debt - settled,
            expiring_soon=min(int(row.soon or 0), balance),
            next_expires_at=next_expiry if balance > 0 else None,
        )
    return {cid: found.get(cid, ZERO_BALANCE) for cid in customer_ids}


def entries_query(principal: Principal) -> Select[PointsEntry]:
    return restrict(select(PointsEntry), PointsEntry, principal)


ENTRY_KEYSET = (PointsEntry.id,)


async def entries_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, PointsEntry]:
    stmt = entries_query(principal).where(PointsEntry.id.in_(ids))
    return {e.id: e for e in (await session.scalars(stmt)).all()}


async def lot_expiries(session: AsyncSession, lot_ids: Sequence[int]) -> dict[int, datetime | None]:
    if not lot_ids:
        return {}
    rows = await session.execute(
        select(PointsLot.id, PointsLot.expires_at).where(PointsLot.id.in_(lot_ids))
    )
    return {lot_id: expires_at for lot_id, expires_at in rows.all()}


async def visible_customer_id(
    session: AsyncSession, principal: Principal, customer_id: int
) -> int | None:
    """The live customer behind ``customer_id`` (following merges) if the principal may see
    it; None otherwise, so another partner's customer answers like a missing one."""
    live = await resolve_customer_id(session, customer_id)
    if live is None:
        return None
    return live if await may_see(session, principal, live) else None


async def live_customer_id(session: AsyncSession, customer_id: int) -> int | None:
    """The live customer behind ``customer_id`` (following merges); None if none. Entries
    keep the id they were written for, their points are with this one."""
    return await resolve_customer_id(session, customer_id)


async def visible_store_id(
    session: AsyncSession, principal: Principal, store_id: int
) -> int | None:
    """``store_id`` if the principal may see that store, else None: another partner's store
    answers like a missing one (its earning rules are that partner's business)."""
    stmt = stores_query(principal).with_only_columns(Store.id).where(Store.id == store_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def customer_level_id(session: AsyncSession, customer_id: int) -> int | None:
    """The member level the earning rules see for a customer (None: not a member)."""
    stmt = select(Customer.level_id).where(Customer.id == customer_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def may_see(session: AsyncSession, principal: Principal, customer_id: int) -> bool:
    """Whether the principal may see the customer (and so its points)."""
    stmt = restrict(select(Customer.id).where(Customer.id == customer_id), Customer, principal)
    return (await session.execute(stmt)).scalar_one_or_none() is not None
