from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class PartnerType(enum.Enum):
    DISTRIBUTOR = "distributor"  # 经销商
    AGENT = "agent"  # 代理商
    FRANCHISE_STORE = "franchise_store"  # 加盟店
    DIRECT_STORE = "direct_store"  # 直营店
    MARKETPLACE_SHOP = "marketplace_shop"  # 电商旗舰店 (Tmall, JD, Douyin)
    GROUP_LEADER = "group_leader"  # 团长


class PartnerStatus(enum.Enum):
    PROSPECT = "prospect"
    ACTIVE = "active"
    PROBATION = "probation"
    TERMINATED = "terminated"


class PartnerTier(enum.Enum):
    A = "a"
    B = "b"
    C = "c"


class StoreKind(enum.Enum):
    STORE = "store"  # sells to customers; can offer pickup
    WAREHOUSE = "warehouse"  # holds stock, ships deliveries; no counter


class StoreStatus(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Partner(Base):
    __tablename__ = "partner"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[PartnerType] = mapped_column(enum_column(PartnerType))
    status: Mapped[PartnerStatus] = mapped_column(enum_column(PartnerStatus))
    tier: Mapped[PartnerTier | None] = mapped_column(enum_column(PartnerTier))
    # Multi-level distribution (一级/二级): a second-level partner has its distributor as parent.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"), index=True)
    contact_name: Mapped[str | None] = mapped_column(String(100))
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    contact_email: Mapped[str | None] = mapped_column(String(254))
    contract_starts_on: Mapped[date | None]
    contract_ends_on: Mapped[date | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_partner_type_id", "type", "id"),
        Index("ix_partner_status_id", "status", "id"),
    )


class PartnerTerritory(Base):
    """A protected sales region (区域保护) of a partner, as a GB/T 2260 region code."""

    __tablename__ = "partner_territory"

    partner_id: Mapped[int] = mapped_column(
        ForeignKey("partner.id", ondelete="CASCADE"), primary_key=True
    )
    region_code: Mapped[str] = mapped_column(String(6), primary_key=True)

    __table_args__ = (Index("ix_partner_territory_region_code", "region_code"),)


class Store(Base):
    __tablename__ = "store"

    id: Mapped[int] = mapped_column(primary_key=True)
    # None: an HQ-operated location (warehouse or direct store run by the brand itself).
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6))
    address: Mapped[str] = mapped_column(String(500))
    kind: Mapped[StoreKind] = mapped_column(enum_column(StoreKind), default=StoreKind.STORE)
    offers_pickup: Mapped[bool] = mapped_column(default=False)
    status: Mapped[StoreStatus] = mapped_column(enum_column(StoreStatus))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("code"),
        # Partner.stores pages by (partner_id, id): this index serves it directly.
        Index("ix_store_partner_id_id", "partner_id", "id"),
        Index("ix_store_region_code", "region_code"),
    )
