"""The lock order every lifecycle step keeps, and the guarded status change it makes.

Every status change is one guarded ``UPDATE customer_order ... WHERE status IN (...)
RETURNING``: of a pickup, a cancel and the expiry job racing for one order exactly one
changes it, and only the winner goes on to move stock, points and coupons.

Locks are taken in one global order, the one customer merges and order creation use too:
the order's live customer first, then the order row, then stock rows, then coupons and
points. A merge (which locks customers, then moves coupons, points and orders) therefore
either runs entirely before an order's change or waits for it; taking the order row first
would deadlock with it. An order merged to another customer between reading its customer
and locking the row is retried with the new one (see ``take_as_owner``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.locks import lock_customer
from api.db import update_returning
from api.orders.lifecycle.common import not_found
from api.orders.models import Order

# Rounds of "lock the order's customer, then the order" before giving up: each round that
# fails saw a merge move the order to another customer meanwhile.
OWNER_ROUNDS = 5


def scoped_ids(principal: Principal) -> Any:
    """The ids of the orders the principal may act on (another partner's are not found)."""
    return restrict(select(Order.id), Order, principal)


async def claim(session: AsyncSession, stmt: Any) -> Order | None:
    """Run a guarded status UPDATE returning the order; None when the guard refused."""
    row = await update_returning(
        session, stmt.returning(Order).execution_options(populate_existing=True)
    )
    return row[0] if row is not None else None


async def take_as_owner(
    session: AsyncSession,
    where: Sequence[Any],
    take: Callable[[Sequence[Any]], Awaitable[Order | None]],
) -> Order | None:
    """Lock the live customer of the order matching ``where``, then let ``take`` lock the
    order row (a guarded UPDATE or SELECT ... FOR UPDATE) under ``where`` plus "still that
    customer's"; the order ``take`` returned. None when no order matches ``where`` (or no
    longer does: a racing change of its status won).

    A merge may move the order to another customer between the read and the lock; then the
    row no longer matches and the next round locks the new owner. Merges are rare and each
    moves an order once, so a few rounds suffice.
    """
    moving: int | None = None  # the order that kept moving, for the error
    for _ in range(OWNER_ROUNDS):
        found = (
            await session.execute(select(Order.id, Order.customer_id).where(*where).limit(1))
        ).first()
        if found is None:
            return None
        moving = found.id
        owners = {found.customer_id}
        if found.customer_id is not None:
            live = await lock_customer(session, found.customer_id)
            if live is not None:  # the survivor, if a merge moved the order before our lock
                owners.add(live.id)
        held = (
            Order.customer_id.is_(None)
            if found.customer_id is None
            else Order.customer_id.in_(owners)
        )
        order = await take([*where, Order.id == found.id, held])
        if order is not None:
            return order
    raise RuntimeError(f"order {moving} kept moving between customers while being locked")


async def claim_as_owner(
    session: AsyncSession, where: Sequence[Any], values: dict[str, Any]
) -> Order | None:
    """The guarded status UPDATE ``where`` → ``values``, its customer locked first."""

    async def update_guarded(guard: Sequence[Any]) -> Order | None:
        return await claim(session, update(Order).where(*guard).values(**values))

    return await take_as_owner(session, where, update_guarded)


async def explain(session: AsyncSession, principal: Principal, order_id: int) -> Order:
    """Why a guarded update found nothing: the order as the principal may see it, or
    NOT_FOUND (a missing order and another partner's answer alike)."""
    order = (
        await session.scalars(
            select(Order)
            .where(Order.id == order_id, Order.id.in_(scoped_ids(principal)))
            .execution_options(populate_existing=True)
        )
    ).first()
    if order is None:
        raise not_found()
    return order
