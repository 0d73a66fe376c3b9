"""Referral / fission (裂变): campaigns, invite codes, accepted invites and their rewards.

Plain async functions over a session; no GraphQL here.

The story: HQ creates a campaign (what a registration and a first order pay the inviter, and
the limits). A member asks for their invite code in it (one per member and campaign). A new
customer accepts the code: the referral is recorded and the REGISTRATION reward is paid. When
the invitee's first private-domain order completes, the order hook records it and pays the
FIRST_ORDER reward. Rewards are points (the loyalty ledger, idempotent by source) or a coupon
granted from a template (idempotent by claim key). When that first order is undone
(refunded in full, cancelled, expired) the FIRST_ORDER points are taken back, and a later
order may become the first order (without paying again: a milestone pays once).

Who is new (may accept an invite):

* not referred before, ever (the first accepted invite wins; ``uq_referral_invitee``);
* not a member since before the campaign started (``member_since < starts_at``), nor
  since before ``NEW_MEMBER_WINDOW`` ago (registering and accepting are one session);
* no counted private-domain order (marketplace history is public-domain: the people a
  campaign wants to bring into the private domain);
* has not invited anyone who accepted (an established inviter is not a newcomer; this also
  keeps the referral graph free of cycles: an invitee never has invitees of their own yet).

Abuse limits, per campaign: one registration per invitee device and per invitee phone (HMAC
digests with a server secret, never the raw values), at most ``max_registrations_per_day``
registrations per inviter per UTC day (refused), and at most ``max_rewarded_per_inviter``
rewarded referrals per inviter: an inviter's referrals beyond that are recorded (stats stay
honest) with their rewards withheld (``inviter_limit``). A customer merge that makes the
inviter and the invitee one person withholds what is still unpaid (``self_referral``).

Concurrency: an accept locks the inviter and the invitee (customer rows, ascending id, as a
merge does), so one inviter's daily limit and cap are counted by one accept at a time, and
two people cannot invite each other at once. The unique constraints on the invitee and on
(campaign, device / phone) are the backstop: the insert is ``ON CONFLICT DO NOTHING``, and a
lost race is answered with the refusal the winner caused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from sqlalchemy import (
    Select,
    delete,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.keys import KeyRing
from api.auth.principal import Principal, Role
from api.auth.scope import restrict
from api.catalog.models import MARKETPLACES
from api.coupons import service as coupons
from api.coupons.models import CouponChannel, CouponKind, CouponOrigin, CouponTemplate
from api.coupons.models import TemplateStatus as CouponTemplateStatus
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.lookup import customers_by_id
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import update_returning
from api.errors import DomainError, Problem
from api.loyalty import service as loyalty
from api.loyalty.rules import PointsPolicy
from api.orders.models import COUNTED_STATUSES, Order, OrderStatus
from api.orders.reactions import OrderChange, OrdersChanged
from api.referrals.models import (
    InviteCode,
    Referral,
    ReferralCampaign,
    ReferralMilestone,
    ReferralReward,
    RewardKind,
)
from api.text import forbidden_character


class ReferralErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    REQUIRED = "required"
    FORBIDDEN = "forbidden"
    UNKNOWN_TEMPLATE = "unknown_template"
    TEMPLATE_UNUSABLE = "template_unusable"
    CAMPAIGN_NOT_RUNNING = "campaign_not_running"
    UNKNOWN_CODE = "unknown_code"  # no such code, or its campaign is not running
    SELF_INVITE = "self_invite"
    ALREADY_REFERRED = "already_referred"
    NOT_NEW = "not_new"
    DEVICE_USED = "device_used"
    PHONE_USED = "phone_used"
    DAILY_LIMIT = "daily_limit"


# Invite codes: the coupons' alphabet (no 0/O, 1/I/L look-alikes), 8 characters: 31**8 ≈ 2**39.
# Short enough to read out or type from a poster; a guessed code only attributes the guesser
# to a stranger (it holds no value), and accepts are rate-limited per request and per day.
INVITE_CODE_LENGTH = 8
_INVITE_INPUT = re.compile(rf"[{coupons.CODE_ALPHABET}]{{{INVITE_CODE_LENGTH}}}")
MAX_NAME = 100
MAX_DEVICE_ID = 200
# One reward is a grant, so loyalty's bound for a single grant applies (pointsAdjust's).
MAX_REWARD_POINTS = loyalty.MAX_ADJUST_POINTS
MAX_PER_DAY = 10_000
MAX_PER_INVITER = 1_000_000
MAX_TREE_DEPTH = 5
DEFAULT_TREE_DEPTH = 3
# A member sees whom they invited, not whom those friends invited in turn (strangers to them).
MEMBER_TREE_DEPTH = 1
# A tree is one list in one answer: past this many nodes (breadth first) it is cut short.
MAX_TREE_NODES = 500
SOURCE_TYPE = "referral"  # points entries: source_id "<referral id>:<milestone>"
ACTOR = "system:referrals"
# ReferralReward.withheld_reason: past the inviter's cap; the inviter and the invitee are
# one person (a customer merge made them one); the first order was undone (refunded in
# full, cancelled, expired) and its reward taken back.
INVITER_LIMIT = "inviter_limit"
SELF_REFERRAL = "self_referral"
ORDER_REFUNDED = "order_refunded"
# A member is new for this long after joining: the invitee registers (becomes a member),
# then accepts the invite in the same session, usually minutes apart; a day leaves room for
# an app reopened later. Much longer, and an established member could pass as new.
NEW_MEMBER_WINDOW = timedelta(hours=24)
_DAY = timedelta(days=1)
_CENT = Decimal("0.01")
_CURRENCY = "CNY"  # points are valued in yuan (points_per_yuan): templates must be CNY too
# Coupons a campaign grants are handed out by the system acting as HQ would (an HQ grant).
_GRANTER = Principal(ACTOR, Role.HQ_ADMIN)


class RewardSettings(Protocol):
    """What paying a reward reads of the settings (``api.settings.Settings`` is one)."""

    @property
    def points_per_yuan(self) -> int: ...

    @property
    def points_policy(self) -> PointsPolicy: ...


# --- drafts and results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RewardDraft:
    """Exactly one of points or a coupon template."""

    points: int | None = None
    template_id: int | None = None


@dataclass(frozen=True, slots=True)
class CampaignDraft:
    name: str
    starts_at: datetime
    ends_at: datetime | None
    registration_reward: RewardDraft | None = None
    first_order_reward: RewardDraft | None = None
    max_rewarded_per_inviter: int | None = None
    max_registrations_per_day: int = 20


@dataclass(frozen=True, slots=True)
class InviteResult:
    invite: InviteCode
    campaign: ReferralCampaign
    created: bool  # False: the member's code in this campaign existed already


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One invitee below the root. ``parent`` is the index of its inviter's node in the
    list (None: invited by the root)."""

    depth: int
    parent: int | None
    customer_id: int
    masked_name: str | None
    campaign_id: int
    registered_at: datetime
    first_order_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReferralTree:
    root: Customer
    depth: int
    nodes: list[TreeNode]
    truncated: bool  # more than MAX_TREE_NODES: the deepest are left out


@dataclass(slots=True)
class CampaignStats:
    invites: int = 0
    registrations: int = 0
    first_orders: int = 0
    rewards_paid: int = 0
    points_paid: int = 0
    coupons_paid: int = 0
    rewards_withheld: int = 0
    withheld_by_reason: dict[str, int] = field(default_factory=dict)
    reward_cost: Decimal = Decimal("0.00")


# --- campaigns ----------------------------------------------------------------------------


CAMPAIGN_KEYSET = (ReferralCampaign.id,)


def may_see_campaigns(principal: Principal) -> bool:
    """Campaigns are HQ's programme; members see them too (they invite through them).
    Partner, store and integration principals do not."""
    return principal.is_hq or principal.is_member


def campaigns_query(principal: Principal, *, running_at: datetime | None = None) -> Select[Any]:
    stmt = select(ReferralCampaign)
    if not may_see_campaigns(principal):
        return stmt.where(false())
    if running_at is not None:
        stmt = stmt.where(
            ReferralCampaign.starts_at <= running_at,
            or_(ReferralCampaign.ends_at.is_(None), ReferralCampaign.ends_at > running_at),
        )
    return stmt


async def campaigns_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, ReferralCampaign]:
    if not ids:
        return {}
    rows = await session.scalars(
        campaigns_query(principal).where(ReferralCampaign.id.in_(set(ids)))
    )
    return {c.id: c for c in rows}


def is_running(campaign: ReferralCampaign, now: datetime) -> bool:
    return campaign.starts_at <= now and (campaign.ends_at is None or now < campaign.ends_at)


async def _check_reward(
    session: AsyncSession,
    problems: list[Problem],
    reward: RewardDraft,
    path: str,
    starts_at: datetime,
    now: datetime,
) -> None:
    if (reward.points is None) == (reward.template_id is None):
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                "A reward is either points or a coupon template: give exactly one.",
                (path,),
            )
        )
        return
    if reward.points is not None:
        if isinstance(reward.points, bool) or not 0 < reward.points <= MAX_REWARD_POINTS:
            problems.append(
                Problem(
                    ReferralErrorCode.INVALID,
                    f"Points must be a whole number between 1 and {MAX_REWARD_POINTS}.",
                    (path, "points"),
                )
            )
        return
    where = (path, "couponTemplateId")
    template = await session.get(CouponTemplate, reward.template_id)
    if template is None:
        problems.append(
            Problem(ReferralErrorCode.UNKNOWN_TEMPLATE, "No such coupon template.", where)
        )
        return
    # Usable means a grant could succeed on the campaign's first day: the reward is handed
    # out online (in the mini-program), valued in yuan, and the template is live.
    first_day = max(now, starts_at)
    why = None
    if template.status is not CouponTemplateStatus.ACTIVE:
        why = "The coupon template is paused."
    elif template.claim_channel is CouponChannel.OFFLINE:
        why = "The coupon template is claimed offline only; rewards are granted online."
    elif template.currency != _CURRENCY:
        why = f"Reward costs are counted in {_CURRENCY}; this template is in {template.currency}."
    elif template.issued >= template.total_stock:
        why = "The coupon template is out of stock."
    elif template.claim_ends_at is not None and template.claim_ends_at <= first_day:
        why = "The coupon template's claims end before the campaign starts."
    elif template.valid_until is not None and template.valid_until <= first_day:
        why = "The coupon template expires before the campaign starts."
    if why is not None:
        problems.append(Problem(ReferralErrorCode.TEMPLATE_UNUSABLE, why, where))


def _reward_columns(reward: RewardDraft | None) -> tuple[RewardKind | None, int | None, int | None]:
    if reward is None:
        return None, None, None
    if reward.points is not None:
        return RewardKind.POINTS, reward.points, None
    return RewardKind.COUPON, None, reward.template_id


async def create_campaign(
    session: AsyncSession, principal: Principal, draft: CampaignDraft, *, now: datetime
) -> ReferralCampaign:
    """``referralCampaignCreate`` (HQ only). Every problem of the draft is reported at once."""
    if not principal.is_hq:
        raise DomainError.one(ReferralErrorCode.FORBIDDEN, "Only HQ staff create campaigns.")
    problems: list[Problem] = []
    name = (draft.name or "").strip()
    if forbidden_character(draft.name or "") is not None:
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                "A name has no control characters or broken (surrogate) characters.",
                ("name",),
            )
        )
    elif not 0 < len(name) <= MAX_NAME:
        problems.append(
            Problem(ReferralErrorCode.INVALID, f"A name is 1-{MAX_NAME} characters.", ("name",))
        )
    if draft.ends_at is not None:
        if draft.ends_at <= draft.starts_at:
            problems.append(
                Problem(ReferralErrorCode.INVALID, "A campaign ends after it starts.", ("endsAt",))
            )
        elif draft.ends_at <= now:
            problems.append(
                Problem(ReferralErrorCode.INVALID, "This campaign would be over.", ("endsAt",))
            )
    if draft.registration_reward is None and draft.first_order_reward is None:
        problems.append(
            Problem(
                ReferralErrorCode.REQUIRED,
                "A campaign rewards the registration, the first order, or both.",
                ("registrationReward",),
            )
        )
    for reward, path in (
        (draft.registration_reward, "registrationReward"),
        (draft.first_order_reward, "firstOrderReward"),
    ):
        if reward is not None:
            await _check_reward(session, problems, reward, path, draft.starts_at, now)
    cap = draft.max_rewarded_per_inviter
    if cap is not None and not 0 < cap <= MAX_PER_INVITER:
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                f"maxRewardedPerInviter is between 1 and {MAX_PER_INVITER} (or null: no cap).",
                ("maxRewardedPerInviter",),
            )
        )
    if not 0 < draft.max_registrations_per_day <= MAX_PER_DAY:
        problems.append(
            Problem(
                ReferralErrorCode.INVALID,
                f"maxRegistrationsPerDay is between 1 and {MAX_PER_DAY}.",
                ("maxRegistrationsPerDay",),
            )
        )
    if problems:
        raise DomainError(problems)
    registration = _reward_columns(draft.registration_reward)
    first_order = _reward_columns(draft.first_order_reward)
    campaign = ReferralCampaign(
        name=name,
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
        registration_reward=registration[0],
        registration_points=registration[1],
        registration_template_id=registration[2],
        first_order_reward=first_order[0],
        first_order_points=first_order[1],
        first_order_template_id=first_order[2],
        max_rewarded_per_inviter=cap,
        max_registrations_per_day=draft.max_registrations_per_day,
        created_by=principal.subject,
        created_at=now,
    )
    session.add(campaign)
    await session.flush()
    return campaign


# --- invites ------------------------------------------------------------------------------


def new_invite_code() -> str:
    return "".join(secrets.choice(coupons.CODE_ALPHABET) for _ in range(INVITE_CODE_LENGTH))


def normalize_invite_code(raw: str) -> str | None:
    """A code as typed or scanned (any case, spaces or dashes) → canonical; None when it
    cannot be a code."""
    code = re.sub(r"[\s-]", "", raw or "").upper()
    return code if _INVITE_INPUT.fullmatch(code) else None


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _own_customer(session: AsyncSession, principal: Principal, verb: str) -> int:
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
    inviter = await _own_customer(session, principal, "invite")
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
                _insert(session)(InviteCode)
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


# --- accepting an invite ------------------------------------------------------------------


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
    asked = await _own_customer(session, principal, "accept invites")
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
    invite, campaign = found
    inviter_id = await resolve_customer_id(session, invite.inviter_id)
    if inviter_id is None:
        raise _refusal(ReferralErrorCode.UNKNOWN_CODE, "code")
    if inviter_id == asked:
        raise _refusal(ReferralErrorCode.SELF_INVITE, "code")
    inviter, invitee = await _lock_pair(session, inviter_id, asked)
    if inviter.id == invitee.id:
        raise _refusal(ReferralErrorCode.SELF_INVITE, "code")

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

    day = _day_of(now)
    today, total = (
        await session.execute(
            select(
                func.count().filter(
                    Referral.registered_at >= day, Referral.registered_at < day + _DAY
                ),
                func.count(),
            ).where(Referral.inviter_id == inviter.id, Referral.campaign_id == campaign.id)
        )
    ).one()
    if today >= campaign.max_registrations_per_day:
        raise _refusal(ReferralErrorCode.DAILY_LIMIT, "code")
    cap = campaign.max_rewarded_per_inviter
    over_cap = cap is not None and total >= cap

    referral = (
        await session.execute(
            _insert(session)(Referral)
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
    await _pay(
        session,
        referral,
        campaign,
        ReferralMilestone.REGISTRATION,
        withheld=INVITER_LIMIT if over_cap else None,
        settings=settings,
        now=now,
    )
    return referral


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


# --- rewards ------------------------------------------------------------------------------


def points_cost(points: int, points_per_yuan: int) -> Decimal:
    """What points cost the brand: their cash value when spent (积分抵现)."""
    return (Decimal(points) / Decimal(points_per_yuan)).quantize(_CENT, ROUND_HALF_UP)


def coupon_cost(template: CouponTemplate) -> Decimal:
    """A coupon's cost: its fixed amount off (直减, and 满减's amount) when it has one; a
    percent-off or exchange coupon's value depends on the order, so it counts 0."""
    if template.kind in (CouponKind.FIXED_OFF, CouponKind.AMOUNT_OFF_THRESHOLD):
        return template.discount_amount or Decimal("0.00")
    return Decimal("0.00")


def _rule(
    campaign: ReferralCampaign, milestone: ReferralMilestone
) -> tuple[RewardKind | None, int | None, int | None]:
    if milestone is ReferralMilestone.REGISTRATION:
        return (
            campaign.registration_reward,
            campaign.registration_points,
            campaign.registration_template_id,
        )
    return (
        campaign.first_order_reward,
        campaign.first_order_points,
        campaign.first_order_template_id,
    )


async def _pay(
    session: AsyncSession,
    referral: Referral,
    campaign: ReferralCampaign,
    milestone: ReferralMilestone,
    *,
    withheld: str | None,
    settings: RewardSettings,
    now: datetime,
) -> None:
    """Pay (or withhold) a milestone's reward to the inviter and record it, once.

    Points go through the ledger with source ("referral", "<referral id>:<milestone>"), a
    coupon through an HQ grant with a claim key of the same: a retry adds nothing. A coupon
    that cannot be granted (out of stock, over the person's limit, paused ...) is withheld
    with the coupons domain's reason; its savepoint undoes the grant's partial writes, and
    the caller's transaction (the invitee's registration, the order) goes on.

    Nothing is paid to an inviter who is the invitee (a merge made them one person): the
    reward is withheld as SELF_REFERRAL.
    """
    kind, points, template_id = _rule(campaign, milestone)
    if kind is None:
        return
    if referral.inviter_id == referral.invitee_id:
        withheld = SELF_REFERRAL
    values: dict[str, Any] = {
        "referral_id": referral.id,
        "milestone": milestone,
        "kind": kind,
        "points": 0,
        "coupon_id": None,
        "cost": Decimal("0.00"),
        "withheld_reason": withheld,
        "created_at": now,
    }
    source_id = f"{referral.id}:{milestone.value}"
    if withheld is None and kind is RewardKind.POINTS:
        assert points is not None
        await loyalty.earn(
            session,
            referral.inviter_id,
            points,
            source_type=SOURCE_TYPE,
            source_id=source_id,
            reason=f"referral reward: {milestone.value}",
            actor=ACTOR,
            now=now,
            pending=True,
            policy=settings.points_policy,
        )
        values.update(points=points, cost=points_cost(points, settings.points_per_yuan))
    elif withheld is None:
        assert template_id is not None
        try:
            async with session.begin_nested():
                granted = await coupons.claim(
                    session,
                    _GRANTER,
                    template_id,
                    referral.inviter_id,
                    channel=CouponChannel.ONLINE,
                    claim_key=f"{SOURCE_TYPE}:{source_id}",
                    now=now,
                    origin=CouponOrigin.GRANT,
                )
        except DomainError as error:
            values["withheld_reason"] = error.problems[0].code.value
        else:
            template = await session.get_one(CouponTemplate, template_id)
            values.update(coupon_id=granted.coupon.id, cost=coupon_cost(template))
    # The primary key (referral, milestone) is the backstop: a second payment records nothing.
    await session.execute(
        _insert(session)(ReferralReward)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["referral_id", "milestone"])
    )


# --- the first order (order hook) ---------------------------------------------------------

_COMPLETING = (OrderChange.CREATED, OrderChange.COMPLETED)
_UNDOING = (OrderChange.CANCELLED, OrderChange.EXPIRED, OrderChange.REFUNDED)


@dataclass(frozen=True, slots=True)
class FirstOrderRewards:
    """The reaction to orders (api/wiring.py): an invitee's first completed private-domain
    order rewards the inviter, and undoing it takes the reward back. Imports (marketplace
    history) never make or undo a first order and cost no statement, nor does an order
    without a customer."""

    settings: RewardSettings

    async def __call__(self, session: AsyncSession, changed: OrdersChanged) -> None:
        if not changed.customer_ids:
            return
        if changed.change in _COMPLETING:
            await _first_orders(session, changed, self.settings)
        elif changed.change in _UNDOING:
            await _undone_first_orders(session, changed)


async def _first_orders(
    session: AsyncSession, changed: OrdersChanged, settings: RewardSettings
) -> None:
    """Record an invitee's first completed private-domain order and reward the inviter.

    Only orderCreate (a delivery or in-store order completes at creation) and a pickup
    complete an order. One indexed statement (the changed orders by primary key, joined to a
    not-yet-ordered referral of their customer) decides; for a first order it is followed by
    the guarded update, the campaign, the cap count and the payment (points: loyalty's
    statements; coupon: the grant's)."""
    rows = (
        await session.execute(
            select(Referral.id, Order.id, Order.completed_at)
            .join(Order, Order.customer_id == Referral.invitee_id)
            .where(
                Order.id.in_(changed.order_ids),
                Order.status == OrderStatus.COMPLETED,
                Order.channel.not_in(MARKETPLACES),
                Referral.first_order_id.is_(None),
            )
            .order_by(Order.id)
        )
    ).all()
    seen: set[int] = set()
    for referral_id, order_id, completed_at in rows:
        if referral_id in seen:
            continue
        seen.add(referral_id)
        await _record_first_order(
            session, referral_id, order_id, completed_at or changed.now, settings
        )


async def _record_first_order(
    session: AsyncSession,
    referral_id: int,
    order_id: int,
    at: datetime,
    settings: RewardSettings,
) -> None:
    claimed = await update_returning(
        session,
        update(Referral)
        .where(Referral.id == referral_id, Referral.first_order_id.is_(None))
        .values(first_order_id=order_id, first_order_at=at)
        .returning(Referral.id),
    )
    if claimed is None:
        return  # another order of the invitee was first
    referral, campaign, rewarded = (
        await session.execute(
            select(Referral, ReferralCampaign, ReferralReward.referral_id)
            .join(ReferralCampaign, ReferralCampaign.id == Referral.campaign_id)
            .outerjoin(
                ReferralReward,
                (ReferralReward.referral_id == Referral.id)
                & (ReferralReward.milestone == ReferralMilestone.FIRST_ORDER),
            )
            .where(Referral.id == referral_id)
            .execution_options(populate_existing=True)
        )
    ).one()
    # A milestone pays once: after an undone first order (or a merge that withheld it) a
    # later first order is recorded, and the reward row stays as it is.
    if campaign.first_order_reward is None or rewarded is not None:
        return
    withheld = None
    if campaign.max_rewarded_per_inviter is not None:
        # The inviter's first N referrals in the campaign are the rewarded ones (accepts
        # are serialized per inviter, so ids follow acceptance).
        earlier = await session.scalar(
            select(func.count()).where(
                Referral.inviter_id == referral.inviter_id,
                Referral.campaign_id == campaign.id,
                Referral.id < referral.id,
            )
        )
        if (earlier or 0) >= campaign.max_rewarded_per_inviter:
            withheld = INVITER_LIMIT
    await _pay(
        session,
        referral,
        campaign,
        ReferralMilestone.FIRST_ORDER,
        withheld=withheld,
        settings=settings,
        now=at,
    )


async def _undone_first_orders(session: AsyncSession, changed: OrdersChanged) -> None:
    """Take back what an undone first order paid: one refunded in full, cancelled or
    expired is no longer counted (``COUNTED_STATUSES``); a partial refund leaves it counted
    and its reward paid.

    One indexed statement when no first order is among the changed orders (nearly always):
    the referrals of the orders' customers (the unique invitee index; and customers merged
    into them: a referral the merge left with a merged invitee keeps its first order, which
    moved to the survivor) whose first order is one of them and no longer counted."""
    people = select(Customer.id).where(
        or_(
            Customer.id.in_(changed.customer_ids),
            Customer.merged_into_id.in_(changed.customer_ids),
        )
    )
    rows = (
        await session.execute(
            select(Referral.id, Referral.first_order_id)
            .join(Order, Order.id == Referral.first_order_id)
            .where(
                Referral.invitee_id.in_(people),
                Referral.first_order_id.in_(changed.order_ids),
                Order.status.not_in(COUNTED_STATUSES),
            )
            .order_by(Referral.id)
        )
    ).all()
    for referral_id, order_id in rows:
        await _undo_first_order(session, referral_id, order_id, changed.now)


async def _undo_first_order(
    session: AsyncSession, referral_id: int, order_id: int, now: datetime
) -> None:
    """Forget the first order, so that a later counted order becomes the first (recorded,
    not paid again: a milestone pays once), and take back its reward.

    Points: loyalty's reversal of the earning (a pending lot is cancelled; points spent
    already come from the inviter's other points, a shortfall as debt), and the reward row
    is marked ORDER_REFUNDED: stats count it withheld, its cost not paid. A coupon reward
    stays paid: the coupons domain has no way to void a granted coupon that is unused
    (``release`` only undoes a redemption), so it cannot be taken back."""
    cleared = await update_returning(
        session,
        update(Referral)
        .where(Referral.id == referral_id, Referral.first_order_id == order_id)
        .values(first_order_id=None, first_order_at=None)
        .returning(Referral.inviter_id),
    )
    if cleared is None:
        return  # undone meanwhile
    taken = await update_returning(
        session,
        update(ReferralReward)
        .where(
            ReferralReward.referral_id == referral_id,
            ReferralReward.milestone == ReferralMilestone.FIRST_ORDER,
            ReferralReward.kind == RewardKind.POINTS,
            ReferralReward.withheld_reason.is_(None),
        )
        .values(withheld_reason=ORDER_REFUNDED)
        .returning(ReferralReward.referral_id),
    )
    if taken is None:
        return  # nothing was paid (withheld, or no points reward), or a coupon
    await loyalty.reverse(
        session,
        source_type=SOURCE_TYPE,
        source_id=f"{referral_id}:{ReferralMilestone.FIRST_ORDER.value}",
        reason="referral reward: first order undone",
        actor=ACTOR,
        now=now,
        customer_id=cleared.inviter_id,
    )


# --- the referral tree --------------------------------------------------------------------


def mask_name(name: str | None) -> str | None:
    """王小丫 → 王**: enough for an inviter to recognise a friend, not to identify a stranger."""
    if not name:
        return None
    return name[0] + "*" * max(1, len(name) - 1)


def _visible(principal: Principal, customer_id: Any) -> Any:
    """Whether a tree node's customer is in the principal's scope. HQ sees everyone; a
    member their invitees (names masked; their customer records stay hidden by the customer
    loaders; and only one level deep, see ``MEMBER_TREE_DEPTH``); anyone else what
    ``restrict`` gives them of customers."""
    if principal.is_hq or principal.is_member:
        return true()
    return exists(
        restrict(select(Customer.id).where(Customer.id == customer_id), Customer, principal)
    )


def tree_statement(
    principal: Principal, root_id: int, depth: int, limit: int = MAX_TREE_NODES
) -> Select[Any]:
    """The ONE recursive statement: the referrals below ``root_id`` down to ``depth``
    levels, breadth first, at most ``limit`` rows. Only customers in the principal's scope
    are read, and the recursion descends only from them: a customer outside it is left out
    with everything below them (not even their number shows). A referral of oneself (a
    merge made inviter and invitee one) invited no one."""
    anchor = select(
        Referral.id.label("referral_id"),
        Referral.invitee_id.label("customer_id"),
        Referral.inviter_id.label("inviter_id"),
        literal_column("1").label("depth"),
    ).where(
        Referral.inviter_id == root_id,
        Referral.invitee_id != root_id,
        _visible(principal, Referral.invitee_id),
    )
    tree = anchor.cte("referral_tree", recursive=True)
    step = (
        select(Referral.id, Referral.invitee_id, Referral.inviter_id, tree.c.depth + 1)
        .join(tree, Referral.inviter_id == tree.c.customer_id)
        .where(
            tree.c.depth < depth,
            Referral.invitee_id != Referral.inviter_id,
            _visible(principal, Referral.invitee_id),
        )
    )
    tree = tree.union_all(step)
    return (
        select(
            tree.c.customer_id,
            tree.c.inviter_id,
            tree.c.depth,
            Referral.campaign_id,
            Referral.registered_at,
            Referral.first_order_at,
            Customer.name,
        )
        .join(Referral, Referral.id == tree.c.referral_id)
        .join(Customer, Customer.id == tree.c.customer_id)
        .order_by(tree.c.depth, Referral.registered_at, Referral.id)
        .limit(limit)
    )


async def referral_tree(
    session: AsyncSession, principal: Principal, customer_id: int, depth: int
) -> ReferralTree | None:
    """Who invited whom below a customer; None when the customer is not the principal's to
    see (a member: only themself; a partner: its recruits; HQ: anyone). A member's tree is
    at most ``MEMBER_TREE_DEPTH`` deep whatever ``depth`` asks. Two statements: the root's
    visibility, and the tree."""
    if not 0 < depth <= MAX_TREE_DEPTH:
        raise DomainError.one(
            ReferralErrorCode.INVALID, f"depth is between 1 and {MAX_TREE_DEPTH}.", "depth"
        )
    if principal.is_member:
        depth = min(depth, MEMBER_TREE_DEPTH)
    root = (await customers_by_id(session, principal, [customer_id])).get(customer_id)
    if root is None:
        return None
    index: dict[int, int] = {}
    nodes: list[TreeNode] = []
    rows = (
        await session.execute(tree_statement(principal, root.id, depth, MAX_TREE_NODES + 1))
    ).all()
    for row in rows[:MAX_TREE_NODES]:
        parent = None if row.inviter_id == root.id else index[row.inviter_id]
        index[row.customer_id] = len(nodes)
        nodes.append(
            TreeNode(
                depth=row.depth,
                parent=parent,
                customer_id=row.customer_id,
                masked_name=mask_name(row.name),
                campaign_id=row.campaign_id,
                registered_at=row.registered_at,
                first_order_at=row.first_order_at,
            )
        )
    return ReferralTree(root=root, depth=depth, nodes=nodes, truncated=len(rows) > MAX_TREE_NODES)


# --- stats --------------------------------------------------------------------------------


async def campaign_stats(
    session: AsyncSession, principal: Principal, campaign_id: int
) -> CampaignStats | None:
    """A campaign's numbers (HQ only; None for a missing campaign). Two statements."""
    if not principal.is_hq:
        raise DomainError.one(ReferralErrorCode.FORBIDDEN, "Campaign stats are HQ's.")
    counts = (
        await session.execute(
            select(
                select(func.count())
                .where(InviteCode.campaign_id == ReferralCampaign.id)
                .scalar_subquery(),
                select(func.count())
                .where(Referral.campaign_id == ReferralCampaign.id)
                .scalar_subquery(),
                select(func.count(Referral.first_order_id))
                .where(Referral.campaign_id == ReferralCampaign.id)
                .scalar_subquery(),
            ).where(ReferralCampaign.id == campaign_id)
        )
    ).first()
    if counts is None:
        return None
    stats = CampaignStats(invites=counts[0], registrations=counts[1], first_orders=counts[2])
    rewards = await session.execute(
        select(
            ReferralReward.kind,
            ReferralReward.withheld_reason,
            func.count(),
            func.coalesce(func.sum(ReferralReward.points), 0),
            func.coalesce(func.sum(ReferralReward.cost), 0),
        )
        .join(Referral, Referral.id == ReferralReward.referral_id)
        .where(Referral.campaign_id == campaign_id)
        .group_by(ReferralReward.kind, ReferralReward.withheld_reason)
    )
    for kind, reason, number, points, cost in rewards:
        if reason is not None:
            stats.rewards_withheld += number
            stats.withheld_by_reason[reason] = stats.withheld_by_reason.get(reason, 0) + number
            continue
        stats.rewards_paid += number
        stats.reward_cost += Decimal(cost)
        if kind is RewardKind.POINTS:
            stats.points_paid += int(points)
        else:
            stats.coupons_paid += number
    stats.reward_cost = stats.reward_cost.quantize(_CENT)
    stats.withheld_by_reason = dict(sorted(stats.withheld_by_reason.items()))
    return stats


# --- merges -------------------------------------------------------------------------------


class ReferralMergeStep:
    """Moves the sources' invitations (as inviter) to the target, their invite codes where
    the target has none in that campaign (other codes keep working: accepting follows the
    inviter's merge redirect), and the person's earliest referral as invitee (by
    registration: the first accepted invite wins) to the target; the others stay with the
    merged ids. Rewards stay with their referrals.

    A merge of an inviter with their invitee leaves a person who invited themself: such
    referrals pay nothing more (their unpaid milestones are recorded withheld as
    SELF_REFERRAL; what was paid before the merge stays paid)."""

    name = "referrals"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        session = plan.session
        invited = await session.scalar(
            select(func.count()).where(Referral.inviter_id.in_(plan.source_ids))
        )
        moves = []
        if invited:
            plural = "s" if invited != 1 else ""
            moves.append(MergeMove("referrals", invited, f"{invited} invited customer{plural}"))
        referred = (
            await session.scalars(
                select(Referral.invitee_id).where(
                    Referral.invitee_id.in_([plan.target_id, *plan.source_ids])
                )
            )
        ).all()
        conflicts = []
        if len(referred) > 1:
            conflicts.append(
                MergeConflict(
                    "referrals",
                    f"{len(referred)} of them accepted invites: the earliest counts for the "
                    "merged customer.",
                )
            )
        return moves, conflicts

    async def apply(self, plan: MergePlan) -> None:
        session = plan.session
        sources = plan.source_ids
        person = [plan.target_id, *sources]
        await session.execute(
            update(Referral)
            .where(Referral.inviter_id.in_(sources))
            .values(inviter_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
        invites = (
            await session.scalars(
                select(InviteCode)
                .where(InviteCode.inviter_id.in_(person))
                .order_by(InviteCode.created_at, InviteCode.code)
            )
        ).all()
        has_code = {i.campaign_id for i in invites if i.inviter_id == plan.target_id}
        for invite in invites:
            if invite.campaign_id not in has_code:
                has_code.add(invite.campaign_id)
                await session.execute(
                    update(InviteCode)
                    .where(InviteCode.code == invite.code)
                    .values(inviter_id=plan.target_id),
                    execution_options={"synchronize_session": False},
                )
        await _keep_earliest_referral(session, plan.target_id, person)
        await _withhold_self_referrals(session, plan.target_id, person, plan.now)


async def _keep_earliest_referral(session: AsyncSession, target_id: int, person: list[int]) -> None:
    """Give the target the person's earliest referral as invitee. When the target holds a
    later one, the two swap invitees: the target's goes to the merged id the earliest came
    from. The unique invitee index forbids a swap by updates (there is no free id to park
    one on), so the target's referral and its rewards are deleted and written back, ids
    and all (its rewards' points and coupons name the referral id)."""
    referred = (
        await session.execute(
            select(Referral.id, Referral.invitee_id)
            .where(Referral.invitee_id.in_(person))
            .order_by(Referral.registered_at, Referral.id)
        )
    ).all()
    if not referred or referred[0].invitee_id == target_id:
        return
    earliest = referred[0]
    held = next((r for r in referred if r.invitee_id == target_id), None)
    if held is not None:
        referral = (
            await session.execute(select(Referral.__table__).where(Referral.id == held.id))
        ).one()
        rewards = (
            await session.execute(
                select(ReferralReward.__table__).where(ReferralReward.referral_id == held.id)
            )
        ).all()
        await session.execute(
            delete(ReferralReward).where(ReferralReward.referral_id == held.id),
            execution_options={"synchronize_session": False},
        )
        await session.execute(
            delete(Referral).where(Referral.id == held.id),
            execution_options={"synchronize_session": False},
        )
    await session.execute(
        update(Referral).where(Referral.id == earliest.id).values(invitee_id=target_id),
        execution_options={"synchronize_session": False},
    )
    if held is not None:
        await session.execute(
            Referral.__table__.insert().values(
                {**referral._mapping, "invitee_id": earliest.invitee_id}
            )
        )
        if rewards:
            await session.execute(
                ReferralReward.__table__.insert().values([dict(r._mapping) for r in rewards])
            )


async def _withhold_self_referrals(
    session: AsyncSession, target_id: int, person: list[int], now: datetime
) -> None:
    """Record the unpaid milestones of the person's referrals of themself as withheld
    (SELF_REFERRAL), so that nothing pays them later and the stats show why. Themself: the
    inviter is the target (the sources' invitations have moved to it) and the invitee any
    id of the person (the merged ids of dropped referrals, and of earlier merges, too)."""
    ids = select(Customer.id).where(
        or_(Customer.id.in_(person), Customer.merged_into_id.in_(person))
    )
    found = (
        await session.execute(
            select(Referral.id, ReferralCampaign)
            .join(ReferralCampaign, ReferralCampaign.id == Referral.campaign_id)
            .where(Referral.inviter_id == target_id, Referral.invitee_id.in_(ids))
        )
    ).all()
    values = [
        {
            "referral_id": referral_id,
            "milestone": milestone,
            "kind": _rule(campaign, milestone)[0],
            "points": 0,
            "coupon_id": None,
            "cost": Decimal("0.00"),
            "withheld_reason": SELF_REFERRAL,
            "created_at": now,
        }
        for referral_id, campaign in found
        for milestone in ReferralMilestone
        if _rule(campaign, milestone)[0] is not None
    ]
    if values:
        # A milestone paid (or withheld) before keeps its row: only the unpaid are added.
        await session.execute(
            _insert(session)(ReferralReward)
            .values(values)
            .on_conflict_do_nothing(index_elements=["referral_id", "milestone"])
        )


__all__ = [
    "ACTOR",
    "CAMPAIGN_KEYSET",
    "DEFAULT_TREE_DEPTH",
    "INVITER_LIMIT",
    "MAX_TREE_DEPTH",
    "MAX_TREE_NODES",
    "MEMBER_TREE_DEPTH",
    "NEW_MEMBER_WINDOW",
    "ORDER_REFUNDED",
    "SELF_REFERRAL",
    "CampaignDraft",
    "CampaignStats",
    "InviteResult",
    "ReferralErrorCode",
    "ReferralTree",
    "RewardDraft",
    "RewardSettings",
    "TreeNode",
    "accept",
    "campaign_stats",
    "campaigns_by_id",
    "campaigns_query",
    "coupon_cost",
    "create_campaign",
    "create_invite",
    "is_running",
    "mask_name",
    "may_see_campaigns",
    "normalize_invite_code",
    "points_cost",
    "referral_secret",
    "referral_tree",
    "tree_statement",
]
