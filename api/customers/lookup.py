"""Reading customers by id within a principal's scope, and their identities, consents and tags
in batches (the loaders' queries)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.errors import CustomerErrorCode
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.models import (
    Customer,
    CustomerConsent,
    CustomerIdentity,
    CustomerStatus,
    CustomerTag,
)
from api.errors import DomainError


async def customers_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Customer]:
    """Requested id → the live customer it names, following merge redirects, within the
    principal's scope. Ids that are missing or not visible are absent. One statement."""
    if not ids:
        return {}
    asked = aliased(Customer)
    stmt = (
        select(Customer, asked.id)
        .join(asked, func.coalesce(asked.merged_into_id, asked.id) == Customer.id)
        .where(asked.id.in_(set(ids)), Customer.status == CustomerStatus.ACTIVE)
    )
    rows = await session.execute(restrict(stmt, Customer, principal))
    return {asked_id: customer for customer, asked_id in rows}


async def get_customer(
    session: AsyncSession,
    principal: Principal,
    customer_id: int,
    *,
    lock: bool = False,
    path: Sequence[str] = ("customerId",),
) -> Customer:
    """The live customer behind ``customer_id`` if the principal may see it, else
    NOT_FOUND (another partner's customer answers exactly like a missing one).

    With ``lock`` the row is locked (FOR UPDATE; SQLite writers are serialized anyway),
    after following redirects under the lock: a merge that committed while we waited
    leads to its survivor rather than to a row that no longer counts.
    """
    customer: Customer | None = None
    live_id = await resolve_customer_id(session, customer_id)
    if lock and live_id is not None:
        customer = await lock_customer(session, live_id)
        live_id = customer.id if customer is not None else None
    if live_id is not None:
        visible = restrict(
            select(Customer).where(
                Customer.id == live_id, Customer.status == CustomerStatus.ACTIVE
            ),
            Customer,
            principal,
        )
        customer = await session.scalar(visible)
    if customer is None:
        raise DomainError.one(CustomerErrorCode.NOT_FOUND, "No such customer.", *path)
    return customer


async def identities_of(
    session: AsyncSession, customer_ids: Sequence[int]
) -> dict[int, list[CustomerIdentity]]:
    rows = await session.scalars(
        select(CustomerIdentity)
        .where(CustomerIdentity.customer_id.in_(customer_ids))
        .order_by(CustomerIdentity.customer_id, CustomerIdentity.id)
    )
    found: dict[int, list[CustomerIdentity]] = {cid: [] for cid in customer_ids}
    for row in rows:
        found[row.customer_id].append(row)
    return found


async def consents_of(
    session: AsyncSession, customer_ids: Sequence[int]
) -> dict[int, list[CustomerConsent]]:
    rows = await session.scalars(
        select(CustomerConsent)
        .where(CustomerConsent.customer_id.in_(customer_ids))
        .order_by(CustomerConsent.customer_id, CustomerConsent.purpose)
    )
    found: dict[int, list[CustomerConsent]] = {cid: [] for cid in customer_ids}
    for row in rows:
        found[row.customer_id].append(row)
    return found


async def tags_of(session: AsyncSession, customer_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = await session.execute(
        select(CustomerTag.customer_id, CustomerTag.tag)
        .where(CustomerTag.customer_id.in_(customer_ids))
        .order_by(CustomerTag.customer_id, CustomerTag.tag)
    )
    found: dict[int, list[str]] = {cid: [] for cid in customer_ids}
    for customer_id, tag in rows:
        found[customer_id].append(tag)
    return found
