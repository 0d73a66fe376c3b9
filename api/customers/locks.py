"""The live customer behind an id (following merge redirects), and the locks every writer of
customer data takes: on customers (ascending id, as a merge does) and on identities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.db import advisory_lock

# A chain of redirects is at most one hop (a merge re-points customers merged into its
# sources); the bound only guards against a corrupted row.
MAX_REDIRECTS = 8
_IDENTITY_LOCK = "customer-identity:"


async def resolve_customer_id(session: AsyncSession, customer_id: int) -> int | None:
    """The live customer an id names: itself, or where it was merged into. None if none."""
    current = customer_id
    for _ in range(MAX_REDIRECTS):
        row = (
            await session.execute(
                select(Customer.id, Customer.merged_into_id).where(Customer.id == current)
            )
        ).first()
        if row is None:
            return None
        if row.merged_into_id is None:
            return row.id
        current = row.merged_into_id
    raise RuntimeError(f"customer {customer_id}: merge redirects form a loop")


def identity_match(pairs: Sequence[tuple[IdentityKind, str]]) -> Any:
    return or_(*(and_(CustomerIdentity.kind == k, CustomerIdentity.value == v) for k, v in pairs))


async def lock_live_customers(session: AsyncSession, ids: set[int]) -> dict[int, Customer]:
    """Lock the customers ``ids`` name (ascending id, as a merge does) and follow merge
    redirects to the live ones: requested id → live customer, locked."""
    hop = {i: i for i in ids}  # requested id → the id it currently leads to
    locked: dict[int, Customer] = {}
    missing: set[int] = set()
    for _ in range(MAX_REDIRECTS):
        pending = {c for c in hop.values() if c not in locked and c not in missing}
        if pending:
            rows = await session.scalars(
                select(Customer)
                .where(Customer.id.in_(pending))
                .order_by(Customer.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            for row in rows:
                locked[row.id] = row
            missing |= pending - locked.keys()
        moved = False
        for asked, current in hop.items():
            held = locked.get(current)
            if held is not None and held.merged_into_id is not None:
                hop[asked] = held.merged_into_id
                moved = True
        if not moved:
            return {
                asked: locked[current]
                for asked, current in hop.items()
                if current in locked and locked[current].status is CustomerStatus.ACTIVE
            }
    raise RuntimeError("merge redirects form a loop")


async def lock_customer(
    session: AsyncSession, customer_id: int, *, shared: bool = False
) -> Customer | None:
    """Lock the live customer behind ``customer_id`` for the rest of the transaction (a share
    lock with ``shared``); None if there is no such customer. Writers that attach data to a
    customer take this lock first, so a concurrent merge either sees their data (and moves
    it) or has already redirected them to the survivor.

    Only the live row is ever locked. A merged row is followed without a lock: a merge of
    the survivor T into U holds T and then rewrites the redirects pointing at T, so a writer
    holding an old row S while waiting for T would deadlock with it. Liveness is part of the
    locking statement, so a merge that committed while we waited makes the row drop out and
    we follow the new redirect.
    """
    current = customer_id
    for _ in range(MAX_REDIRECTS):
        live = await session.scalar(
            select(Customer)
            .where(
                Customer.id == current,
                Customer.merged_into_id.is_(None),
                Customer.status == CustomerStatus.ACTIVE,
            )
            .with_for_update(read=shared)
            .execution_options(populate_existing=True)
        )
        if live is not None:
            return live
        redirect = await session.scalar(
            select(Customer.merged_into_id).where(Customer.id == current)
        )
        if redirect is None:
            return None
        current = redirect
    raise RuntimeError("merge redirects form a loop")


async def identity_holders(
    session: AsyncSession, pairs: Sequence[tuple[IdentityKind, str]]
) -> dict[tuple[IdentityKind, str], CustomerIdentity]:
    rows = await session.scalars(select(CustomerIdentity).where(identity_match(pairs)))
    return {(r.kind, r.value): r for r in rows}


async def lock_identity_owner(
    session: AsyncSession, pair: tuple[IdentityKind, str]
) -> Customer | None:
    """The live customer who holds ``pair`` (normalized), locked; None when nobody does.

    No scope check: the caller decides what it may tell about the answer. Take
    ``lock_identities`` first so nobody attaches the identity between this and the write.
    """
    row = (await identity_holders(session, [pair])).get(pair)
    return None if row is None else await lock_customer(session, row.customer_id)


async def lock_identities(session: AsyncSession, pairs: Sequence[tuple[IdentityKind, str]]) -> None:
    """Serialize writers of the same identities until this transaction ends.

    Two concurrent first contacts of one new phone would otherwise both see no customer and
    both create one. On PostgreSQL this is an advisory lock per identity (sorted, so two
    writers never wait on each other in a cycle); the statement after it gets a fresh
    snapshot (READ COMMITTED) and sees what the previous holder committed. SQLite's writers
    are serialized by BEGIN IMMEDIATE already.
    """
    for kind, value in sorted(pairs, key=lambda p: (p[0].value, p[1])):
        await advisory_lock(session, f"{_IDENTITY_LOCK}{kind.value}:{value}")
