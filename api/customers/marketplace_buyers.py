"""Marketplace buyers seen in an order import, made customers in bulk: the customers domain's
write path for ``qudao import orders`` (api/orders/importer.py), so that customer and identity
rows are written by this domain alone.

A buyer is found by the ``<marketplace>:<buyer id>`` identity, else by a phone identity equal
to the order's phone (the buyer id is then attached to that customer), else created with
``first_channel`` the marketplace. The order's phone fills ``contact_phone`` when it is blank
and is never attached as a login identity: a marketplace phone is the recipient's, often not
the buyer's, and an identity would let whoever holds it sign in as the buyer.

A batch costs a fixed number of statements however many buyers it holds: the buyers' and
phones' customers, the new customers (two), the identities (two) and the two fills, each in
one statement; more only when an owner was merged meanwhile or a concurrent upsert attached a
buyer id first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.locks import MAX_REDIRECTS
from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.db import bucketed, dialect_insert

# Core statements over the tables (one prepared statement, executemany). A declarative
# model's __table__ is a Table; its type says FromClause (which has no insert or update).
_CUSTOMERS = cast(Table, Customer.__table__)
_IDENTITIES = cast(Table, CustomerIdentity.__table__)


@dataclass(frozen=True, slots=True)
class BuyerSeen:
    """A buyer as one imported order shows them (values normalized by the caller)."""

    buyer: str  # the MARKETPLACE_BUYER identity value, "<marketplace>:<buyer id>"
    phone: str | None  # the order's mainland mobile, if any
    channel: str  # the marketplace: a new customer's first channel


@dataclass(frozen=True, slots=True)
class BuyersUpserted:
    customer_ids: dict[str, int]  # buyer identity value → live customer id
    created: int  # customers created for buyers nobody knew


@dataclass(slots=True)
class _Owner:
    """A live customer found for an identity, locked for the batch."""

    id: int
    contact_phone: str | None
    first_channel: str | None


async def upsert_marketplace_buyers(
    session: AsyncSession, seen: Sequence[BuyerSeen], *, now: datetime
) -> BuyersUpserted:
    """Buyer identity value → live customer id, creating the customers and attaching the
    buyer ids that are new. Race-safe without locks of our own: a buyer id some concurrent
    upsert attached first wins (ON CONFLICT), and the customer we made for it is dropped."""
    first: dict[str, BuyerSeen] = {}  # buyer → its first sighting (one with a phone if any)
    for sighting in seen:
        if sighting.buyer not in first or (sighting.phone and not first[sighting.buyer].phone):
            first[sighting.buyer] = sighting
    buyers = sorted(first)
    phones = sorted({s.phone for s in first.values() if s.phone})
    owners = await _owners(session, buyers, phones)
    found: dict[str, int] = {}
    attach: dict[str, int] = {}  # buyer → an existing customer found by phone
    create: list[str] = []
    phone_fill: dict[int, str] = {}
    channel_fill: dict[int, str] = {}
    for buyer in buyers:
        sighting = first[buyer]
        owner = owners.get((IdentityKind.MARKETPLACE_BUYER, buyer))
        if owner is None and sighting.phone:
            owner = owners.get((IdentityKind.PHONE, sighting.phone))
            if owner is not None:
                attach[buyer] = owner.id
        if owner is None:
            create.append(buyer)
            continue
        found[buyer] = owner.id
        # fill_only, as customerUpsert from a channel feed: blanks only.
        if sighting.phone and owner.contact_phone is None and owner.id not in phone_fill:
            phone_fill[owner.id] = sighting.phone
        if owner.first_channel is None and owner.id not in channel_fill:
            channel_fill[owner.id] = sighting.channel
    new_ids = await _create_customers(session, [first[b] for b in create], now)
    created = dict(zip(create, new_ids, strict=True))
    lost = await _attach(session, attach | created, now)
    if lost:
        winners = await _owners(session, sorted(lost), [])
        for buyer in lost:
            found[buyer] = winners[(IdentityKind.MARKETPLACE_BUYER, buyer)].id
        orphans = [created.pop(buyer) for buyer in lost if buyer in created]
        if orphans:
            await session.execute(delete(Customer).where(Customer.id.in_(orphans)))
    await _fill(session, Customer.contact_phone, phone_fill, now)
    await _fill(session, Customer.first_channel, channel_fill, now)
    return BuyersUpserted(found | created, len(created))


async def _owners(
    session: AsyncSession, buyers: Sequence[str], phones: Sequence[str]
) -> dict[tuple[IdentityKind, str], _Owner]:
    """The live customers holding these buyer ids and phones, locked in id order (FOR NO
    KEY UPDATE: the batch may fill a blank contact phone, and a shared lock upgraded by
    two imports at once would deadlock; orders referencing them are not held up). A merge
    waits for the batch, or the batch for it and then follows its redirect. One statement
    unless an owner was merged meanwhile."""
    match = [
        and_(
            CustomerIdentity.kind == IdentityKind.MARKETPLACE_BUYER,
            CustomerIdentity.value.in_(bucketed(buyers)),
        )
    ]
    if phones:
        match.append(
            and_(
                CustomerIdentity.kind == IdentityKind.PHONE,
                CustomerIdentity.value.in_(bucketed(phones)),
            )
        )
    rows = (
        await session.execute(
            select(
                CustomerIdentity.kind,
                CustomerIdentity.value,
                Customer.id,
                Customer.merged_into_id,
                Customer.status,
                Customer.contact_phone,
                Customer.first_channel,
            )
            .join(Customer, Customer.id == CustomerIdentity.customer_id)
            .where(or_(*match))
            .order_by(Customer.id)
            .with_for_update(key_share=True, of=Customer)
        )
    ).all()
    owners: dict[tuple[IdentityKind, str], _Owner] = {}
    moved: dict[tuple[IdentityKind, str], int] = {}
    for kind, value, cid, merged_into, status, phone, channel in rows:
        if merged_into is None and status is CustomerStatus.ACTIVE:
            owners[(kind, value)] = _Owner(cid, phone, channel)
        elif merged_into is not None:
            moved[(kind, value)] = merged_into
    if moved:
        live = await _follow(session, set(moved.values()))
        owners |= {pair: live[target] for pair, target in moved.items() if target in live}
    return owners


async def _follow(session: AsyncSession, ids: set[int]) -> dict[int, _Owner]:
    """Merge redirects → the live customers at their end, locked (the rare path)."""
    hop = {i: i for i in ids}
    for _ in range(MAX_REDIRECTS):
        rows = (
            await session.execute(
                select(
                    Customer.id,
                    Customer.merged_into_id,
                    Customer.status,
                    Customer.contact_phone,
                    Customer.first_channel,
                )
                .where(Customer.id.in_(set(hop.values())))
                .order_by(Customer.id)
                .with_for_update(key_share=True)
            )
        ).all()
        by_id = {row.id: row for row in rows}
        if all(by_id[c].merged_into_id is None for c in hop.values() if c in by_id):
            return {
                asked: _Owner(by_id[c].id, by_id[c].contact_phone, by_id[c].first_channel)
                for asked, c in hop.items()
                if c in by_id and by_id[c].status is CustomerStatus.ACTIVE
            }
        hop = {asked: by_id[c].merged_into_id or c if c in by_id else c for asked, c in hop.items()}
    raise RuntimeError("customer merge redirects form a loop")


async def _create_customers(
    session: AsyncSession, buyers: list[BuyerSeen], now: datetime
) -> list[int]:
    """One customer per buyer given, ids in the same order. The ids are taken first and
    the rows inserted with them: the rows RETURNING of a multi-row INSERT is not in the
    order of its VALUES (SQLite says so), and asking SQLAlchemy to sort them makes it send
    one INSERT per row on SQLite."""
    if not buyers:
        return []
    if session.get_bind().dialect.name == "sqlite":
        # Writers are serialized (BEGIN IMMEDIATE): nobody inserts a customer until we
        # commit, so the ids after the highest are ours.
        highest = await session.scalar(select(func.max(Customer.id))) or 0
        ids = list(range(highest + 1, highest + 1 + len(buyers)))
    else:
        ids = list(
            await session.scalars(
                select(func.nextval(func.pg_get_serial_sequence("customer", "id"))).select_from(
                    func.generate_series(1, len(buyers))
                )
            )
        )
    await session.execute(
        _CUSTOMERS.insert(),
        [
            {
                "id": customer_id,
                "status": CustomerStatus.ACTIVE,
                "attributes": {},
                "first_channel": buyer.channel,
                "contact_phone": buyer.phone,
                "created_at": now,
                "updated_at": now,
            }
            for customer_id, buyer in zip(ids, buyers, strict=True)
        ],
    )
    return ids


async def _attach(session: AsyncSession, targets: dict[str, int], now: datetime) -> list[str]:
    """Attach buyer ids to customers; return the buyer ids someone attached first.

    ON CONFLICT DO NOTHING on the identity's unique key, then one read of who holds each
    (a concurrent holder has committed by then: the insert waited for it). Sent as an
    executemany of one prepared single-row statement, not a multi-row INSERT ... RETURNING
    whose text changes with every row count."""
    if not targets:
        return []
    table = _IDENTITIES
    buyers = sorted(targets)
    await session.execute(
        dialect_insert(session)(table).on_conflict_do_nothing(index_elements=["kind", "value"]),
        [
            {
                "customer_id": targets[buyer],
                "kind": IdentityKind.MARKETPLACE_BUYER,
                "value": buyer,
                "created_at": now,
            }
            for buyer in buyers
        ],
    )
    holders = dict(
        (
            await session.execute(
                select(table.c.value, table.c.customer_id).where(
                    table.c.kind == IdentityKind.MARKETPLACE_BUYER,
                    table.c.value.in_(bucketed(buyers)),
                )
            )
        ).all()
    )
    return [buyer for buyer in buyers if holders.get(buyer) != targets[buyer]]


async def _fill(session: AsyncSession, column: Any, values: dict[int, str], now: datetime) -> None:
    """Set a blank profile field (fill only: a value on file is kept)."""
    if not values:
        return
    table = _CUSTOMERS
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("cid"), table.c[column.key].is_(None))
        .values({column.key: bindparam("value"), "updated_at": now}),
        [{"cid": cid, "value": value} for cid, value in sorted(values.items())],
    )
