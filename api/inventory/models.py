"""Stock per (location, SKU), the log of every movement, and low-stock alerts."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class StockLevel(Base):
    """What a location holds of a SKU. Invariant 3 lives in the CHECKs: reserved never exceeds
    on hand; every change is a conditional UPDATE guarded by the same condition."""

    __tablename__ = "stock_level"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("store.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    on_hand: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    safety_level: Mapped[int] = mapped_column(BigInteger, default=0)  # 安全库存
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("store_id", "sku_id"),
        Index("ix_stock_level_sku_id", "sku_id"),
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
        CheckConstraint("safety_level >= 0", name="safety_not_negative"),
    )


class MovementKind(enum.Enum):
    ADJUST = "adjust"  # staff or a partner system counted or corrected stock
    RESERVE = "reserve"  # a pickup order holds units
    RELEASE = "release"  # a held reservation is given back (cancel, expiry)
    SALE = "sale"  # units leave: a pickup from the reservation, or a sale from on hand
    RESTOCK = "restock"  # a refund or return puts units back
    DISPATCH = "dispatch"  # units leave for another location (a purchase order shipped)
    RECEIPT = "receipt"  # units arrive from elsewhere (a purchase order received)


class StockMovement(Base):
    """Append-only: one row per change of a stock level, with the level after it.

    ``(source_type, source_id, kind, store_id, sku_id)`` is unique, so a retried change from
    the same source (an order's reservation, an adjustment's idempotency key) lands once.
    """

    __tablename__ = "stock_movement"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("store.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    kind: Mapped[MovementKind] = mapped_column(enum_column(MovementKind))
    on_hand_delta: Mapped[int] = mapped_column(BigInteger)
    reserved_delta: Mapped[int] = mapped_column(BigInteger)
    on_hand_after: Mapped[int] = mapped_column(BigInteger)
    reserved_after: Mapped[int] = mapped_column(BigInteger)
    # The safety level an adjustment set (None: it left the level as it was).
    safety_level_set: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(160))
    actor: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("source_type", "source_id", "kind", "store_id", "sku_id"),
        Index("ix_stock_movement_store_id_sku_id_id", "store_id", "sku_id", "id"),
    )


class StockAlert(Base):
    """Available stock (on hand - reserved) fell below the safety level. One open alert per
    (location, SKU); it resolves when available stock is back at or above the level."""

    __tablename__ = "stock_alert"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("store.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    available: Mapped[int] = mapped_column(BigInteger)  # when raised
    safety_level: Mapped[int] = mapped_column(BigInteger)
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_stock_alert_open",
            "store_id",
            "sku_id",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("ix_stock_alert_store_id_id", "store_id", "id"),
    )
