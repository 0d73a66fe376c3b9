"""The demo's growth data: touchpoints for the funnel, channel spend for CAC, a running
referral campaign with 王芳's invite, saved segments and RFM scores over the demo orders."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics import rfm_scoring
from api.analytics.spend import SpendDraft, record_channel_spend
from api.auth.principal import Principal, Role
from api.catalog.models import SalesChannel
from api.db import utcnow
from api.growth.models import TouchpointStep
from api.growth.recording import CustomerRef, TouchpointDraft, record_touchpoint
from api.referrals.campaigns import CampaignDraft, RewardDraft, create_campaign
from api.referrals.invites import create_invite
from api.segments import service as segments

# Conversion steps the demo members took before their first private-domain order:
# (customer, step, store, days ago, campaign). Registrations and orders record their own.
DEMO_TOUCHES = [
    ("王芳", TouchpointStep.QR_SCAN, "S-SH-001", 20, "PKG-2026-Q4"),
    ("王芳", TouchpointStep.WECOM_ADDED, "S-SH-001", 19, None),
    ("李娜", TouchpointStep.QR_SCAN, "S-SH-001", 15, "PKG-2026-Q4"),
    ("李娜", TouchpointStep.WECOM_ADDED, "S-SH-001", 15, None),
    ("李娜", TouchpointStep.COMMUNITY_JOINED, "S-SH-001", 12, None),
    ("张伟", TouchpointStep.WECOM_ADDED, "S-SH-002", 8, None),
]
DEMO_SEGMENTS = [
    (
        "高价值会员",
        "orders_count >= 1 AND level IN ('gold', 'platinum') AND NOT tag = 'vip_blacklist'",
    ),
    ("沉睡会员召回", "member = true AND (orders_count = 0 OR last_order_at < -90d)"),
    ("护肤兴趣·可触达", "tag = 'skincare' AND consent.marketing_messages = true"),
]


async def seed_growth(
    session: AsyncSession, seeder: Principal, stores: dict[str, int], members: dict[str, int]
) -> None:
    """Touchpoints for the funnel, channel spend for CAC, a running referral campaign with
    王芳's invite, saved segments, and RFM scores over the demo orders."""
    now = utcnow()
    for index, (name, step, store, days_ago, touch_campaign) in enumerate(DEMO_TOUCHES):
        await record_touchpoint(
            session,
            seeder,
            TouchpointDraft(
                event_id=f"seed-{index}",
                step=step,
                customer=CustomerRef(id=members[name]),
                occurred_at=now - timedelta(days=days_ago),
                source_channel="wecom" if step is TouchpointStep.WECOM_ADDED else None,
                store_id=stores[store],
                campaign_id=touch_campaign,
            ),
            now=now,
        )
    month_start = now.date().replace(day=1)
    for channel, amount in ((SalesChannel.MINI_PROGRAM, "5000"), (SalesChannel.TMALL, "20000")):
        await record_channel_spend(
            session,
            seeder,
            SpendDraft(
                channel=channel,
                period_start=month_start,
                period_end=month_start + timedelta(days=27),
                amount=Decimal(amount),
                idempotency_key=f"seed-{channel.value}",
                note="demo",
            ),
            now=now,
        )
    campaign = await create_campaign(
        session,
        seeder,
        CampaignDraft(
            name="老带新·邀请有礼",
            starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=60),
            registration_reward=RewardDraft(points=100),
            first_order_reward=RewardDraft(points=500),
            max_rewarded_per_inviter=20,
        ),
        now=now,
    )
    inviter = Principal(subject="seed", role=Role.MEMBER, customer_id=members["王芳"])
    await create_invite(session, inviter, campaign.id, now=now)
    for name, query in DEMO_SEGMENTS:
        await segments.create_segment(
            session, seeder, name=name, query=query, description=None, now=now
        )
    await rfm_scoring.score_rfm(session, now)
