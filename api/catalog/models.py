"""Products and SKUs, with a suggested retail price, a cost price and per-channel price bands."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class SalesChannel(enum.Enum):
    """Where an order is taken. The values are the channel names earning rules match on."""

    MINI_PROGRAM = "mini_program"
    WEB = "web"
    STORE_POS = "store_pos"
    TMALL = "tmall"
    JD = "jd"
    DOUYIN = "douyin"
    GROUP_BUY = "group_buy"


MARKETPLACES = (SalesChannel.TMALL, SalesChannel.JD, SalesChannel.DOUYIN)


class ProductStatus(enum.Enum):
    ACTIVE = "active"
    ARCHIVED = "archived"  # no longer sold; kept for the orders that name it


class Product(Base):
    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[ProductStatus] = mapped_column(
        enum_column(ProductStatus), default=ProductStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_product_status_id", "status", "id"),)


class Sku(Base):
    """A sellable variant. ``code`` is what orders, imports and coupons (兑换) name."""

    __tablename__ = "sku"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    suggested_retail_price: Mapped[Decimal] = mapped_column(Numeric(14, 2))  # 建议零售价
    cost_price: Mapped[Decimal] = mapped_column(Numeric(14, 2))  # for gross margin
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_sku_product_id_id", "product_id", "id"),
        CheckConstraint("suggested_retail_price >= 0", name="srp_not_negative"),
        CheckConstraint("cost_price >= 0", name="cost_not_negative"),
    )


class PriceBand(Base):
    """The price range a SKU may sell at on one channel. ``list_price``: the channel's default
    price when an order line gives none (else the suggested retail price)."""

    __tablename__ = "price_band"

    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[SalesChannel] = mapped_column(enum_column(SalesChannel), primary_key=True)
    floor: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    ceiling: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    list_price: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))

    __table_args__ = (
        CheckConstraint("floor >= 0", name="floor_not_negative"),
        CheckConstraint("floor <= ceiling", name="floor_below_ceiling"),
    )


class SkuExclusiveChannel(Base):
    """A channel-exclusive SKU (线上专供款) may be sold only on its listed channels; a SKU with
    no rows here sells everywhere."""

    __tablename__ = "sku_exclusive_channel"

    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[SalesChannel] = mapped_column(enum_column(SalesChannel), primary_key=True)
