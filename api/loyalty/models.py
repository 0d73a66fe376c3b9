"""The points ledger (积分): append-only entries, earning lots, and the balance cache."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class EntryKind(enum.Enum):
    EARN = "earn"
    RELEASE = "release"  # pending points unlock after the return window
    REDEEM = "redeem"
    EXPIRE = "expire"
    REVERSE = "reverse"  # an earning undone (refund, cancel)
    ADJUST = "adjust"  # a manual grant or deduction
    TRANSFER = "transfer"  # moved between customers by a merge
    RETURN = "return"  # points an order spent, given back (cancel, expiry, refund)


class PointsAccount(Base):
    """A customer's balances: a cache of the ledger, updated in the same transaction.

    ``balance`` = Σ entries.amount = Σ remaining of released lots;
    ``pending`` = Σ entries.pending_delta = Σ remaining of pending lots;
    ``debt`` = Σ entries.debt_delta: reversals that found the points already spent, settled
    from the next earnings. Every ledger write starts by updating this row, so the row lock
    serializes one customer's writers on PostgreSQL (SQLite serializes all writers).
    """

    __tablename__ = "points_account"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    pending: Mapped[int] = mapped_column(BigInteger, default=0)
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The last line behind the row lock: a writer that lost it fails here instead of
    # spending points twice.
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("pending >= 0", name="pending_not_negative"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
    )


class PointsEntry(Base):
    """One ledger line. Never updated or deleted."""

    __tablename__ = "points_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    kind: Mapped[EntryKind] = mapped_column(enum_column(EntryKind))
    amount: Mapped[int] = mapped_column(BigInteger)  # change of the available balance
    pending_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    debt_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    # What caused it (an order, an adjustment, a merge) and its id. With ``kind`` this is the
    # idempotency key: the same earning retried adds nothing.
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(100))
    actor: Mapped[str | None] = mapped_column(String(100))
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("points_lot.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("source_type", "source_id", "kind", "customer_id"),
        Index("ix_points_entry_customer_id_id", "customer_id", "id"),
    )


class PointsLot(Base):
    """Points earned together: they unlock together and expire together."""

    __tablename__ = "points_lot"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    # Pending until this moment (the return window), then released into the balance.
    available_at: Mapped[datetime]
    released: Mapped[bool] = mapped_column(default=False)
    expires_at: Mapped[datetime | None]
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        CheckConstraint("remaining <= amount", name="remaining_within_amount"),
        Index("ix_points_lot_customer_id_expires_at", "customer_id", "expires_at"),
        # The expire and release jobs look only at lots with points left: partial indexes
        # stay small however many spent lots accumulate.
        Index(
            "ix_points_lot_expires_at_unspent",
            "expires_at",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
        Index(
            "ix_points_lot_available_at_pending",
            "available_at",
            postgresql_where=text("NOT released AND remaining > 0"),
            sqlite_where=text("NOT released AND remaining > 0"),
        ),
    )


class PointsEarningRule(Base):
    """How many points a purchase earns, narrowed by channel, store, SKU and member level.

    Empty conditions match everything. The most specific matching rule of the highest
    priority applies per purchase line; its points are ``amount × points_per_yuan ×
    multiplier``, rounded down.
    """

    __tablename__ = "points_earning_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(32))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    sku: Mapped[str | None] = mapped_column(String(64))
    level_id: Mapped[int | None] = mapped_column(ForeignKey("member_level.id"))
    points_per_yuan: Mapped[Decimal] = mapped_column(Numeric(10, 4), default=Decimal(1))
    multiplier: Mapped[Decimal] = mapped_column(Numeric(10, 4), default=Decimal(1))
    priority: Mapped[int] = mapped_column(default=0)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
