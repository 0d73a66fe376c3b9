"""``referralAccept``: a new customer accepts an invite; the referral is recorded and the
REGISTRATION reward paid. Who is new, the abuse limits and the lock order are in the
package's notes (``api/referrals/__init__.py``)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.keys import KeyRing
from api.auth.principal import Principal
from api.catalog.models import MARKETPLACES
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import dialect_insert
from api.errors import DomainError
from api.orders.models import COUNTED_STATUSES, Order
from api.referrals.campaigns import is_running
from api.referrals.errors import ReferralErrorCode
from api.referrals.invites import member_customer_id, normalize_invite_code
from api.referrals.models import InviteCode, Referral, ReferralCampaign, ReferralMilestone
from api.referrals.rewards import INVITER_LIMIT, RewardSettings, pay_reward
from api.text import forbidden_character

MAX_DEVICE_ID = 200


# A member is new for this long after joining: the invitee registers (becomes a member),
# then accepts the invite in the same session, usually minutes apart; a day leaves room for
# an app reopened later. Much longer, and an established member could pass as new.
NEW_MEMBER_WINDOW = timedelta(hours=24)
_DAY = timedelta(days=1)


def referral_secret(keys: KeyRing) -> bytes:
    """The HMAC key of device and phone digests: shared by every process (they all hold the
    same key ring), kept apart from signing by hashing under its own label.

    Caveat: a signing-key rotation changes it, and digests stored before then stop matching
    (a device could then register once more per running campaign). A dedicated, stable
    pepper setting would remove that; see the issue notes."""
    private = str(keys.signing_key.as_dict(private=True)["d"]).encode()
    return hmac.new(b"qudao/referral/v1", private, hashlib.sha256).digest()


def _digest(secret: bytes, kind: str, value: str) -> str:
    return hmac.new(secret, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


def _refusal(code: ReferralErrorCode, *field: str) -> DomainError:
    messages = {
        ReferralErrorCode.UNKNOWN_CODE: "No such invite code, or its campaign is not running.",
        ReferralErrorCode.SELF_INVITE: "You cannot accept your own invite.",
        ReferralErrorCode.ALREADY_REFERRED: "You have accepted an invite already.",
        ReferralErrorCode.NOT_NEW: "Invites are for new customers.",
        ReferralErrorCode.DEVICE_USED: "This device has accepted an invite in this campaign.",
        ReferralErrorCode.PHONE_USED: "This phone number has accepted an invite in this campaign.",
        ReferralErrorCode.DAILY_LIMIT: "This invite has been used as often as allowed today; "
        "try again tomorrow.",
    }
    return DomainError.one(code, messages[code], *field)


async def _lock_pair(
    session: AsyncSession, inviter_id: int, invitee_id: int
) -> tuple[Customer, Customer]:
    """Lock both customers, ascending id (the order a merge locks in), after following
    redirects; a merge that committed meanwhile may have made them one."""
    locked: dict[int, Customer] = {}
    for customer_id in sorted({inviter_id, invitee_id}):
        row = await lock_customer(session, customer_id)
        if row is None:
            raise DomainError.one(ReferralErrorCode.NOT_FOUND, "No such customer.")
        locked[customer_id] = row
    return locked[inviter_id], locked[invitee_id]


def _day_of(now: datetime) -> datetime:
    """The start of ``now``'s UTC day: the daily limit counts UTC days."""
    utc = now.astimezone(UTC)
    return datetime.combine(utc.date(), time.min, tzinfo=UTC)


async def accept(
    session: AsyncSession,
    principal: Principal,
    code: str,
    device_id: str,
    *,
    secret: bytes,
    settings: RewardSettings,
    now: datetime,
) -> Referral:
    """``referralAccept``: the member behind the token accepts an invite. Records the
    referral and pays the inviter the REGISTRATION reward (or withholds it past the
    inviter's cap, or when a coupon cannot be granted: never failing the registration).
    Bad input (REQUIRED, INVALID: too long, control characters) first; then refusals, in
    this order: UNKNOWN_CODE (also for a campaign not running: no code tells about another
    campaign), SELF_INVITE, ALREADY_REFERRED, NOT_NEW, DEVICE_USED, PHONE_USED,
    DAILY_LIMIT."""
    asked = await member_customer_id(session, principal, "accept invites")
    device = _checked_device(device_id, code)
    invite, campaign = await _running_invite(session, code, now)
    inviter_id = await resolve_customer_id(session, invite.inviter_id)
    if inviter_id is None:
        raise _refusal(ReferralErrorCode.UNKNOWN_CODE, "code")
    if inviter_id == asked:
        raise _refusal(ReferralErrorCode.SELF_INVITE, "code")
    inviter, invitee = await _lock_pair(session, inviter_id, asked)
    if inviter.id == invitee.id:
        raise _refusal(ReferralErrorCode.SELF_INVITE, "code")
    await _check_new(session, invitee, campaign, now)

    phone = await session.scalar(
        select(CustomerIdentity.value)
        .where(
            CustomerIdentity.customer_id == invitee.id,
            CustomerIdentity.kind == IdentityKind.PHONE,
        )
        .order_by(CustomerIdentity.id)
        .limit(1)
    )
    device_digest = _digest(secret, "device", device)
    phone_digest = _digest(secret, "phone", phone) if phone is not None else None
    await _check_device_and_phone(session, campaign.id, device_digest, phone_digest)
    over_cap = await _over_inviter_cap(session, inviter.id, campaign, now)

    referral = (
        await session.execute(
            dialect_insert(session)(Referral)
            .values(
                campaign_id=campaign.id,
                code=invite.code,
                inviter_id=inviter.id,
                invitee_id=invitee.id,
                device_digest=device_digest,
                phone_digest=phone_digest,
                registered_at=now,
            )
            .on_conflict_do_nothing()
            .returning(Referral)
        )
    ).scalar_one_or_none()
    if referral is None:
        # A concurrent accept won a unique constraint after our checks: answer as if it had
        # committed first (it has now: the insert waited for it).
        if await session.scalar(select(Referral.id).where(Referral.invitee_id == invitee.id)):
            raise _refusal(ReferralErrorCode.ALREADY_REFERRED)
        await _check_device_and_phone(session, campaign.id, device_digest, phone_digest)
        raise RuntimeError("a referral insert conflicted with nothing")  # pragma: no cover
    await pay_reward(
        session,
        referral,
        campaign,
        ReferralMilestone.REGISTRATION,
        withheld=INVITER_LIMIT if over_cap else None,
        settings=settings,
        now=now,
    )
    return referral


def _checked_device(device_id: str, code: str) -> str:
    """The device id, stripped; bad input (REQUIRED, INVALID) before any refusal."""
    device = (device_id or "").strip()
    if not device:
        raise DomainError.one(ReferralErrorCode.REQUIRED, "Which device is this?", "deviceId")
    if len(device) > MAX_DEVICE_ID or forbidden_character(device_id) is not None:
        raise DomainError.one(
            ReferralErrorCode.INVALID,
            f"A device id is at most {MAX_DEVICE_ID} characters, none of them control characters.",
            "deviceId",
        )
    if forbidden_character(code or "") is not None:
        raise DomainError.one(
            ReferralErrorCode.INVALID, "An invite code has no control characters.", "code"
        )
    return device


async def _running_invite(
    session: AsyncSession, code: str, now: datetime
) -> tuple[InviteCode, ReferralCampaign]:
    """The invite a code names, in a running campaign; UNKNOWN_CODE otherwise."""
    normalized = normalize_invite_code(code)
    found = None
    if normalized is not None:
        found = (
            await session.execute(
                select(InviteCode, ReferralCampaign)
                .join(ReferralCampaign, ReferralCampaign.id == InviteCode.campaign_id)
                .where(InviteCode.code == normalized)
            )
        ).first()
    if found is None or not is_running(found[1], now):
        raise _refusal(ReferralErrorCode.UNKNOWN_CODE, "code")
    return found[0], found[1]


async def _check_new(
    session: AsyncSession, invitee: Customer, campaign: ReferralCampaign, now: datetime
) -> None:
    """ALREADY_REFERRED, or NOT_NEW for a customer who has ordered, has invitees, or joined
    before the campaign (or longer than NEW_MEMBER_WINDOW ago). One statement."""
    referred, bought, invited = (
        await session.execute(
            select(
                exists().where(Referral.invitee_id == invitee.id),
                exists().where(
                    Order.customer_id == invitee.id,
                    Order.status.in_(COUNTED_STATUSES),
                    Order.channel.not_in(MARKETPLACES),
                ),
                exists().where(Referral.inviter_id == invitee.id),
            )
        )
    ).one()
    if referred:
        raise _refusal(ReferralErrorCode.ALREADY_REFERRED)
    joined = invitee.member_since
    joined_before = joined is not None and (
        joined < campaign.starts_at or joined < now - NEW_MEMBER_WINDOW
    )
    if bought or invited or joined_before:
        raise _refusal(ReferralErrorCode.NOT_NEW)


async def _over_inviter_cap(
    session: AsyncSession, inviter_id: int, campaign: ReferralCampaign, now: datetime
) -> bool:
    """DAILY_LIMIT past the inviter's registrations today; True when the inviter's rewarded
    referrals are at the campaign's cap (this one is recorded, its reward withheld)."""
    day = _day_of(now)
    today, total = (
        await session.execute(
            select(
                func.count().filter(
                    Referral.registered_at >= day, Referral.registered_at < day + _DAY
                ),
                func.count(),
            ).where(Referral.inviter_id == inviter_id, Referral.campaign_id == campaign.id)
        )
    ).one()
    if today >= campaign.max_registrations_per_day:
        raise _refusal(ReferralErrorCode.DAILY_LIMIT, "code")
    cap = campaign.max_rewarded_per_inviter
    return cap is not None and total >= cap


async def _check_device_and_phone(
    session: AsyncSession, campaign_id: int, device_digest: str, phone_digest: str | None
) -> None:
    matches = [Referral.device_digest == device_digest]
    if phone_digest is not None:
        matches.append(Referral.phone_digest == phone_digest)
    used = (
        await session.execute(
            select(Referral.device_digest, Referral.phone_digest)
            .where(Referral.campaign_id == campaign_id, or_(*matches))
            .limit(2)
        )
    ).all()
    if any(row.device_digest == device_digest for row in used):
        raise _refusal(ReferralErrorCode.DEVICE_USED, "deviceId")
    if used:
        raise _refusal(ReferralErrorCode.PHONE_USED)
