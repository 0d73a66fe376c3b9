"""Invite codes: a member's one code per campaign, and the code as typed or scanned."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.coupons import codes as coupons
from api.customers.locks import resolve_customer_id
from api.db import dialect_insert
from api.errors import DomainError
from api.referrals.campaigns import is_running
from api.referrals.errors import ReferralErrorCode
from api.referrals.models import InviteCode, ReferralCampaign

# Invite codes: the coupons' alphabet (no 0/O, 1/I/L look-alikes), 8 characters: 31**8 ≈ 2**39.
# Short enough to read out or type from a poster; a guessed code only attributes the guesser
# to a stranger (it holds no value), and accepts are rate-limited per request and per day.
INVITE_CODE_LENGTH = 8
_INVITE_INPUT = re.compile(rf"[{coupons.CODE_ALPHABET}]{{{INVITE_CODE_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class InviteResult:
    invite: InviteCode
    campaign: ReferralCampaign
    created: bool  # False: the member's code in this campaign existed already


def new_invite_code() -> str:
    return "".join(secrets.choice(coupons.CODE_ALPHABET) for _ in range(INVITE_CODE_LENGTH))


def normalize_invite_code(raw: str) -> str | None:
    """A code as typed or scanned (any case, spaces or dashes) → canonical; None when it
    cannot be a code."""
    code = re.sub(r"[\s-]", "", raw or "").upper()
    return code if _INVITE_INPUT.fullmatch(code) else None


async def member_customer_id(session: AsyncSession, principal: Principal, verb: str) -> int:
    """The live customer behind a member's token."""
    if not principal.is_member or principal.customer_id is None:
        raise DomainError.one(ReferralErrorCode.FORBIDDEN, f"Members {verb} for themselves.")
    live = await resolve_customer_id(session, principal.customer_id)
    if live is None:
        raise DomainError.one(ReferralErrorCode.NOT_FOUND, "No such customer.")
    return live


async def create_invite(
    session: AsyncSession, principal: Principal, campaign_id: int, *, now: datetime
) -> InviteResult:
    """``referralInviteCreate``: the member's code in a running campaign; a repeat (or a
    concurrent first call) returns the same code."""
    inviter = await member_customer_id(session, principal, "invite")
    campaign = await session.get(ReferralCampaign, campaign_id)
    if campaign is None:
        raise DomainError.one(ReferralErrorCode.NOT_FOUND, "No such campaign.", "campaignId")
    if not is_running(campaign, now):
        raise DomainError.one(
            ReferralErrorCode.CAMPAIGN_NOT_RUNNING,
            "Invites are made while the campaign runs.",
            "campaignId",
        )
    mine = select(InviteCode).where(
        InviteCode.campaign_id == campaign.id, InviteCode.inviter_id == inviter
    )
    existing = await session.scalar(mine)
    if existing is not None:
        return InviteResult(existing, campaign, created=False)
    # No conflict target: a code collision (≈2**-39 per pair) and a concurrent first call
    # (uq_invite_inviter) both leave the insert empty; the read-back tells which.
    for _ in range(5):
        created = (
            await session.execute(
                dialect_insert(session)(InviteCode)
                .values(
                    code=new_invite_code(),
                    campaign_id=campaign.id,
                    inviter_id=inviter,
                    created_at=now,
                )
                .on_conflict_do_nothing()
                .returning(InviteCode)
            )
        ).scalar_one_or_none()
        if created is not None:
            return InviteResult(created, campaign, created=True)
        existing = await session.scalar(mine)
        if existing is not None:
            return InviteResult(existing, campaign, created=False)
    raise RuntimeError("could not draw an unused invite code")
