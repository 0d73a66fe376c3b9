"""The referral tests work in the orders tests' shop (see tests/orders/conftest.py): partner
A's store a1, partner B's store b1, ann (a member since 30 days, recruited at a1, phone
13812341234), bob (recruited at b1), cat (no recruiter), and the ¥10-off template (直减,
1000 in stock, 5 per person; ann and bob hold one each).

Here: a campaign made through the service (registration 200 points, first order one ¥10
coupon, by default), newcomers (customers with a phone and nothing else), and the calls a
story makes, each in its own transaction at ``NOW`` unless told otherwise.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import select

from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import Database
from api.referrals import accepting
from api.referrals.campaigns import CampaignDraft, RewardDraft, create_campaign
from api.referrals.invites import create_invite
from api.referrals.models import InviteCode, Referral, ReferralCampaign, ReferralReward
from tests.orders.conftest import DAY, HQ, NOW, Policy, member, shop

__all__ = ["shop"]

SECRET = b"referral-test-secret"
SETTINGS = Policy()  # 100 points a yuan; earned points pending 7 days
STARTS = NOW - DAY
ENDS = NOW + 30 * DAY

_phones = itertools.count(13900000000)


async def make_campaign(
    db: Database, template_id: int | None = None, now: datetime = NOW, **overrides: Any
) -> int:
    """A running campaign (made at ``now``): registration pays 200 points; the first order
    one coupon of ``template_id`` (else 500 points)."""
    values: dict[str, Any] = {
        "name": "老带新",
        "starts_at": STARTS,
        "ends_at": ENDS,
        "registration_reward": RewardDraft(points=200),
        "first_order_reward": RewardDraft(template_id=template_id)
        if template_id is not None
        else RewardDraft(points=500),
    }
    values.update(overrides)
    async with db.transaction() as session:
        campaign = await create_campaign(session, HQ, CampaignDraft(**values), now=now)
    return campaign.id


async def newcomer(
    db: Database, *, phone: str | None = "next", name: str = "新朋友", **fields: Any
) -> int:
    """A customer known by a phone number only (a fresh login), not a member."""
    async with db.transaction() as session:
        customer = Customer(name=name, **fields)
        session.add(customer)
        await session.flush()
        if phone is not None:
            number = str(next(_phones)) if phone == "next" else phone
            session.add(
                CustomerIdentity(customer_id=customer.id, kind=IdentityKind.PHONE, value=number)
            )
    return customer.id


async def invite(db: Database, inviter: int, campaign_id: int, now: datetime = NOW) -> str:
    async with db.transaction() as session:
        result = await create_invite(session, member(inviter), campaign_id, now=now)
    return result.invite.code


async def accept(
    db: Database,
    invitee: int,
    code: str,
    device: str | None = None,
    now: datetime = NOW,
) -> Referral:
    """``invitee`` accepts ``code`` from their own device (``dev-<id>`` unless told)."""
    async with db.transaction() as session:
        return await accepting.accept(
            session,
            member(invitee),
            code,
            device or f"dev-{invitee}",
            secret=SECRET,
            settings=SETTINGS,
            now=now,
        )


async def referrals(db: Database) -> list[Referral]:
    async with db.read() as session:
        return list(await session.scalars(select(Referral).order_by(Referral.id)))


async def rewards(db: Database) -> list[tuple[int, str, str | None, int, str, str | None]]:
    """(referral id, milestone, kind, points, cost, withheld reason) of every reward row."""
    async with db.read() as session:
        rows = await session.scalars(
            select(ReferralReward).order_by(ReferralReward.referral_id, ReferralReward.milestone)
        )
        return [
            (
                r.referral_id,
                r.milestone.value,
                r.kind.value if r.kind else None,
                r.points,
                str(r.cost),
                r.withheld_reason,
            )
            for r in rows
        ]


async def invite_codes(db: Database) -> list[InviteCode]:
    async with db.read() as session:
        return list(await session.scalars(select(InviteCode).order_by(InviteCode.created_at)))


async def campaign_row(db: Database, campaign_id: int) -> ReferralCampaign:
    async with db.read() as session:
        return await session.get_one(ReferralCampaign, campaign_id)
