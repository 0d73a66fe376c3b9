"""The buyers of a batch as customers: found by their marketplace buyer id, else by the
order's phone (the buyer id then attached), else created; blank profile fields filled. Race-safe
without locks of our own (see ``Buyers.customers``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.orders.importer.records import ImportedOrder
from api.orders.importer.writing import bucketed, table_of

if TYPE_CHECKING:
    from api.db import Database


@dataclass(slots=True)
class Owner:
    """A live customer found for an identity, locked for the batch."""

    id: int
    contact_phone: str | None
    first_channel: str | None


class Buyers:
    """Matches a run's buyers to customers, batch by batch."""

    def __init__(self, db: Database, insert: Any, now: datetime) -> None:
        self.db = db
        self.insert = insert
        self.now = now

    async def customers(
        self, session: AsyncSession, orders: list[ImportedOrder]
    ) -> tuple[dict[str, int], int]:
        """Buyer identity value → live customer id, creating the customers and attaching the
        buyer ids that are new; and how many it created. Race-safe without locks of our own: a
        buyer id some concurrent upsert attached first wins (ON CONFLICT), and the customer we
        made for it is dropped."""
        # buyer → its first order in the batch (one with a phone if any)
        first: dict[str, ImportedOrder] = {}
        for order in orders:
            if order.buyer not in first or (order.phone and not first[order.buyer].phone):
                first[order.buyer] = order
        buyers = sorted(first)
        phones = sorted({o.phone for o in first.values() if o.phone})
        owners = await self._owners(session, buyers, phones)
        found: dict[str, int] = {}
        attach: dict[str, int] = {}  # buyer → an existing customer found by phone
        create: list[str] = []
        phone_fill: dict[int, str] = {}
        channel_fill: dict[int, str] = {}
        for buyer in buyers:
            order = first[buyer]
            owner = owners.get((IdentityKind.MARKETPLACE_BUYER, buyer))
            if owner is None and order.phone:
                owner = owners.get((IdentityKind.PHONE, order.phone))
                if owner is not None:
                    attach[buyer] = owner.id
            if owner is None:
                create.append(buyer)
                continue
            found[buyer] = owner.id
            # fill_only, as customerUpsert from a channel feed: blanks only.
            if order.phone and owner.contact_phone is None and owner.id not in phone_fill:
                phone_fill[owner.id] = order.phone
            if owner.first_channel is None and owner.id not in channel_fill:
                channel_fill[owner.id] = order.ident[0].value
        new_ids = await self._create_customers(session, [first[b] for b in create])
        created = dict(zip(create, new_ids, strict=True))
        lost = await self._attach(session, attach | created)
        if lost:
            winners = await self._owners(session, sorted(lost), [])
            for buyer in lost:
                found[buyer] = winners[(IdentityKind.MARKETPLACE_BUYER, buyer)].id
            orphans = [created.pop(buyer) for buyer in lost if buyer in created]
            if orphans:
                await session.execute(delete(Customer).where(Customer.id.in_(orphans)))
        await self._fill(session, Customer.contact_phone, phone_fill)
        await self._fill(session, Customer.first_channel, channel_fill)
        return found | created, len(created)

    async def _owners(
        self, session: AsyncSession, buyers: Sequence[str], phones: Sequence[str]
    ) -> dict[tuple[IdentityKind, str], Owner]:
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
        owners: dict[tuple[IdentityKind, str], Owner] = {}
        moved: dict[tuple[IdentityKind, str], int] = {}
        for kind, value, cid, merged_into, status, phone, channel in rows:
            if merged_into is None and status is CustomerStatus.ACTIVE:
                owners[(kind, value)] = Owner(cid, phone, channel)
            elif merged_into is not None:
                moved[(kind, value)] = merged_into
        if moved:
            live = await self._follow(session, set(moved.values()))
            owners |= {pair: live[target] for pair, target in moved.items() if target in live}
        return owners

    async def _follow(self, session: AsyncSession, ids: set[int]) -> dict[int, Owner]:
        """Merge redirects → the live customers at their end, locked (the rare path)."""
        hop = {i: i for i in ids}
        for _ in range(8):
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
                    asked: Owner(by_id[c].id, by_id[c].contact_phone, by_id[c].first_channel)
                    for asked, c in hop.items()
                    if c in by_id and by_id[c].status is CustomerStatus.ACTIVE
                }
            hop = {
                asked: by_id[c].merged_into_id or c if c in by_id else c for asked, c in hop.items()
            }
        raise RuntimeError("customer merge redirects form a loop")

    async def _create_customers(
        self, session: AsyncSession, orders: list[ImportedOrder]
    ) -> list[int]:
        """One customer per order given, ids in the same order. The ids are taken first and
        the rows inserted with them: the rows RETURNING of a multi-row INSERT is not in the
        order of its VALUES (SQLite says so), and asking SQLAlchemy to sort them makes it send
        one INSERT per row on SQLite."""
        if not orders:
            return []
        if self.db.is_sqlite:
            # Writers are serialized (BEGIN IMMEDIATE): nobody inserts a customer until we
            # commit, so the ids after the highest are ours.
            highest = await session.scalar(select(func.max(Customer.id))) or 0
            ids = list(range(highest + 1, highest + 1 + len(orders)))
        else:
            ids = list(
                await session.scalars(
                    select(func.nextval(func.pg_get_serial_sequence("customer", "id"))).select_from(
                        func.generate_series(1, len(orders))
                    )
                )
            )
        await session.execute(
            table_of(Customer).insert(),
            [
                {
                    "id": customer_id,
                    "status": CustomerStatus.ACTIVE,
                    "attributes": {},
                    "first_channel": order.ident[0].value,
                    "contact_phone": order.phone,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
                for customer_id, order in zip(ids, orders, strict=True)
            ],
        )
        return ids

    async def _attach(self, session: AsyncSession, targets: dict[str, int]) -> list[str]:
        """Attach buyer ids to customers; return the buyer ids someone attached first.

        ON CONFLICT DO NOTHING on the identity's unique key, then one read of who holds each
        (a concurrent holder has committed by then: the insert waited for it). Sent as an
        executemany of one prepared single-row statement, not a multi-row INSERT ... RETURNING
        whose text changes with every row count."""
        if not targets:
            return []
        table = table_of(CustomerIdentity)
        buyers = sorted(targets)
        await session.execute(
            self.insert(table).on_conflict_do_nothing(index_elements=["kind", "value"]),
            [
                {
                    "customer_id": targets[buyer],
                    "kind": IdentityKind.MARKETPLACE_BUYER,
                    "value": buyer,
                    "created_at": self.now,
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

    async def _fill(self, session: AsyncSession, column: Any, values: dict[int, str]) -> None:
        """Set a blank profile field (fill only: a value on file is kept)."""
        if not values:
            return
        table = table_of(Customer)
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("cid"), table.c[column.key].is_(None))
            .values({column.key: bindparam("value"), "updated_at": self.now}),
            [{"cid": cid, "value": value} for cid, value in sorted(values.items())],
        )

    # --- orders ---
