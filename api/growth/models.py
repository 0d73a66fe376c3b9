"""Touchpoints (触点): the steps a customer takes from a marketplace purchase to a repeat order
in the brand's own channels. Each is recorded once per event id and feeds the funnel."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class TouchpointStep(enum.Enum):
    """The conversion steps, in funnel order (see FUNNEL_STEPS)."""

    MARKETPLACE_PURCHASE = "marketplace_purchase"  # 公域: bought on Tmall / JD / Douyin
    QR_SCAN = "qr_scan"  # scanned the package-insert QR (包裹卡), campaign_id = the QR code id
    WECOM_ADDED = "wecom_added"  # added a guide on WeCom (企微加好友)
    COMMUNITY_JOINED = "community_joined"  # joined a community group (社群)
    MEMBER_REGISTERED = "member_registered"  # registered as a member (mini-program)
    FIRST_ORDER = "first_order"  # first private-domain order
    REPURCHASE = "repurchase"  # a later private-domain order


FUNNEL_STEPS: tuple[TouchpointStep, ...] = tuple(TouchpointStep)

# Touchpoint.recorded_scope of what Qudao records itself (orders, memberJoin) and of HQ's
# callers; a partner's is "partner:<id>", a store-bound caller's "store:<id>".
SYSTEM_SCOPE = "system"
HQ_SCOPE = "hq"


class Touchpoint(Base):
    __tablename__ = "touchpoint"
    # A retried event (same caller, same event id) is recorded once.
    __table_args__ = (
        UniqueConstraint("recorded_scope", "event_id", name="uq_touchpoint_event"),
        Index("ix_touchpoint_customer_step", "customer_id", "step", "occurred_at"),
        Index("ix_touchpoint_step_time", "step", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Whose event ids these are: "hq", "partner:<id>", or "system" for touchpoints that the
    # orders and member services record themselves.
    recorded_scope: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    step: Mapped[TouchpointStep] = mapped_column(enum_column(TouchpointStep))
    source_channel: Mapped[str | None] = mapped_column(String(32))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"), index=True)
    store_id: Mapped[int | None] = mapped_column(ForeignKey("store.id"), index=True)
    guide_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    campaign_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # A withdrawn import (an order split across batches, api/orders/importer/running.py) deletes its
    # orders: their touchpoints go with them.
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer_order.id", ondelete="CASCADE")
    )
    occurred_at: Mapped[datetime]
    recorded_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
