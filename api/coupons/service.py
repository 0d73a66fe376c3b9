"""Coupon rules (优惠券): templates, claims, redemption (核销), release, discounts, stats.

Plain async functions over a session; no GraphQL here. The invariants (domain.md #1) are
held by conditional writes, never by a read followed by a write:

* a template never issues beyond its stock: ``UPDATE coupon_template SET issued = issued + 1
  WHERE issued < total_stock RETURNING``;
* a person never holds more than the per-person limit: the same guard on their
  ``coupon_claim_count`` row (keyed by the surviving customer, so a merge keeps counting the
  person, not the identity);
* a coupon is redeemed at most once: ``UPDATE coupon SET status = 'redeemed' WHERE code = :c
  AND status = 'claimed' AND <valid now> AND <usable here> RETURNING``.

A failed guard raises a DomainError and the caller's transaction rolls back, so nothing is
half-written (a refused claim leaves neither a count nor a stock unit behind).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    Update,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.pii import mask_phone
from api.auth.principal import Principal, Role
from api.auth.scope import restrict
from api.conflicts.models import ViolationKind
from api.conflicts.service import outside_territory, record_violation
from api.coupons.models import (
    CancelPolicy,
    Coupon,
    CouponChannel,
    CouponClaimCount,
    CouponKind,
    CouponOrigin,
    CouponStatus,
    CouponTemplate,
    CouponTemplatePartner,
    CouponTemplateStore,
    Stacking,
    TemplateStatus,
)
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import UTCDateTime, advisory_lock, update_returning, utcnow
from api.errors import DomainError, Problem
from api.partners.models import Partner, Store
from api.partners.service import stores_query

# A coupon is seen by its holder (member token), by HQ, and by the partner (or store) that
# recruited its holder: the same people who see the customer.


class CouponErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_PARTNER = "unknown_partner"
    TEMPLATE_PAUSED = "template_paused"
    NOT_STARTED = "not_started"
    CLAIM_ENDED = "claim_ended"
    EXPIRED = "expired"
    OUT_OF_STOCK = "out_of_stock"
    LIMIT_REACHED = "limit_reached"
    WRONG_STORE = "wrong_store"
    WRONG_CHANNEL = "wrong_channel"
    ALREADY_REDEEMED = "already_redeemed"
    VOIDED = "voided"
    NOT_STACKABLE = "not_stackable"


# Codes: no 0/O, 1/I/L look-alikes, so one read aloud or typed from a receipt is unambiguous.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 16  # 31**16 ≈ 2**79: not guessable, and a collision is retried anyway
_CODE_INPUT = re.compile(rf"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
MAX_STOCK = 10**12
MAX_PER_PERSON = 1000
MAX_VALID_DAYS = 3660
MAX_CLAIM_KEY = 100
MAX_ORDER_REF = 100
MAX_SKU = 64

# Which channels a template accepts, for a claim or a use in ``channel``.
_ACCEPTS: dict[CouponChannel, tuple[CouponChannel, ...]] = {
    CouponChannel.ONLINE: (CouponChannel.ONLINE, CouponChannel.BOTH),
    CouponChannel.OFFLINE: (CouponChannel.OFFLINE, CouponChannel.BOTH),
}


# --- drafts and results --------------------------------------------------------------------


@dataclass(slots=True)
class TemplateDraft:
    name: str
    kind: CouponKind
    claim_channel: CouponChannel
    use_channel: CouponChannel
    total_stock: int
    currency: str = "CNY"
    threshold_amount: Decimal | None = None
    discount_amount: Decimal | None = None
    percent_off: int | None = None
    max_discount: Decimal | None = None
    exchange_sku: str | None = None
    claim_starts_at: datetime | None = None
    claim_ends_at: datetime | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int | None = None
    per_person_limit: int = 1
    stacking: Stacking = Stacking.EXCLUSIVE
    cancel_policy: CancelPolicy = CancelPolicy.RESTORE
    store_ids: Sequence[int] = ()
    partner_ids: Sequence[int] = ()


@dataclass(slots=True)
class TemplateFilter:
    statuses: Sequence[TemplateStatus] = ()
    kinds: Sequence[CouponKind] = ()
    # Active, inside its claim window and with stock left at ``now``.
    claimable_at: datetime | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    coupon: Coupon
    created: bool  # False: a retry with the same claim key returned the first coupon


@dataclass(frozen=True, slots=True)
class OrderLine:
    """What ``discount_for`` needs of an order line (兑换 coupons take one unit of a SKU)."""

    sku: str
    unit_price: Decimal
    quantity: int


@dataclass(slots=True)
class ReleaseResult:
    restored: list[int] = field(default_factory=list)
    voided: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TemplateStats:
    issued: int = 0  # the stock counter: coupons handed out, claimed or granted
    claimed: int = 0  # origin CLAIM
    granted: int = 0  # origin GRANT
    redeemed: int = 0
    voided: int = 0
    expired: int = 0  # still unredeemed and past its validity
    remaining: int = 0  # stock not yet issued
    claims_by_channel: dict[str, int] = field(default_factory=dict)
    redemptions_by_store: dict[int | None, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CouponCheck:
    """What a redeeming store sees before it redeems: the coupon and why it would fail."""

    coupon: Coupon
    template: CouponTemplate
    problem: CouponErrorCode | None
    holder_name: str | None
    holder_phone: str | None


# --- reads ---------------------------------------------------------------------------------


TEMPLATE_KEYSET = (CouponTemplate.id,)
COUPON_KEYSET = (Coupon.id,)


def _restriction_free(template_id: Any) -> ColumnElement[bool]:
    return and_(
        ~exists().where(CouponTemplateStore.template_id == template_id),
        ~exists().where(CouponTemplatePartner.template_id == template_id),
    )


def _usable_at(template_id: Any, store_id: Any, partner_id: Any) -> Any:
    """The template may be used at this store: it lists no stores or partners, or it lists
    the store, or the store's partner. Without a store only an unrestricted one may."""
    if store_id is None:
        return _restriction_free(template_id)
    listed: list[Any] = [
        exists().where(
            CouponTemplateStore.template_id == template_id,
            CouponTemplateStore.store_id == store_id,
        )
    ]
    if partner_id is not None:
        listed.append(
            exists().where(
                CouponTemplatePartner.template_id == template_id,
                CouponTemplatePartner.partner_id == partner_id,
            )
        )
    return or_(_restriction_free(template_id), *listed)


def _template_scope(principal: Principal) -> ColumnElement[bool] | None:
    """Which templates a principal may see (None: all). HQ sees all; members see all (they
    are offers, and a member's coupons name theirs); a partner or store principal sees those
    usable at one of its stores (a store-level one: at its store), so another partner's
    exclusive campaign, and any coupon of it, answers like a missing one."""
    if principal.is_hq or principal.is_member:
        return None
    if principal.partner_id is None:
        return false()
    own_store = [Store.partner_id == principal.partner_id]
    if principal.store_id is not None:
        own_store.append(Store.id == principal.store_id)
    return or_(
        _restriction_free(CouponTemplate.id),
        exists().where(
            CouponTemplatePartner.template_id == CouponTemplate.id,
            CouponTemplatePartner.partner_id == principal.partner_id,
        ),
        exists().where(
            CouponTemplateStore.template_id == CouponTemplate.id,
            CouponTemplateStore.store_id == Store.id,
            *own_store,
        ),
    )


def templates_query(principal: Principal, where: TemplateFilter | None = None) -> Select[Any]:
    """Templates the principal may see (see ``_template_scope``)."""
    stmt = select(CouponTemplate)
    scope = _template_scope(principal)
    if scope is not None:
        stmt = stmt.where(scope)
    if where is None:
        return stmt
    if where.statuses:
        stmt = stmt.where(CouponTemplate.status.in_(where.statuses))
    if where.kinds:
        stmt = stmt.where(CouponTemplate.kind.in_(where.kinds))
    if where.claimable_at is not None:
        at = where.claimable_at
        stmt = stmt.where(
            CouponTemplate.status == TemplateStatus.ACTIVE,
            CouponTemplate.issued < CouponTemplate.total_stock,
            or_(CouponTemplate.claim_starts_at.is_(None), CouponTemplate.claim_starts_at <= at),
            or_(CouponTemplate.claim_ends_at.is_(None), CouponTemplate.claim_ends_at > at),
            or_(CouponTemplate.valid_until.is_(None), CouponTemplate.valid_until > at),
        )
    if where.search:
        stmt = stmt.where(func.lower(CouponTemplate.name).like(f"%{_like(where.search)}%"))
    return stmt


def _like(text: str) -> str:
    return text.strip().lower().replace("\\", "").replace("%", "").replace("_", "")


def coupons_query(principal: Principal) -> Select[Any]:
    return restrict(select(Coupon), Coupon, principal)


async def templates_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, CouponTemplate]:
    if not ids:
        return {}
    rows = await session.scalars(templates_query(principal).where(CouponTemplate.id.in_(set(ids))))
    return {t.id: t for t in rows}


async def coupons_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Coupon]:
    if not ids:
        return {}
    rows = await session.scalars(coupons_query(principal).where(Coupon.id.in_(set(ids))))
    return {c.id: c for c in rows}


async def restrictions_of(
    session: AsyncSession, template_ids: Sequence[int]
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(store ids, partner ids) each template is limited to; empty lists: no limit."""
    stores: dict[int, list[int]] = {t: [] for t in template_ids}
    partners: dict[int, list[int]] = {t: [] for t in template_ids}
    if not template_ids:
        return stores, partners
    rows = await session.execute(
        select(CouponTemplateStore.template_id, CouponTemplateStore.store_id, literal("s"))
        .where(CouponTemplateStore.template_id.in_(template_ids))
        .union_all(
            select(
                CouponTemplatePartner.template_id, CouponTemplatePartner.partner_id, literal("p")
            ).where(CouponTemplatePartner.template_id.in_(template_ids))
        )
    )
    for template_id, target_id, which in sorted(rows, key=lambda r: (r[0], r[2], r[1])):
        (stores if which == "s" else partners)[template_id].append(target_id)
    return stores, partners


# --- templates -----------------------------------------------------------------------------


def _require_hq(principal: Principal, what: str) -> None:
    if not principal.is_hq:
        raise DomainError.one(CouponErrorCode.FORBIDDEN, f"Only HQ staff {what}.")


def _check_amount(
    problems: list[Problem], value: Decimal | None, name: str, path: str, *, required: bool
) -> None:
    if value is None:
        if required:
            problems.append(Problem(CouponErrorCode.REQUIRED, f"{name} is required.", (path,)))
        return
    try:
        exact = value == value.quantize(_CENT)
    except InvalidOperation:
        exact = False
    if not value.is_finite() or not exact:
        problems.append(
            Problem(CouponErrorCode.INVALID, f"{name} must be an amount in cents.", (path,))
        )
    elif not Decimal(0) < value <= MAX_AMOUNT:
        problems.append(
            Problem(CouponErrorCode.INVALID, f"{name} must be above 0 and realistic.", (path,))
        )


def _not_used(problems: list[Problem], draft: TemplateDraft, *names: tuple[str, str]) -> None:
    for attribute, path in names:
        if getattr(draft, attribute) is not None:
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    f"{path} does not apply to a {draft.kind.name} coupon.",
                    (path,),
                )
            )


def _check_kind(problems: list[Problem], draft: TemplateDraft) -> None:
    kind = draft.kind
    if kind is CouponKind.AMOUNT_OFF_THRESHOLD:  # 满减: 满 threshold 减 discount
        _check_amount(
            problems, draft.threshold_amount, "The threshold", "thresholdAmount", required=True
        )
        _check_amount(
            problems, draft.discount_amount, "The discount", "discountAmount", required=True
        )
        if (
            draft.threshold_amount is not None
            and draft.discount_amount is not None
            and not draft.threshold_amount > draft.discount_amount
        ):
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    "The threshold must be above the discount (满100减20, not 满20减100).",
                    ("thresholdAmount",),
                )
            )
        _not_used(
            problems,
            draft,
            ("percent_off", "percentOff"),
            ("max_discount", "maxDiscount"),
            ("exchange_sku", "exchangeSku"),
        )
    elif kind is CouponKind.PERCENT_OFF:  # 折扣: percent off, an optional cap and threshold
        if draft.percent_off is None:
            problems.append(
                Problem(CouponErrorCode.REQUIRED, "The percent off is required.", ("percentOff",))
            )
        elif not 1 <= draft.percent_off <= 99:
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    "The percent off is 1-99 (20 = 20% off, i.e. 8折).",
                    ("percentOff",),
                )
            )
        _check_amount(problems, draft.max_discount, "The cap", "maxDiscount", required=False)
        _check_amount(
            problems, draft.threshold_amount, "The threshold", "thresholdAmount", required=False
        )
        _not_used(
            problems, draft, ("discount_amount", "discountAmount"), ("exchange_sku", "exchangeSku")
        )
    elif kind is CouponKind.FIXED_OFF:  # 直减: a fixed amount off any order
        _check_amount(
            problems, draft.discount_amount, "The discount", "discountAmount", required=True
        )
        _not_used(
            problems,
            draft,
            ("threshold_amount", "thresholdAmount"),
            ("percent_off", "percentOff"),
            ("max_discount", "maxDiscount"),
            ("exchange_sku", "exchangeSku"),
        )
    else:  # 兑换: exchanged for one unit of a SKU
        sku = (draft.exchange_sku or "").strip()
        if not sku:
            problems.append(
                Problem(
                    CouponErrorCode.REQUIRED, "The SKU to exchange is required.", ("exchangeSku",)
                )
            )
        elif len(sku) > MAX_SKU:
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    f"A SKU is at most {MAX_SKU} characters.",
                    ("exchangeSku",),
                )
            )
        _not_used(
            problems,
            draft,
            ("threshold_amount", "thresholdAmount"),
            ("discount_amount", "discountAmount"),
            ("percent_off", "percentOff"),
            ("max_discount", "maxDiscount"),
        )


def _check_windows(problems: list[Problem], draft: TemplateDraft) -> None:
    for attribute, path in (
        ("claim_starts_at", "claimStartsAt"),
        ("claim_ends_at", "claimEndsAt"),
        ("valid_from", "validFrom"),
        ("valid_until", "validUntil"),
    ):
        value = getattr(draft, attribute)
        if value is not None and value.utcoffset() is None:
            problems.append(
                Problem(CouponErrorCode.INVALID, "Give a time with its UTC offset.", (path,))
            )
            return  # comparing naive with aware times would fail below
    fixed = draft.valid_from is not None or draft.valid_until is not None
    if fixed and draft.valid_days is not None:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "Give fixed validity dates or validDays after the claim, not both.",
                ("validDays",),
            )
        )
    elif fixed:
        if draft.valid_from is None or draft.valid_until is None:
            missing = "validFrom" if draft.valid_from is None else "validUntil"
            problems.append(
                Problem(CouponErrorCode.REQUIRED, "Fixed validity needs both dates.", (missing,))
            )
        elif not draft.valid_from < draft.valid_until:
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    "The validity must end after it starts.",
                    ("validUntil",),
                )
            )
    elif draft.valid_days is None:
        problems.append(
            Problem(
                CouponErrorCode.REQUIRED,
                "Give fixed validity dates (validFrom, validUntil) or validDays.",
                ("validDays",),
            )
        )
    elif not 1 <= draft.valid_days <= MAX_VALID_DAYS:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                f"validDays is 1-{MAX_VALID_DAYS}.",
                ("validDays",),
            )
        )
    starts, ends = draft.claim_starts_at, draft.claim_ends_at
    if starts is not None and ends is not None and not starts < ends:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "The claim window must end after it starts.",
                ("claimEndsAt",),
            )
        )
    if ends is not None and draft.valid_until is not None and ends > draft.valid_until:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "Claims cannot go on after the coupons expire.",
                ("claimEndsAt",),
            )
        )


def _check_counts(problems: list[Problem], draft: TemplateDraft) -> None:
    if not 1 <= draft.total_stock <= MAX_STOCK:
        problems.append(
            Problem(CouponErrorCode.INVALID, "The stock is at least 1.", ("totalStock",))
        )
    if not 1 <= draft.per_person_limit <= MAX_PER_PERSON:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                f"The per-person limit is 1-{MAX_PER_PERSON}.",
                ("perPersonLimit",),
            )
        )


async def _check_targets(
    session: AsyncSession, problems: list[Problem], draft: TemplateDraft
) -> tuple[list[int], list[int]]:
    store_ids = list(dict.fromkeys(draft.store_ids))
    partner_ids = list(dict.fromkeys(draft.partner_ids))
    found_stores = set(
        await session.scalars(select(Store.id).where(Store.id.in_(store_ids))) if store_ids else ()
    )
    found_partners = set(
        await session.scalars(select(Partner.id).where(Partner.id.in_(partner_ids)))
        if partner_ids
        else ()
    )
    for index, store_id in enumerate(draft.store_ids):
        if store_id not in found_stores:
            problems.append(
                Problem(CouponErrorCode.UNKNOWN_STORE, "No such store.", ("storeIds", str(index)))
            )
    for index, partner_id in enumerate(draft.partner_ids):
        if partner_id not in found_partners:
            problems.append(
                Problem(
                    CouponErrorCode.UNKNOWN_PARTNER,
                    "No such partner.",
                    ("partnerIds", str(index)),
                )
            )
    return store_ids, partner_ids


async def create_template(
    session: AsyncSession,
    principal: Principal,
    draft: TemplateDraft,
    *,
    now: datetime | None = None,
) -> CouponTemplate:
    _require_hq(principal, "create coupon templates")
    problems: list[Problem] = []
    name = draft.name.strip()
    if not name:
        problems.append(Problem(CouponErrorCode.REQUIRED, "A name is required.", ("name",)))
    elif len(name) > 100:
        problems.append(
            Problem(CouponErrorCode.INVALID, "A name is at most 100 characters.", ("name",))
        )
    if not _CURRENCY.fullmatch(draft.currency):
        problems.append(
            Problem(CouponErrorCode.INVALID, "A currency is an ISO 4217 code.", ("currency",))
        )
    _check_kind(problems, draft)
    _check_windows(problems, draft)
    _check_counts(problems, draft)
    store_ids, partner_ids = await _check_targets(session, problems, draft)
    if problems:
        raise DomainError(problems)

    template = CouponTemplate(
        name=name,
        kind=draft.kind,
        status=TemplateStatus.ACTIVE,
        currency=draft.currency,
        threshold_amount=draft.threshold_amount,
        discount_amount=draft.discount_amount,
        percent_off=draft.percent_off,
        max_discount=draft.max_discount,
        exchange_sku=draft.exchange_sku.strip() if draft.exchange_sku else None,
        claim_channel=draft.claim_channel,
        use_channel=draft.use_channel,
        claim_starts_at=draft.claim_starts_at,
        claim_ends_at=draft.claim_ends_at,
        valid_from=draft.valid_from,
        valid_until=draft.valid_until,
        valid_days=draft.valid_days,
        total_stock=draft.total_stock,
        issued=0,
        per_person_limit=draft.per_person_limit,
        stacking=draft.stacking,
        cancel_policy=draft.cancel_policy,
        created_by=principal.subject,
        created_at=now or utcnow(),
    )
    session.add(template)
    await session.flush()
    session.add_all(CouponTemplateStore(template_id=template.id, store_id=s) for s in store_ids)
    session.add_all(
        CouponTemplatePartner(template_id=template.id, partner_id=p) for p in partner_ids
    )
    await session.flush()
    return template


async def update_template(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    *,
    status: TemplateStatus | None = None,
    total_stock: int | None = None,
) -> CouponTemplate:
    """Pause or resume a template, or raise its stock. Stock is never lowered: coupons
    already issued stay issued, and lowering it under concurrent claims would race."""
    _require_hq(principal, "change coupon templates")
    template = await session.scalar(
        templates_query(principal)
        .where(CouponTemplate.id == template_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if template is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such coupon template.", "id")
    if total_stock is not None:
        if total_stock < template.total_stock:
            raise DomainError.one(
                CouponErrorCode.INVALID,
                f"Stock can only be raised (it is {template.total_stock}).",
                "totalStock",
            )
        if total_stock > MAX_STOCK:
            raise DomainError.one(
                CouponErrorCode.INVALID, "That stock is not realistic.", "totalStock"
            )
        template.total_stock = total_stock
    if status is not None:
        template.status = status
    await session.flush()
    return template


# --- claims --------------------------------------------------------------------------------


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """A code as typed or scanned (any case, spaces or dashes between groups) → canonical;
    None when it cannot be a code at all."""
    code = re.sub(r"[\s-]", "", raw).upper()
    return code if _CODE_INPUT.fullmatch(code) else None


def _claim_digest(template_id: int, customer_id: int, claim_key: str) -> str:
    # The key a client sends is scoped to its claim: two members who both send "1" must not
    # get each other's coupon, and the digest has a fixed length whatever the key's.
    raw = f"coupon-claim\x00{template_id}\x00{customer_id}\x00{claim_key}"
    return hashlib.sha256(raw.encode()).hexdigest()


async def _claimed_with_key(
    session: AsyncSession, template_id: int, person: int, claim_key: str
) -> Coupon | None:
    """The coupon an earlier claim with this key gave the person, whichever of their ids it
    was made under.

    A digest names the customer id the claim was made for, and a merge moves the coupon but
    cannot re-hash its key: a claim made for S and retried after S was merged into T must
    still find it. So every id of the person is tried: the live one and each merged into it
    (a merge re-points older redirects at the survivor, so one level covers them all).
    Another person's coupon never matches: their ids give other digests.
    """
    former = await session.scalars(select(Customer.id).where(Customer.merged_into_id == person))
    digests = [_claim_digest(template_id, c, claim_key) for c in (person, *former)]
    return await session.scalar(
        select(Coupon)
        .where(Coupon.claim_key.in_(digests), Coupon.customer_id == person)
        .order_by(Coupon.id)
        .limit(1)
    )


def _states_channel(principal: Principal) -> bool:
    """Who may say which channel they act on: HQ, and a partner-wide integration (a POS
    redeems OFFLINE, a web shop ONLINE). Everyone else's channel follows from who they are."""
    return principal.is_hq or (principal.role is Role.INTEGRATION and principal.store_id is None)


def _decide_channel(
    principal: Principal, stated: CouponChannel | None, *, at_store: bool
) -> CouponChannel:
    """The channel of a claim or a use, decided by the principal, never just by the caller:

    * a member (the mini-program) acts ONLINE; a member cannot claim OFFLINE;
    * store staff, a store's integration and partner admins act OFFLINE, at a store;
    * HQ and a partner-wide integration state it (default: OFFLINE at a store, else ONLINE);
      an OFFLINE one names a store.
    Stating a channel the principal cannot act on is refused (FORBIDDEN on ``channel``).
    """
    if stated is CouponChannel.BOTH:
        raise DomainError.one(
            CouponErrorCode.INVALID, "A claim or use happens online or offline.", "channel"
        )
    if _states_channel(principal):
        decided = stated or (CouponChannel.OFFLINE if at_store else CouponChannel.ONLINE)
        if decided is CouponChannel.OFFLINE and not at_store:
            raise DomainError.one(
                CouponErrorCode.REQUIRED, "Offline means at a store: which one?", "storeId"
            )
        return decided
    if principal.is_member:
        decided, why = CouponChannel.ONLINE, "Members act online; offline happens at a store."
    else:
        decided, why = CouponChannel.OFFLINE, "Staff act at a store's counter: offline."
    if stated is not None and stated is not decided:
        raise DomainError.one(CouponErrorCode.FORBIDDEN, why, "channel")
    return decided


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _lock_live_customer(session: AsyncSession, customer_id: int) -> int | None:
    """The surviving customer behind ``customer_id``, share-locked until commit.

    The lock makes a concurrent merge wait for this claim (and this claim wait for a running
    merge, then see its redirect), so a coupon never lands on a customer merged meanwhile.
    """
    customer = await lock_customer(session, customer_id, shared=True)
    return None if customer is None else customer.id


async def _claimer(
    session: AsyncSession, principal: Principal, customer_id: int | None, origin: CouponOrigin
) -> int:
    """Who receives the coupon: a member claims for themself; HQ grants to anyone."""
    if origin is CouponOrigin.CLAIM:
        if not principal.is_member or principal.customer_id is None:
            raise DomainError.one(
                CouponErrorCode.FORBIDDEN, "Members claim coupons for themselves."
            )
        own = await _lock_live_customer(session, principal.customer_id)
        if own is None:
            raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such customer.", "customerId")
        if customer_id is not None and customer_id != principal.customer_id:
            # Someone else's id answers like a missing one; an old (merged) id of the member
            # names the member.
            if await resolve_customer_id(session, customer_id) != own:
                raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such customer.", "customerId")
        return own
    _require_hq(principal, "grant coupons")
    if customer_id is None:
        raise DomainError.one(CouponErrorCode.REQUIRED, "Grant to which customer?", "customerId")
    live = await _lock_live_customer(session, customer_id)
    if live is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such customer.", "customerId")
    return live


def _check_claimable(template: CouponTemplate, channel: CouponChannel, now: datetime) -> None:
    if template.status is not TemplateStatus.ACTIVE:
        raise DomainError.one(
            CouponErrorCode.TEMPLATE_PAUSED, "This coupon is paused.", "templateId"
        )
    if template.claim_starts_at is not None and now < template.claim_starts_at:
        raise DomainError.one(
            CouponErrorCode.NOT_STARTED,
            f"Claims open at {template.claim_starts_at.isoformat()}.",
            "templateId",
        )
    ended = template.claim_ends_at is not None and now >= template.claim_ends_at
    if ended or (template.valid_until is not None and now >= template.valid_until):
        raise DomainError.one(CouponErrorCode.CLAIM_ENDED, "Claims have ended.", "templateId")
    if template.claim_channel not in _ACCEPTS[channel]:
        raise DomainError.one(
            CouponErrorCode.WRONG_CHANNEL,
            f"This coupon is claimed {template.claim_channel.value} only.",
            "channel",
        )


async def claim(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    customer_id: int | None,
    *,
    channel: CouponChannel | None = None,
    store_id: int | None = None,
    claim_key: str | None = None,
    now: datetime | None = None,
    origin: CouponOrigin = CouponOrigin.CLAIM,
) -> ClaimResult:
    """Give one coupon of a template to a person (a member's claim, or an HQ grant).

    The channel follows from the principal (``_decide_channel``: a member claims ONLINE, HQ
    states it); a store named (required OFFLINE) must be one where the template may be used.
    Checks run cheapest and least contended first; the template's stock row, which every
    claimer of a campaign updates, is touched last so its row lock is held briefly.
    """
    now = now or utcnow()
    if claim_key is not None and not 0 < len(claim_key) <= MAX_CLAIM_KEY:
        raise DomainError.one(
            CouponErrorCode.INVALID, f"A claim key is 1-{MAX_CLAIM_KEY} characters.", "claimKey"
        )
    person = await _claimer(session, principal, customer_id, origin)
    channel = _decide_channel(principal, channel, at_store=store_id is not None)

    digest = None
    if claim_key is not None:
        # Stored under the live person; looked up under every id of the person (a retry
        # after a merge finds the coupon claimed under the old id).
        digest = _claim_digest(template_id, person, claim_key)
        # Two concurrent retries of one claim: the second waits here, then finds the first.
        # (A merge cannot run meanwhile: _claimer share-locked the live customer.)
        await advisory_lock(session, digest)
        first = await _claimed_with_key(session, template_id, person, claim_key)
        if first is not None:
            return ClaimResult(first, created=False)

    template = await session.scalar(
        templates_query(principal).where(CouponTemplate.id == template_id)
    )
    if template is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such coupon template.", "templateId")
    usable_here = None
    if store_id is not None:
        # Whether the store exists and the template may be used there, in one statement.
        usable_here = await session.scalar(
            select(_usable_at(literal(template.id), Store.id, Store.partner_id)).where(
                Store.id == store_id
            )
        )
        if usable_here is None:
            raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such store.", "storeId")
    _check_claimable(template, channel, now)
    if usable_here is not None and not usable_here:
        # An offline campaign is claimed only where it can be used (a store-limited one at
        # its stores), and a claim through a store is attributed only to such a store.
        raise DomainError.one(
            CouponErrorCode.WRONG_STORE, "This coupon cannot be claimed at this store.", "storeId"
        )

    # The person's limit: one row per (person, template), raised only below the limit.
    await session.execute(
        _insert(session)(CouponClaimCount)
        .values(customer_id=person, template_id=template.id, claimed=0)
        .on_conflict_do_nothing(index_elements=["customer_id", "template_id"])
    )
    counted = await update_returning(
        session,
        update(CouponClaimCount)
        .where(
            CouponClaimCount.customer_id == person,
            CouponClaimCount.template_id == template.id,
            CouponClaimCount.claimed < template.per_person_limit,
        )
        .values(claimed=CouponClaimCount.claimed + 1)
        .returning(CouponClaimCount.claimed),
    )
    if counted is None:
        raise DomainError.one(
            CouponErrorCode.LIMIT_REACHED,
            f"At most {template.per_person_limit} of this coupon per person.",
            "templateId",
        )

    # The stock, last: the hot row. Status is part of the guard so a pause that committed
    # after our read still stops the claim.
    issued = await update_returning(
        session,
        update(CouponTemplate)
        .where(
            CouponTemplate.id == template.id,
            CouponTemplate.issued < CouponTemplate.total_stock,
            CouponTemplate.status == TemplateStatus.ACTIVE,
        )
        .values(issued=CouponTemplate.issued + 1)
        .returning(CouponTemplate.issued),
    )
    if issued is None:
        status = await session.scalar(
            select(CouponTemplate.status).where(CouponTemplate.id == template.id)
        )
        if status is not TemplateStatus.ACTIVE:
            raise DomainError.one(
                CouponErrorCode.TEMPLATE_PAUSED, "This coupon is paused.", "templateId"
            )
        raise DomainError.one(
            CouponErrorCode.OUT_OF_STOCK, "This coupon has run out.", "templateId"
        )

    if template.valid_days is not None:
        valid_from, valid_until = now, now + timedelta(days=template.valid_days)
    else:
        assert template.valid_from is not None and template.valid_until is not None
        valid_from, valid_until = template.valid_from, template.valid_until
    values = {
        "template_id": template.id,
        "customer_id": person,
        "status": CouponStatus.CLAIMED,
        "origin": origin,
        "claim_channel": channel.value,
        "claim_store_id": store_id,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "claimed_at": now,
        "claim_key": digest,
    }
    # A code collision (≈2**-79 per pair) is retried rather than failing the claim.
    for _ in range(5):
        coupon = (
            await session.execute(
                _insert(session)(Coupon)
                .values(code=new_code(), **values)
                .on_conflict_do_nothing(index_elements=["code"])
                .returning(Coupon)
            )
        ).scalar_one_or_none()
        if coupon is not None:
            return ClaimResult(coupon, created=True)
    raise RuntimeError("could not draw an unused coupon code")


# --- redemption (核销) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a redemption happens: a store (and its partner), within the principal's reach."""

    store_id: int
    partner_id: int | None
    region_code: str | None = None
    # The store lies outside its partner's territories (窜货): a redemption there is recorded.
    outside_territory: bool = False


async def _redeeming_store(
    session: AsyncSession, principal: Principal, store_id: int | None
) -> _Place | None:
    """The store redeeming, within the principal's reach; None for an HQ online use."""
    if principal.is_member or not principal.is_authenticated:
        raise DomainError.one(CouponErrorCode.FORBIDDEN, "Members cannot redeem coupons.")
    if store_id is None:
        store_id = principal.store_id
    if store_id is None:
        if principal.is_hq:
            return None
        raise DomainError.one(CouponErrorCode.REQUIRED, "Redeem at which store?", "storeId")
    # The scope applies: another partner's store (or, for store staff, another store) is not
    # found, exactly like a missing one. The territory check rides along in the same statement.
    found = (
        await session.execute(
            stores_query(principal)
            .with_only_columns(
                Store.id,
                Store.partner_id,
                Store.region_code,
                outside_territory(Store.partner_id, Store.region_code).label("outside"),
            )
            .where(Store.id == store_id)
        )
    ).first()
    if found is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such store.", "storeId")
    return _Place(found.id, found.partner_id, found.region_code, bool(found.outside))


@functools.cache
def _redeem_statement(
    use: CouponChannel, at_store: bool, with_partner: bool, holder: bool = False
) -> Update:
    """The guarded UPDATE of a redemption, built once per shape: every call binds values
    into the same statement (building SQL expressions costs more than running them). With
    ``holder`` the coupon must also be held by ``b_customer`` (an order's customer)."""
    now = bindparam("b_now", type_=UTCDateTime())
    store = bindparam("b_store", type_=BigInteger()) if at_store else None
    partner = bindparam("b_partner", type_=BigInteger()) if with_partner else None
    usable = exists().where(
        CouponTemplate.id == Coupon.template_id,
        CouponTemplate.use_channel.in_(_ACCEPTS[use]),
        _usable_at(CouponTemplate.id, store, partner),
    )
    guards = [
        Coupon.code == bindparam("b_code", type_=String()),
        Coupon.status == CouponStatus.CLAIMED,
        Coupon.valid_from <= now,
        Coupon.valid_until > now,
        usable,
    ]
    if holder:
        guards.append(Coupon.customer_id == bindparam("b_customer", type_=BigInteger()))
    return (
        update(Coupon)
        .where(*guards)
        .values(
            status=CouponStatus.REDEEMED,
            redeemed_at=now,
            redeemed_store_id=store,
            redeemed_by=bindparam("b_actor", type_=String()),
            redeemed_for=bindparam("b_order_ref", type_=String()),
        )
        .returning(Coupon)
    )


async def redeem(
    session: AsyncSession,
    principal: Principal,
    code: str,
    *,
    store_id: int | None = None,
    channel: CouponChannel | None = None,
    order_ref: str | None = None,
    now: datetime | None = None,
) -> Coupon:
    """Redeem a coupon exactly once: one guarded UPDATE decides, whoever races.

    The guard holds every rule (status, validity, use channel, store restrictions), so the
    happy path is two statements (the store's scope, the update); only a refusal reads the
    coupon again, to say precisely why. The channel follows from the principal (store staff
    redeem OFFLINE; see ``_decide_channel``).
    """
    now = now or utcnow()
    place = await _redeeming_store(session, principal, store_id)
    use = _decide_channel(principal, channel, at_store=place is not None)
    if order_ref is not None and not 0 < len(order_ref) <= MAX_ORDER_REF:
        raise DomainError.one(
            CouponErrorCode.INVALID, f"An order ref is 1-{MAX_ORDER_REF} characters.", "orderRef"
        )
    canonical = normalize_code(code)
    if canonical is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such coupon.", "code")
    at_store = place is not None
    with_partner = place is not None and place.partner_id is not None
    params: dict[str, Any] = {
        "b_code": canonical,
        "b_now": now,
        "b_actor": principal.subject,
        "b_order_ref": order_ref,
    }
    if place is not None:
        params["b_store"] = place.store_id
        if place.partner_id is not None:
            params["b_partner"] = place.partner_id
    # Decided by the returned row (see api.db.update_returning), never by rowcount.
    result = await session.execute(
        _redeem_statement(use, at_store, with_partner),
        params,
        execution_options={"synchronize_session": False},
    )
    row = result.first()
    if row is not None:
        if place is not None and place.outside_territory:
            await _record_cross_region(session, row[0], place, now)
        return row[0]
    found = await _explain(session, principal, canonical, place, use, now)
    assert found is not None  # the update would have succeeded
    raise DomainError.one(found[0], found[1], "code")


async def _record_cross_region(
    session: AsyncSession, coupon: Coupon, place: _Place, now: datetime
) -> None:
    """窜货: a coupon redeemed at a store outside its partner's territories. Keyed by the
    redemption (a coupon released and redeemed again is a new one)."""
    await record_violation(
        session,
        kind=ViolationKind.CROSS_REGION_REDEMPTION,
        source_key=f"coupon:{coupon.id}:redeemed:{now.isoformat()}",
        detail=f"Coupon …{coupon.code[-4:]} redeemed at a store outside its partner's "
        f"territories (region {place.region_code}).",
        now=now,
        partner_id=place.partner_id,
        store_id=place.store_id,
        coupon_id=coupon.id,
        region_code=place.region_code,
    )


async def redeem_for_order(
    session: AsyncSession,
    principal: Principal,
    codes: Sequence[str],
    *,
    customer_id: int,
    use: CouponChannel,
    store_id: int | None,
    partner_id: int | None,
    order_ref: str,
    now: datetime,
    store_region: str | None = None,
    outside_territory: bool = False,
) -> list[tuple[Coupon, CouponTemplate]]:
    """Redeem an order's coupons in the order's transaction, exactly once each.

    ``customer_id`` is the order's live customer (merges move coupons to the survivor, so the
    person's coupons are all held by that id). Each coupon is one guarded UPDATE: the redeem
    guard (claimed, valid now, usable on ``use`` at the store and partner) plus "held by the
    customer". ``store_id`` None is an online order without a store: only coupons without
    store or partner limits apply, and the redemption records no store; an order at a store
    records it. A cancel or refund gives back exactly these coupons (``release_order_coupons``).
    ``outside_territory`` (the caller's store lookup found the store, in ``store_region``,
    outside its partner's territories) records each redemption as a CROSS_REGION_REDEMPTION,
    as ``redeem`` does.

    A failure names the code (``("couponCodes", index)``): NOT_FOUND for a code that is not
    the customer's (someone else's code answers like an unknown one), otherwise why it cannot
    be used here now. The caller's transaction then rolls the earlier ones back. Returns
    (coupon, template) in the order of ``codes``.
    """
    canonical: list[str] = []
    for index, raw in enumerate(codes):
        code = normalize_code(raw)
        if code is None:
            raise DomainError.one(
                CouponErrorCode.NOT_FOUND, "No such coupon.", "couponCodes", str(index)
            )
        if code in canonical:
            raise DomainError.one(
                CouponErrorCode.INVALID, "This coupon is given twice.", "couponCodes", str(index)
            )
        canonical.append(code)
    place = (
        _Place(store_id, partner_id, store_region, outside_territory)
        if store_id is not None
        else None
    )
    with_partner = place is not None and partner_id is not None
    statement = _redeem_statement(use, place is not None, with_partner, holder=True)
    redeemed: list[Coupon] = []
    for index, code in enumerate(canonical):
        params: dict[str, Any] = {
            "b_code": code,
            "b_now": now,
            "b_actor": principal.subject,
            "b_order_ref": order_ref,
            "b_customer": customer_id,
        }
        if place is not None:
            params["b_store"] = place.store_id
            if with_partner:
                params["b_partner"] = partner_id
        row = (
            await session.execute(
                statement, params, execution_options={"synchronize_session": False}
            )
        ).first()
        if row is None:
            held = (
                await session.execute(
                    select(Coupon, CouponTemplate)
                    .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
                    .where(Coupon.code == code, Coupon.customer_id == customer_id)
                )
            ).first()
            why = (CouponErrorCode.NOT_FOUND, "No such coupon.")
            if held is not None:
                why = await _problem(session, principal, held[0], held[1], place, use, now) or (
                    CouponErrorCode.ALREADY_REDEEMED,
                    "This coupon was already redeemed.",
                )
            raise DomainError.one(why[0], why[1], "couponCodes", str(index))
        if place is not None and place.outside_territory:
            await _record_cross_region(session, row[0], place, now)
        redeemed.append(row[0])
    if not redeemed:
        return []
    templates = {
        t.id: t
        for t in await session.scalars(
            select(CouponTemplate).where(CouponTemplate.id.in_({c.template_id for c in redeemed}))
        )
    }
    return [(c, templates[c.template_id]) for c in redeemed]


def _coupon_in_reach(principal: Principal, code: str) -> Select[Any]:
    """A coupon by code with its template, if the principal could ever use it.

    A code whose template can never be used at the principal's stores (another partner's
    exclusive campaign, or for store staff another store's) is not found, exactly like an
    unknown code: nothing about it (template, holder, state, where it failed) is explained.
    """
    stmt = (
        select(Coupon, CouponTemplate)
        .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
        .where(Coupon.code == code)
    )
    scope = _template_scope(principal)
    return stmt if scope is None else stmt.where(scope)


async def _explain(
    session: AsyncSession,
    principal: Principal,
    code: str,
    place: _Place | None,
    use: CouponChannel,
    now: datetime,
) -> tuple[CouponErrorCode, str] | None:
    """Why this coupon cannot be redeemed here now; None when it can."""
    found = (await session.execute(_coupon_in_reach(principal, code))).first()
    if found is None:
        return CouponErrorCode.NOT_FOUND, "No such coupon."
    coupon, template = found
    return await _problem(session, principal, coupon, template, place, use, now)


async def _redeemed_in_reach(session: AsyncSession, principal: Principal, coupon: Coupon) -> bool:
    """The coupon was redeemed at a store the principal sees (HQ: anywhere)."""
    if principal.is_hq:
        return True
    if coupon.redeemed_store_id is None:
        return False
    found = await session.scalar(
        stores_query(principal)
        .with_only_columns(Store.id)
        .where(Store.id == coupon.redeemed_store_id)
    )
    return found is not None


async def _problem(
    session: AsyncSession,
    principal: Principal,
    coupon: Coupon,
    template: CouponTemplate,
    place: _Place | None,
    use: CouponChannel,
    now: datetime,
) -> tuple[CouponErrorCode, str] | None:
    # Only for a coupon the principal could use somewhere (``_coupon_in_reach``). Where first
    # (channel, store), then whether (status), then when (validity): a cashier at the wrong
    # store learns that before anything about the coupon's state.
    if template.use_channel not in _ACCEPTS[use]:
        return (
            CouponErrorCode.WRONG_CHANNEL,
            f"This coupon is used {template.use_channel.value} only.",
        )
    allowed = await session.scalar(
        select(
            _usable_at(
                literal(template.id),
                place.store_id if place is not None else None,
                place.partner_id if place is not None else None,
            )
        )
    )
    if not allowed:
        return CouponErrorCode.WRONG_STORE, "This coupon cannot be used at this store."
    if coupon.status is CouponStatus.REDEEMED:
        # When, only if it was used in the principal's own stores: an unrestricted coupon
        # used at another partner's store is "already redeemed", not that partner's trade.
        if coupon.redeemed_at is not None and await _redeemed_in_reach(session, principal, coupon):
            when = coupon.redeemed_at.isoformat()
            return CouponErrorCode.ALREADY_REDEEMED, f"This coupon was redeemed at {when}."
        return CouponErrorCode.ALREADY_REDEEMED, "This coupon was already redeemed."
    if coupon.status is CouponStatus.VOIDED:
        return CouponErrorCode.VOIDED, "This coupon was voided."
    if now < coupon.valid_from:
        return CouponErrorCode.NOT_STARTED, f"Valid from {coupon.valid_from.isoformat()}."
    if now >= coupon.valid_until:
        return CouponErrorCode.EXPIRED, f"Expired at {coupon.valid_until.isoformat()}."
    return None


def _mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


async def check_coupon(
    session: AsyncSession,
    principal: Principal,
    code: str,
    *,
    store_id: int | None = None,
    channel: CouponChannel | None = None,
    now: datetime | None = None,
) -> CouponCheck | None:
    """What the redeeming store sees when it scans a code: validity and whether it would
    redeem here now. The holder is shown masked (a name initial, 138****1234). None for an
    unknown code, a store out of the principal's reach, or a coupon the principal could never
    use at its stores."""
    now = now or utcnow()
    try:
        place = await _redeeming_store(session, principal, store_id)
    except DomainError as error:
        if error.problems[0].code is CouponErrorCode.NOT_FOUND:
            return None
        raise
    use = _decide_channel(principal, channel, at_store=place is not None)
    canonical = normalize_code(code)
    if canonical is None:
        return None
    # A coupon this principal could never redeem is none of its business: null, like an
    # unknown code, before any channel, store or state is looked at.
    found = (
        await session.execute(
            _coupon_in_reach(principal, canonical)
            .add_columns(Customer.name)
            .join(Customer, Customer.id == Coupon.customer_id)
        )
    ).first()
    if found is None:
        return None
    coupon, template, name = found
    problem = await _problem(session, principal, coupon, template, place, use, now)
    phone = await session.scalar(
        select(CustomerIdentity.value)
        .where(
            CustomerIdentity.customer_id == coupon.customer_id,
            CustomerIdentity.kind == IdentityKind.PHONE,
        )
        .order_by(CustomerIdentity.id)
        .limit(1)
    )
    return CouponCheck(
        coupon=coupon,
        template=template,
        problem=problem[0] if problem else None,
        holder_name=_mask_name(name),
        holder_phone=mask_phone(phone),
    )


@dataclass(frozen=True, slots=True)
class OrderScope:
    """Whose order an order reference names. References are free text, unique at best within
    one partner: "1001" at partner A and "1001" at partner B are different orders.

    ``partner_id`` None: HQ's own orders (at HQ-run stores, or online without a store).
    ``store_id``: only that store's (a store-level caller).
    """

    partner_id: int | None
    store_id: int | None = None

    @classmethod
    def of(cls, principal: Principal) -> OrderScope:
        """The orders a principal cancels: HQ its own; a partner its stores'; store staff
        their store's. Members cancel no order here."""
        if principal.is_hq:
            return cls(partner_id=None)
        if principal.is_member or principal.partner_id is None:
            raise DomainError.one(CouponErrorCode.FORBIDDEN, "Only the order's seller releases.")
        return cls(partner_id=principal.partner_id, store_id=principal.store_id)

    def redeemed_within(self) -> ColumnElement[bool]:
        if self.store_id is not None:
            return Coupon.redeemed_store_id == self.store_id
        if self.partner_id is None:
            hq_stores = select(Store.id).where(Store.partner_id.is_(None))
            return or_(Coupon.redeemed_store_id.is_(None), Coupon.redeemed_store_id.in_(hq_stores))
        own_stores = select(Store.id).where(Store.partner_id == self.partner_id)
        return Coupon.redeemed_store_id.in_(own_stores)


async def release(
    session: AsyncSession,
    scope: Principal | OrderScope,
    *,
    order_ref: str,
    now: datetime | None = None,
) -> ReleaseResult:
    """An order was cancelled: give back the coupons it used, per each template's policy.

    Only coupons redeemed for ``order_ref`` within ``scope`` (a principal: the orders it
    sells; or the order's seller, given by the orders domain) are touched, never another
    partner's coupons used on an order with the same reference.

    RESTORE puts a still-valid coupon back to CLAIMED (an expired one is voided: it could
    not be used anyway); VOID voids it. Guarded by status = REDEEMED, so running it again,
    or concurrently, changes nothing more.
    """
    now = now or utcnow()
    seller = scope if isinstance(scope, OrderScope) else OrderScope.of(scope)
    return await _release(
        session, and_(Coupon.redeemed_for == order_ref, seller.redeemed_within()), now
    )


async def release_order_coupons(
    session: AsyncSession, order_id: int, coupon_ids: Sequence[int], *, now: datetime
) -> ReleaseResult:
    """A Qudao order was cancelled, expired or refunded in full: give back exactly the
    coupons it used (``coupon_ids``, from its ``order_coupon`` rows), per each template's
    policy as ``release`` does.

    By id, not by reference: a reference is free text, and a coupon redeemed at a counter
    for a receipt that happens to read like the order's id must stay used. Each coupon must
    still be redeemed for this order (``redeemed_for`` is the order id), so one released
    once, and maybe used again since, is never touched twice.
    """
    if not coupon_ids:
        return ReleaseResult()
    ours = and_(Coupon.id.in_(coupon_ids), Coupon.redeemed_for == str(order_id))
    return await _release(session, ours, now)


async def _release(
    session: AsyncSession, ours: ColumnElement[bool], now: datetime
) -> ReleaseResult:
    """Restore (still valid, RESTORE policy) or void the REDEEMED coupons matching ``ours``."""
    restorable = select(CouponTemplate.id).where(
        CouponTemplate.cancel_policy == CancelPolicy.RESTORE
    )
    restored = await session.execute(
        update(Coupon)
        .where(
            ours,
            Coupon.status == CouponStatus.REDEEMED,
            Coupon.template_id.in_(restorable),
            Coupon.valid_until > now,
        )
        .values(
            status=CouponStatus.CLAIMED,
            redeemed_at=None,
            redeemed_store_id=None,
            redeemed_by=None,
            redeemed_for=None,
        )
        .returning(Coupon.id),
        execution_options={"synchronize_session": False},
    )
    result = ReleaseResult(restored=sorted(restored.scalars()))
    voided = await session.execute(
        update(Coupon)
        .where(ours, Coupon.status == CouponStatus.REDEEMED)
        .values(status=CouponStatus.VOIDED, voided_at=now)
        .returning(Coupon.id),
        execution_options={"synchronize_session": False},
    )
    result.voided = sorted(voided.scalars())
    return result


# --- discounts and stacking (used by orders) ------------------------------------------------


def discount_for(
    template: CouponTemplate,
    subtotal: Decimal,
    lines: Sequence[OrderLine] = (),
) -> Decimal:
    """The discount a template gives on an order of ``subtotal`` (and ``lines``), in cents.

    Zero when it does not apply (threshold not met, SKU not bought); never more than the
    subtotal, so an order never goes below zero.
    """
    if subtotal <= 0:
        return Decimal("0.00")
    kind = template.kind
    threshold = template.threshold_amount
    if threshold is not None and subtotal < threshold:
        return Decimal("0.00")
    if kind is CouponKind.AMOUNT_OFF_THRESHOLD or kind is CouponKind.FIXED_OFF:
        discount = template.discount_amount or Decimal(0)
    elif kind is CouponKind.PERCENT_OFF:
        percent = Decimal(template.percent_off or 0)
        # Half up to the cent, as a till rounds; the cap then bounds it.
        discount = (subtotal * percent / 100).quantize(_CENT, rounding=ROUND_HALF_UP)
        if template.max_discount is not None:
            discount = min(discount, template.max_discount)
    else:  # EXCHANGE: one unit of the SKU is free (the cheapest line of it, if priced apart)
        prices = [
            line.unit_price
            for line in lines
            if line.sku == template.exchange_sku and line.quantity > 0
        ]
        discount = min(prices) if prices else Decimal(0)
    return min(discount, subtotal).quantize(_CENT, rounding=ROUND_HALF_UP)


def check_stacking(templates: Sequence[CouponTemplate]) -> None:
    """Coupons used together on one order: an exclusive one stands alone, and stackable
    ones combine at most one per template. Raises NOT_STACKABLE otherwise."""
    if len(templates) <= 1:
        return
    exclusive = [t for t in templates if t.stacking is Stacking.EXCLUSIVE]
    if exclusive:
        raise DomainError.one(
            CouponErrorCode.NOT_STACKABLE,
            f"{exclusive[0].name!r} cannot be combined with other coupons.",
            "couponCodes",
        )
    repeated = [t for t, n in Counter(t.id for t in templates).items() if n > 1]
    if repeated:
        name = next(t.name for t in templates if t.id == repeated[0])
        raise DomainError.one(
            CouponErrorCode.NOT_STACKABLE,
            f"Only one {name!r} coupon per order.",
            "couponCodes",
        )


# --- stats ---------------------------------------------------------------------------------


async def template_stats(
    session: AsyncSession, template_ids: Sequence[int], *, now: datetime | None = None
) -> dict[int, TemplateStats]:
    """Stats for many templates in three statements (templates, coupon counts by state,
    claims by channel and redemptions by store)."""
    now = now or utcnow()
    ids = list(dict.fromkeys(template_ids))
    stats = {t: TemplateStats() for t in ids}
    if not ids:
        return stats
    for template_id, issued, total in await session.execute(
        select(CouponTemplate.id, CouponTemplate.issued, CouponTemplate.total_stock).where(
            CouponTemplate.id.in_(ids)
        )
    ):
        stats[template_id].issued = issued
        stats[template_id].remaining = max(0, total - issued)

    expired = and_(Coupon.status == CouponStatus.CLAIMED, Coupon.valid_until <= now)
    counts = await session.execute(
        select(
            Coupon.template_id,
            func.count().filter(Coupon.origin == CouponOrigin.CLAIM),
            func.count().filter(Coupon.origin == CouponOrigin.GRANT),
            func.count().filter(Coupon.status == CouponStatus.REDEEMED),
            func.count().filter(Coupon.status == CouponStatus.VOIDED),
            func.count().filter(expired),
        )
        .where(Coupon.template_id.in_(ids))
        .group_by(Coupon.template_id)
    )
    for template_id, claimed, granted, redeemed, voided, n_expired in counts:
        entry = stats[template_id]
        entry.claimed, entry.granted, entry.redeemed = claimed, granted, redeemed
        entry.voided, entry.expired = voided, n_expired

    # One statement for both breakdowns: ('c', channel) and ('s', store) groups.
    by_channel = (
        select(
            Coupon.template_id,
            literal("c").label("what"),
            Coupon.claim_channel.label("channel"),
            literal(None, Coupon.redeemed_store_id.type).label("store_id"),
            func.count().label("n"),
        )
        .where(Coupon.template_id.in_(ids))
        .group_by(Coupon.template_id, Coupon.claim_channel)
    )
    by_store = (
        select(
            Coupon.template_id,
            literal("s").label("what"),
            literal(None, Coupon.claim_channel.type).label("channel"),
            Coupon.redeemed_store_id,
            func.count().label("n"),
        )
        .where(Coupon.template_id.in_(ids), Coupon.status == CouponStatus.REDEEMED)
        .group_by(Coupon.template_id, Coupon.redeemed_store_id)
    )
    breakdowns: dict[int, list[tuple[str, Any, int]]] = defaultdict(list)
    for template_id, what, channel, store_id, n in await session.execute(
        by_channel.union_all(by_store)
    ):
        breakdowns[template_id].append((what, channel if what == "c" else store_id, n))
    for template_id, entries in breakdowns.items():
        entry = stats[template_id]
        for what, key, n in sorted(entries, key=lambda e: (e[0], e[1] is None, e[1] or 0)):
            if what == "c":
                entry.claims_by_channel[key] = n
            else:
                entry.redemptions_by_store[key] = n
    return stats


# --- merge ---------------------------------------------------------------------------------


class CouponMergeStep:
    """Moves the sources' coupons to the target and adds their per-template claim counts to
    the target's, so the per-person limit keeps counting the person after a merge."""

    name = "coupons"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        session = plan.session
        person = [plan.target_id, *plan.source_ids]
        rows = (
            await session.execute(
                select(Coupon.template_id, func.count())
                .where(Coupon.customer_id.in_(plan.source_ids))
                .group_by(Coupon.template_id)
            )
        ).all()
        moves: list[MergeMove] = []
        moving = sum(n for _, n in rows)
        if moving:
            moves.append(
                MergeMove(
                    "coupons",
                    moving,
                    f"{moving} coupon{'s' if moving != 1 else ''} of {len(rows)} "
                    f"template{'s' if len(rows) != 1 else ''}",
                )
            )
        conflicts: list[MergeConflict] = []
        over = await session.execute(
            select(
                CouponTemplate.name,
                CouponTemplate.per_person_limit,
                func.sum(CouponClaimCount.claimed),
            )
            .join(CouponTemplate, CouponTemplate.id == CouponClaimCount.template_id)
            .where(CouponClaimCount.customer_id.in_(person))
            .group_by(CouponTemplate.id, CouponTemplate.name, CouponTemplate.per_person_limit)
            .having(func.sum(CouponClaimCount.claimed) > CouponTemplate.per_person_limit)
            .order_by(CouponTemplate.id)
        )
        for name, limit, held in over:
            conflicts.append(
                MergeConflict(
                    "coupons",
                    f"Together they claimed {held} of {name!r} (limit {limit}): they keep "
                    "them all but cannot claim more.",
                )
            )
        return moves, conflicts

    async def apply(self, plan: MergePlan) -> None:
        session = plan.session
        sources = plan.source_ids
        await session.execute(
            update(Coupon)
            .where(Coupon.customer_id.in_(sources))
            .values(customer_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
        totals = (
            await session.execute(
                select(CouponClaimCount.template_id, func.sum(CouponClaimCount.claimed))
                .where(CouponClaimCount.customer_id.in_(sources))
                .group_by(CouponClaimCount.template_id)
                .order_by(CouponClaimCount.template_id)
            )
        ).all()
        insert = _insert(session)
        for template_id, claimed in totals:
            stmt = insert(CouponClaimCount).values(
                customer_id=plan.target_id, template_id=template_id, claimed=claimed
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["customer_id", "template_id"],
                    set_={"claimed": CouponClaimCount.claimed + stmt.excluded.claimed},
                )
            )
        await session.execute(
            delete(CouponClaimCount).where(CouponClaimCount.customer_id.in_(sources))
        )


__all__ = [
    "ClaimResult",
    "CouponCheck",
    "CouponErrorCode",
    "OrderLine",
    "OrderScope",
    "ReleaseResult",
    "TemplateDraft",
    "TemplateFilter",
    "TemplateStats",
    "check_coupon",
    "check_stacking",
    "claim",
    "create_template",
    "discount_for",
    "redeem",
    "redeem_for_order",
    "release",
    "release_order_coupons",
    "template_stats",
    "update_template",
]
