"""Channel violations: 乱价 (a price outside the channel's band) and 窜货 (a partner selling or
redeeming outside its territories)."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from api.catalog.models import SalesChannel
from api.db import Base, enum_column, utcnow


class ViolationKind(enum.Enum):
    PRICE_BELOW_FLOOR = "price_below_floor"  # 乱价
    PRICE_ABOVE_CEILING = "price_above_ceiling"
    CROSS_REGION_SALE = "cross_region_sale"  # 窜货: sold outside the partner's territories
    CROSS_REGION_REDEMPTION = "cross_region_redemption"  # a coupon used outside them
    EXCLUSIVE_SKU = "exclusive_sku"  # a channel-exclusive SKU (线上专供款) sold elsewhere


class ChannelViolation(Base):
    """One detected violation. ``source_key`` (e.g. "order:12:line:1:price") is unique, so a
    replayed detection records nothing twice."""

    __tablename__ = "channel_violation"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[ViolationKind] = mapped_column(enum_column(ViolationKind))
    source_key: Mapped[str] = mapped_column(String(120), unique=True)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"))
    channel: Mapped[SalesChannel | None] = mapped_column(enum_column(SalesChannel))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("customer_order.id"))
    coupon_id: Mapped[int | None] = mapped_column(ForeignKey("coupon.id"))
    sku_id: Mapped[int | None] = mapped_column(ForeignKey("sku.id"))
    region_code: Mapped[str | None] = mapped_column(String(6))
    # The price rule and the price seen (乱价), in yuan.
    expected_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    actual_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    detail: Mapped[str] = mapped_column(String(300))
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_channel_violation_partner_id_id", "partner_id", "id"),
        Index("ix_channel_violation_kind_id", "kind", "id"),
    )
