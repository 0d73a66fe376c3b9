"""Customers: one person across channels. Identities, profile, consents, tags, reads.

Plain async functions over a session; no GraphQL here. Membership and levels live in
``levels.py`` (re-exported below for the contract), merge and duplicate detection in
``merge.py``.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.models import (
    ConsentPurpose,
    Customer,
    CustomerConsent,
    CustomerIdentity,
    CustomerStatus,
    CustomerTag,
    IdentityKind,
    MemberLevel,
)
from api.db import advisory_lock, insert_or_get, utcnow
from api.errors import DomainError, Problem

# A partner sees the customers it recruited, a store principal its store's, a member itself.


class CustomerErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    REQUIRED = "required"
    INVALID_IDENTITY = "invalid_identity"
    IDENTITY_CONFLICT = "identity_conflict"
    ALREADY_MEMBER = "already_member"
    NOT_A_MEMBER = "not_a_member"
    MERGE_INVALID = "merge_invalid"
    DUPLICATE_CODE = "duplicate_code"
    DUPLICATE_RANK = "duplicate_rank"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_GUIDE = "unknown_guide"
    UNKNOWN_LEVEL = "unknown_level"
    FORBIDDEN = "forbidden"


class Gender(enum.Enum):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class Marketplace(enum.Enum):
    TMALL = "tmall"
    JD = "jd"
    DOUYIN = "douyin"
    PDD = "pdd"
    OTHER = "other"


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET

# Mainland mobile numbers: 11 digits, 1 then 3-9 (13x ... 19x).
_MOBILE = re.compile(r"1[3-9]\d{9}")
_PHONE_NOISE = re.compile(r"[\s\-()（）.]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# WeChat/WeCom/marketplace ids are opaque ASCII tokens.
_TOKEN = re.compile(r"[A-Za-z0-9_\-=.]{1,64}")
_APPID = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_BUYER_ID = re.compile(r"[^\s:]{1,150}")
_TAG_LIMIT = 64
MAX_TAGS_PER_CALL = 50
MAX_ATTRIBUTE_KEYS = 100
MAX_ATTRIBUTES_BYTES = 16_384
MAX_IDENTITIES_PER_CALL = 20
# Decisions per call: a handful of purposes, each decided once or a few times at most.
MAX_CONSENTS_PER_CALL = 20
# Every list in a customers filter becomes bound parameters (``tags`` one EXISTS per value):
# unbounded, one request passes PostgreSQL's 32,767 parameters or SQLite's expression depth.
MAX_FILTER_VALUES = 50
MAX_SEARCH_CHARS = 100
# A chain of redirects is at most one hop (a merge re-points customers merged into its
# sources); the bound only guards against a corrupted row.
_MAX_REDIRECTS = 8
_IDENTITY_LOCK = "customer-identity:"


# --- normalization ------------------------------------------------------------------------


class IdentityError(ValueError):
    """A value that is not a valid identity of its kind (the message says why)."""


def normalize_phone(raw: str) -> str:
    """``+86 138-0013-8000`` → ``13800138000``; IdentityError unless a mainland mobile."""
    digits = _PHONE_NOISE.sub("", raw.strip())
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
            break
    else:
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
    if not _MOBILE.fullmatch(digits):
        raise IdentityError(
            f"Not a mainland mobile number: {raw!r} (11 digits starting with 1, optional +86)."
        )
    return digits


def normalize_email(raw: str) -> str:
    value = raw.strip().lower()
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise IdentityError(f"Not an email address: {raw!r}.")
    return value


def normalize_identity(kind: IdentityKind, raw: str) -> str:
    """The canonical form of an identity value, the one stored and compared."""
    if not isinstance(raw, str) or not raw.strip():
        raise IdentityError("An identity value must not be blank.")
    value = raw.strip()
    if kind is IdentityKind.PHONE:
        return normalize_phone(value)
    if kind is IdentityKind.EMAIL:
        return normalize_email(value)
    if kind in (IdentityKind.WECHAT_UNIONID, IdentityKind.WECOM_EXTERNAL_USERID):
        if not _TOKEN.fullmatch(value):
            raise IdentityError(f"Not a {kind.value}: {raw!r} (up to 64 letters and digits).")
        return value
    if kind is IdentityKind.WECHAT_OPENID:
        appid, sep, openid = value.partition(":")
        if not sep or not _APPID.fullmatch(appid) or not _TOKEN.fullmatch(openid):
            raise IdentityError(
                f"A WeChat openid is written '<appid>:<openid>' (per app); got {raw!r}."
            )
        return f"{appid}:{openid}"
    if kind is IdentityKind.MARKETPLACE_BUYER:
        market, sep, buyer = value.partition(":")
        names = ", ".join(m.value for m in Marketplace)
        try:
            marketplace = Marketplace(market.strip().lower())
        except ValueError:
            raise IdentityError(
                f"A marketplace buyer id is written '<marketplace>:<buyer id>' with the "
                f"marketplace one of {names}; got {raw!r}."
            ) from None
        buyer = buyer.strip()
        if not sep or not _BUYER_ID.fullmatch(buyer):
            raise IdentityError(
                f"A marketplace buyer id is written '<marketplace>:<buyer id>'; got {raw!r}."
            )
        return f"{marketplace.value}:{buyer}"
    raise IdentityError(f"Unknown identity kind {kind!r}.")  # pragma: no cover


def normalize_identities(
    identities: Sequence[tuple[IdentityKind, str]], path: str = "identities"
) -> list[tuple[IdentityKind, str]]:
    """Normalized, deduplicated (first occurrence kept); DomainError listing every bad one."""
    problems: list[Problem] = []
    result: list[tuple[IdentityKind, str]] = []
    if len(identities) > MAX_IDENTITIES_PER_CALL:
        raise DomainError.one(
            CustomerErrorCode.INVALID,
            f"At most {MAX_IDENTITIES_PER_CALL} identities at once.",
            path,
        )
    for index, (kind, raw) in enumerate(identities):
        try:
            value = normalize_identity(kind, raw)
        except IdentityError as error:
            problems.append(
                Problem(CustomerErrorCode.INVALID_IDENTITY, str(error), (path, str(index), "value"))
            )
            continue
        if (kind, value) not in result:
            result.append((kind, value))
    if problems:
        raise DomainError(problems)
    return result


def _check_tags(problems: list[Problem], tags: Sequence[str], path: str) -> list[str]:
    if len(tags) > MAX_TAGS_PER_CALL:
        problems.append(
            Problem(CustomerErrorCode.INVALID, f"At most {MAX_TAGS_PER_CALL} tags.", (path,))
        )
        return []
    clean: list[str] = []
    for index, tag in enumerate(tags):
        text = tag.strip()
        if not text or len(text) > _TAG_LIMIT:
            problems.append(
                Problem(
                    CustomerErrorCode.INVALID,
                    f"A tag is 1-{_TAG_LIMIT} characters; got {tag!r}.",
                    (path, str(index)),
                )
            )
        elif text not in clean:
            clean.append(text)
    return clean


def _check_attributes(problems: list[Problem], attributes: Mapping[str, Any], path: str) -> None:
    if len(attributes) > MAX_ATTRIBUTE_KEYS:
        problems.append(
            Problem(CustomerErrorCode.INVALID, f"At most {MAX_ATTRIBUTE_KEYS} attributes.", (path,))
        )
        return
    for key in attributes:
        if not isinstance(key, str) or not key.strip() or len(key) > 64:
            problems.append(
                Problem(
                    CustomerErrorCode.INVALID,
                    f"An attribute name is 1-64 characters: {key!r}.",
                    (path,),
                )
            )
    try:
        size = len(json.dumps(attributes, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):
        problems.append(Problem(CustomerErrorCode.INVALID, "Attributes must be JSON.", (path,)))
        return
    if size > MAX_ATTRIBUTES_BYTES:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                f"Attributes are at most {MAX_ATTRIBUTES_BYTES} bytes of JSON.",
                (path,),
            )
        )


# --- drafts and results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """A decision about one purpose. ``decided_at`` defaults to now; an older decision than
    the one on file does not replace it (the latest decision wins, whatever arrives last)."""

    purpose: ConsentPurpose
    granted: bool
    source: str
    decided_at: datetime | None = None


@dataclass(slots=True)
class CustomerDraft:
    """What a channel knows about a person. ``identities`` find the customer (any of them)
    and the ones not yet on file are attached.

    Profile fields left None keep what is on file. With ``fill_only`` (imports, channel
    feeds) given fields only fill blanks, so a marketplace nickname never overwrites the
    name a member typed. ``first_channel`` is only ever set on a customer without one.
    """

    identities: Sequence[tuple[IdentityKind, str]]
    name: str | None = None
    gender: Gender | None = None
    birthday: date | None = None
    contact_phone: str | None = None
    contact_email: str | None = None
    first_channel: str | None = None
    consents: Sequence[ConsentDecision] = ()
    tags: Sequence[str] = ()
    # Merged shallowly into the customer's attributes (a given key replaces that key).
    attributes: Mapping[str, Any] | None = None
    # The WeChat unionid an openid was seen with, when it is not given as an identity.
    unionid_hint: str | None = None
    fill_only: bool = False


@dataclass(slots=True)
class UpsertResult:
    customer: Customer
    created: bool
    attached: list[tuple[IdentityKind, str]] = field(default_factory=list)


@dataclass(slots=True)
class CustomerChanges:
    """A partial update: UNSET keeps a field, None clears an optional one."""

    name: str | _Unset | None = UNSET
    gender: Gender | _Unset | None = UNSET
    birthday: date | _Unset | None = UNSET
    contact_phone: str | _Unset | None = UNSET
    contact_email: str | _Unset | None = UNSET
    tags_add: Sequence[str] = ()
    tags_remove: Sequence[str] = ()
    attributes_set: Mapping[str, Any] | None = None
    attributes_unset: Sequence[str] = ()
    consents: Sequence[ConsentDecision] = ()
    identities_add: Sequence[tuple[IdentityKind, str]] = ()
    identities_remove: Sequence[tuple[IdentityKind, str]] = ()


def _check_profile(
    problems: list[Problem],
    *,
    name: str | None,
    contact_phone: str | None,
    contact_email: str | None,
    first_channel: str | None = None,
    birthday: date | None = None,
    now: datetime,
) -> tuple[str | None, str | None]:
    """Validate profile fields; return the normalized (contact phone, contact email)."""
    if name is not None and (not name.strip() or len(name.strip()) > 100):
        problems.append(
            Problem(CustomerErrorCode.INVALID, "A name is 1-100 characters.", ("name",))
        )
    if first_channel is not None and not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", first_channel):
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                "A channel is a short lowercase word (marketplace, mini_program, store...).",
                ("firstChannel",),
            )
        )
    if birthday is not None and not date(1900, 1, 1) <= birthday <= now.date():
        problems.append(
            Problem(CustomerErrorCode.INVALID, "A birthday between 1900 and today.", ("birthday",))
        )
    phone = email = None
    if contact_phone is not None:
        try:
            phone = normalize_phone(contact_phone)
        except IdentityError as error:
            problems.append(Problem(CustomerErrorCode.INVALID, str(error), ("contactPhone",)))
    if contact_email is not None:
        try:
            email = normalize_email(contact_email)
        except IdentityError as error:
            problems.append(Problem(CustomerErrorCode.INVALID, str(error), ("contactEmail",)))
    return phone, email


def _check_consents(
    problems: list[Problem], consents: Sequence[ConsentDecision], now: datetime
) -> None:
    if len(consents) > MAX_CONSENTS_PER_CALL:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                f"At most {MAX_CONSENTS_PER_CALL} consent decisions at once.",
                ("consents",),
            )
        )
        return
    for index, consent in enumerate(consents):
        if not consent.source.strip() or len(consent.source) > 64:
            problems.append(
                Problem(
                    CustomerErrorCode.INVALID,
                    "A consent's source (where it was given) is 1-64 characters.",
                    ("consents", str(index), "source"),
                )
            )
        if consent.decided_at is not None and consent.decided_at > now:
            problems.append(
                Problem(
                    CustomerErrorCode.INVALID,
                    "A consent cannot be decided in the future.",
                    ("consents", str(index), "decidedAt"),
                )
            )


# --- reads --------------------------------------------------------------------------------


@dataclass(slots=True)
class DateTimeRange:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive


@dataclass(slots=True)
class CustomerFilter:
    identity: tuple[IdentityKind, str] | None = None
    tags: Sequence[str] = ()  # has every one
    any_tags: Sequence[str] = ()  # has at least one
    level_ids: Sequence[int] = ()
    level_codes: Sequence[str] = ()
    recruited_store_ids: Sequence[int] = ()
    recruited_guide_ids: Sequence[int] = ()
    recruited_partner_ids: Sequence[int] = ()
    is_member: bool | None = None
    created: DateTimeRange | None = None
    member_since: DateTimeRange | None = None
    search: str | None = None
    consent: tuple[ConsentPurpose, bool] | None = None


class CustomerSortKey(enum.Enum):
    ID = "id"
    CREATED_AT = "created_at"


CUSTOMER_KEYSETS = {
    CustomerSortKey.ID: (Customer.id,),
    CustomerSortKey.CREATED_AT: (Customer.created_at, Customer.id),
}


def filter_size_problems(sizes: Mapping[str, int], search: str | None) -> list[tuple[str, str]]:
    """(filter field, message) for each list longer than MAX_FILTER_VALUES and a search
    longer than MAX_SEARCH_CHARS. ``sizes`` is keyed by the GraphQL field name, so the
    schema checks its raw input with this before decoding any id."""
    found = [
        (name, f"filter.{name} takes at most {MAX_FILTER_VALUES} values; got {size}.")
        for name, size in sizes.items()
        if size > MAX_FILTER_VALUES
    ]
    if search is not None and len(search) > MAX_SEARCH_CHARS:
        found.append(
            (
                "search",
                f"filter.search is at most {MAX_SEARCH_CHARS} characters; got {len(search)}.",
            )
        )
    return found


def _filter_sizes(where: CustomerFilter) -> dict[str, int]:
    return {
        "tags": len(where.tags),
        "anyTags": len(where.any_tags),
        "levelIds": len(where.level_ids),
        "levelCodes": len(where.level_codes),
        "recruitedStoreIds": len(where.recruited_store_ids),
        "recruitedGuideIds": len(where.recruited_guide_ids),
        "recruitedPartnerIds": len(where.recruited_partner_ids),
    }


def _like(text: str) -> str:
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def customers_query(principal: Principal, where: CustomerFilter | None = None) -> Select[Any]:
    """Live (not merged) customers the principal may see, narrowed by ``where``.

    Filter values are compared in their normalized form; an invalid identity value raises
    DomainError(INVALID_IDENTITY) rather than silently matching nothing, and a list over
    MAX_FILTER_VALUES (or a search over MAX_SEARCH_CHARS) DomainError(INVALID).
    """
    stmt = restrict(
        select(Customer).where(Customer.status == CustomerStatus.ACTIVE), Customer, principal
    )
    if where is None:
        return stmt
    oversized = filter_size_problems(_filter_sizes(where), where.search)
    if oversized:
        raise DomainError(
            [
                Problem(CustomerErrorCode.INVALID, message, ("filter", name))
                for name, message in oversized
            ]
        )
    if where.identity is not None:
        kind, raw = where.identity
        try:
            value = normalize_identity(kind, raw)
        except IdentityError as error:
            raise DomainError.one(
                CustomerErrorCode.INVALID_IDENTITY, str(error), "filter", "identity", "value"
            ) from None
        stmt = stmt.where(
            exists().where(
                CustomerIdentity.customer_id == Customer.id,
                CustomerIdentity.kind == kind,
                CustomerIdentity.value == value,
            )
        )
    for tag in {t.strip() for t in where.tags}:
        stmt = stmt.where(
            exists().where(CustomerTag.customer_id == Customer.id, CustomerTag.tag == tag)
        )
    if where.any_tags:
        stmt = stmt.where(
            exists().where(
                CustomerTag.customer_id == Customer.id,
                CustomerTag.tag.in_({t.strip() for t in where.any_tags}),
            )
        )
    if where.level_ids:
        stmt = stmt.where(Customer.level_id.in_(where.level_ids))
    if where.level_codes:
        stmt = stmt.where(
            Customer.level_id.in_(
                select(MemberLevel.id).where(MemberLevel.code.in_(where.level_codes))
            )
        )
    if where.recruited_store_ids:
        stmt = stmt.where(Customer.recruited_store_id.in_(where.recruited_store_ids))
    if where.recruited_guide_ids:
        stmt = stmt.where(Customer.recruited_guide_id.in_(where.recruited_guide_ids))
    if where.recruited_partner_ids:
        stmt = stmt.where(Customer.recruited_partner_id.in_(where.recruited_partner_ids))
    if where.is_member is not None:
        stmt = stmt.where(
            Customer.member_since.is_not(None)
            if where.is_member
            else Customer.member_since.is_(None)
        )
    for column, span in (
        (Customer.created_at, where.created),
        (Customer.member_since, where.member_since),
    ):
        if span is None:
            continue
        if span.start is not None:
            stmt = stmt.where(column >= span.start)
        if span.end is not None:
            stmt = stmt.where(column < span.end)
    if where.search and where.search.strip():
        stmt = stmt.where(func.lower(Customer.name).like(_like(where.search), escape="\\"))
    if where.consent is not None:
        purpose, granted = where.consent
        decided = exists().where(
            CustomerConsent.customer_id == Customer.id,
            CustomerConsent.purpose == purpose,
            CustomerConsent.granted.is_(True),
        )
        stmt = stmt.where(decided if granted else ~decided)
    return stmt


async def customers_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Customer]:
    """Requested id → the live customer it names, following merge redirects, within the
    principal's scope. Ids that are missing or not visible are absent. One statement."""
    if not ids:
        return {}
    asked = aliased(Customer)
    stmt = (
        select(Customer, asked.id)
        .join(asked, func.coalesce(asked.merged_into_id, asked.id) == Customer.id)
        .where(asked.id.in_(set(ids)), Customer.status == CustomerStatus.ACTIVE)
    )
    rows = await session.execute(restrict(stmt, Customer, principal))
    return {asked_id: customer for customer, asked_id in rows}


async def get_customer(
    session: AsyncSession,
    principal: Principal,
    customer_id: int,
    *,
    lock: bool = False,
    path: Sequence[str] = ("customerId",),
) -> Customer:
    """The live customer behind ``customer_id`` if the principal may see it, else
    NOT_FOUND (another partner's customer answers exactly like a missing one).

    With ``lock`` the row is locked (FOR UPDATE; SQLite writers are serialized anyway),
    after following redirects under the lock: a merge that committed while we waited
    leads to its survivor rather than to a row that no longer counts.
    """
    customer: Customer | None = None
    live_id = await resolve_customer_id(session, customer_id)
    if lock and live_id is not None:
        customer = await lock_customer(session, live_id)
        live_id = customer.id if customer is not None else None
    if live_id is not None:
        visible = restrict(
            select(Customer).where(
                Customer.id == live_id, Customer.status == CustomerStatus.ACTIVE
            ),
            Customer,
            principal,
        )
        customer = await session.scalar(visible)
    if customer is None:
        raise DomainError.one(CustomerErrorCode.NOT_FOUND, "No such customer.", *path)
    return customer


async def resolve_customer_id(session: AsyncSession, customer_id: int) -> int | None:
    """The live customer an id names: itself, or where it was merged into. None if none."""
    current = customer_id
    for _ in range(_MAX_REDIRECTS):
        row = (
            await session.execute(
                select(Customer.id, Customer.merged_into_id).where(Customer.id == current)
            )
        ).first()
        if row is None:
            return None
        if row.merged_into_id is None:
            return row.id
        current = row.merged_into_id
    raise RuntimeError(f"customer {customer_id}: merge redirects form a loop")


async def identities_of(
    session: AsyncSession, customer_ids: Sequence[int]
) -> dict[int, list[CustomerIdentity]]:
    rows = await session.scalars(
        select(CustomerIdentity)
        .where(CustomerIdentity.customer_id.in_(customer_ids))
        .order_by(CustomerIdentity.customer_id, CustomerIdentity.id)
    )
    found: dict[int, list[CustomerIdentity]] = {cid: [] for cid in customer_ids}
    for row in rows:
        found[row.customer_id].append(row)
    return found


async def consents_of(
    session: AsyncSession, customer_ids: Sequence[int]
) -> dict[int, list[CustomerConsent]]:
    rows = await session.scalars(
        select(CustomerConsent)
        .where(CustomerConsent.customer_id.in_(customer_ids))
        .order_by(CustomerConsent.customer_id, CustomerConsent.purpose)
    )
    found: dict[int, list[CustomerConsent]] = {cid: [] for cid in customer_ids}
    for row in rows:
        found[row.customer_id].append(row)
    return found


async def tags_of(session: AsyncSession, customer_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = await session.execute(
        select(CustomerTag.customer_id, CustomerTag.tag)
        .where(CustomerTag.customer_id.in_(customer_ids))
        .order_by(CustomerTag.customer_id, CustomerTag.tag)
    )
    found: dict[int, list[str]] = {cid: [] for cid in customer_ids}
    for customer_id, tag in rows:
        found[customer_id].append(tag)
    return found


# --- writes -------------------------------------------------------------------------------


class _LostRace(Exception):
    """An identity appeared under another customer while we were creating ours: retry."""


def _identity_match(pairs: Sequence[tuple[IdentityKind, str]]) -> Any:
    return or_(*(and_(CustomerIdentity.kind == k, CustomerIdentity.value == v) for k, v in pairs))


async def _lock_live(session: AsyncSession, ids: set[int]) -> dict[int, Customer]:
    """Lock the customers ``ids`` name (ascending id, as a merge does) and follow merge
    redirects to the live ones: requested id → live customer, locked."""
    hop = {i: i for i in ids}  # requested id → the id it currently leads to
    locked: dict[int, Customer] = {}
    missing: set[int] = set()
    for _ in range(_MAX_REDIRECTS):
        pending = {c for c in hop.values() if c not in locked and c not in missing}
        if pending:
            rows = await session.scalars(
                select(Customer)
                .where(Customer.id.in_(pending))
                .order_by(Customer.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            for row in rows:
                locked[row.id] = row
            missing |= pending - locked.keys()
        moved = False
        for asked, current in hop.items():
            row = locked.get(current)
            if row is not None and row.merged_into_id is not None:
                hop[asked] = row.merged_into_id
                moved = True
        if not moved:
            return {
                asked: locked[current]
                for asked, current in hop.items()
                if current in locked and locked[current].status is CustomerStatus.ACTIVE
            }
    raise RuntimeError("merge redirects form a loop")


async def lock_customer(
    session: AsyncSession, customer_id: int, *, shared: bool = False
) -> Customer | None:
    """Lock the live customer behind ``customer_id`` for the rest of the transaction (a share
    lock with ``shared``); None if there is no such customer. Writers that attach data to a
    customer take this lock first, so a concurrent merge either sees their data (and moves
    it) or has already redirected them to the survivor.

    Only the live row is ever locked. A merged row is followed without a lock: a merge of
    the survivor T into U holds T and then rewrites the redirects pointing at T, so a writer
    holding an old row S while waiting for T would deadlock with it. Liveness is part of the
    locking statement, so a merge that committed while we waited makes the row drop out and
    we follow the new redirect.
    """
    current = customer_id
    for _ in range(_MAX_REDIRECTS):
        live = await session.scalar(
            select(Customer)
            .where(
                Customer.id == current,
                Customer.merged_into_id.is_(None),
                Customer.status == CustomerStatus.ACTIVE,
            )
            .with_for_update(read=shared)
            .execution_options(populate_existing=True)
        )
        if live is not None:
            return live
        redirect = await session.scalar(
            select(Customer.merged_into_id).where(Customer.id == current)
        )
        if redirect is None:
            return None
        current = redirect
    raise RuntimeError("merge redirects form a loop")


async def _owners(
    session: AsyncSession, pairs: Sequence[tuple[IdentityKind, str]]
) -> dict[tuple[IdentityKind, str], CustomerIdentity]:
    rows = await session.scalars(select(CustomerIdentity).where(_identity_match(pairs)))
    return {(r.kind, r.value): r for r in rows}


async def lock_identity_owner(
    session: AsyncSession, pair: tuple[IdentityKind, str]
) -> Customer | None:
    """The live customer who holds ``pair`` (normalized), locked; None when nobody does.

    No scope check: the caller decides what it may tell about the answer. Take
    ``lock_identities`` first so nobody attaches the identity between this and the write.
    """
    row = (await _owners(session, [pair])).get(pair)
    return None if row is None else await lock_customer(session, row.customer_id)


def _conflict(index: int, kind: IdentityKind, path: str = "identities") -> DomainError:
    return DomainError.one(
        CustomerErrorCode.IDENTITY_CONFLICT,
        f"This {kind.value} belongs to a different customer; merge the two customers first "
        "(customersMerge).",
        path,
        str(index),
        "value",
    )


async def lock_identities(session: AsyncSession, pairs: Sequence[tuple[IdentityKind, str]]) -> None:
    """Serialize writers of the same identities until this transaction ends.

    Two concurrent first contacts of one new phone would otherwise both see no customer and
    both create one. On PostgreSQL this is an advisory lock per identity (sorted, so two
    writers never wait on each other in a cycle); the statement after it gets a fresh
    snapshot (READ COMMITTED) and sees what the previous holder committed. SQLite's writers
    are serialized by BEGIN IMMEDIATE already.
    """
    for kind, value in sorted(pairs, key=lambda p: (p[0].value, p[1])):
        await advisory_lock(session, f"{_IDENTITY_LOCK}{kind.value}:{value}")


async def upsert_customer(
    session: AsyncSession,
    draft: CustomerDraft,
    *,
    actor: str | None,
    now: datetime | None = None,
) -> UpsertResult:
    """Find the customer any of ``draft.identities`` names, or create one; attach the new
    identities; apply the profile, consents, tags and attributes. Race-safe: concurrent
    upserts of the same new identity create one customer. Identities of two different
    customers → IDENTITY_CONFLICT on the field of the first one that differs."""
    now = now or utcnow()
    pairs = normalize_identities(draft.identities)
    problems: list[Problem] = []
    if not pairs:
        problems.append(
            Problem(CustomerErrorCode.REQUIRED, "Give at least one identity.", ("identities",))
        )
    phone, email = _check_profile(
        problems,
        name=draft.name,
        contact_phone=draft.contact_phone,
        contact_email=draft.contact_email,
        first_channel=draft.first_channel,
        birthday=draft.birthday,
        now=now,
    )
    tags = _check_tags(problems, draft.tags, "tags")
    if draft.attributes is not None:
        _check_attributes(problems, draft.attributes, "attributes")
    _check_consents(problems, draft.consents, now)
    hint = draft.unionid_hint
    unionids = [v for k, v in pairs if k is IdentityKind.WECHAT_UNIONID]
    if hint is None and len(unionids) == 1:
        hint = unionids[0]
    if hint is not None:
        try:
            hint = normalize_identity(IdentityKind.WECHAT_UNIONID, hint)
        except IdentityError as error:
            problems.append(
                Problem(CustomerErrorCode.INVALID_IDENTITY, str(error), ("unionidHint",))
            )
    if problems:
        raise DomainError(problems)

    await lock_identities(session, pairs)
    for _attempt in range(5):
        try:
            return await _upsert_once(session, draft, pairs, phone, email, tags, hint, actor, now)
        except _LostRace:
            continue
    raise RuntimeError("customer upsert kept losing races on its identities")


async def _upsert_once(
    session: AsyncSession,
    draft: CustomerDraft,
    pairs: list[tuple[IdentityKind, str]],
    phone: str | None,
    email: str | None,
    tags: list[str],
    hint: str | None,
    actor: str | None,
    now: datetime,
) -> UpsertResult:
    found = await _owners(session, pairs)
    owners = {row.customer_id for row in found.values()}
    live = await _lock_live(session, owners) if owners else {}
    customer: Customer | None = None
    for index, pair in enumerate(pairs):
        row = found.get(pair)
        if row is None:
            continue
        owner = live.get(row.customer_id)
        if owner is None:  # pragma: no cover - an identity's customer always exists
            raise RuntimeError(f"identity {row.id} names a missing customer")
        if customer is None:
            customer = owner
        elif owner.id != customer.id:
            raise _conflict(index, pair[0])

    created = customer is None
    if customer is None:
        # In a savepoint: should an identity turn up under another customer meanwhile, the
        # new customer is rolled back and the next round finds the one that won.
        async with session.begin_nested():
            customer = Customer(
                status=CustomerStatus.ACTIVE,
                attributes={},
                first_channel=draft.first_channel,
                created_at=now,
                updated_at=now,
            )
            session.add(customer)
            await session.flush()
            attached = await _attach(session, customer, pairs, {}, hint, now, creating=True)
    else:
        attached = await _attach(session, customer, pairs, found, hint, now, creating=False)

    _apply_profile(customer, draft, phone, email, now)
    await _apply_consents(session, customer.id, draft.consents, now)
    await _add_tags(session, customer.id, tags, now)
    if draft.attributes:
        customer.attributes = {**(customer.attributes or {}), **draft.attributes}
    await session.flush()
    return UpsertResult(customer=customer, created=created, attached=attached)


async def _attach(
    session: AsyncSession,
    customer: Customer,
    pairs: Sequence[tuple[IdentityKind, str]],
    found: Mapping[tuple[IdentityKind, str], CustomerIdentity],
    hint: str | None,
    now: datetime,
    *,
    creating: bool,
    path: str = "identities",
) -> list[tuple[IdentityKind, str]]:
    """Attach the identities not on file yet; return those attached."""
    attached = []
    for index, (kind, value) in enumerate(pairs):
        existing = found.get((kind, value))
        if existing is not None:
            if kind is IdentityKind.WECHAT_OPENID and hint and existing.unionid_hint != hint:
                existing.unionid_hint = hint
            continue
        row, created = await insert_or_get(
            session,
            CustomerIdentity,
            {
                "customer_id": customer.id,
                "kind": kind,
                "value": value,
                "unionid_hint": hint if kind is IdentityKind.WECHAT_OPENID else None,
                "created_at": now,
            },
            ["kind", "value"],
        )
        if created:
            attached.append((kind, value))
            continue
        # It appeared since we looked, written by someone who did not take the identity lock.
        if creating:
            raise _LostRace
        if await resolve_customer_id(session, row.customer_id) != customer.id:
            raise _conflict(index, kind, path)
    return attached


def _apply_profile(
    customer: Customer,
    draft: CustomerDraft,
    phone: str | None,
    email: str | None,
    now: datetime,
) -> None:
    values = {
        "name": draft.name.strip() if draft.name else None,
        "gender": draft.gender.value if draft.gender else None,
        "birthday": draft.birthday,
        "contact_phone": phone,
        "contact_email": email,
    }
    changed = False
    for name, value in values.items():
        if value is None:
            continue
        if draft.fill_only and getattr(customer, name) is not None:
            continue
        if getattr(customer, name) != value:
            setattr(customer, name, value)
            changed = True
    if draft.first_channel and customer.first_channel is None:
        customer.first_channel = draft.first_channel
        changed = True
    if changed:
        customer.updated_at = now


async def _apply_consents(
    session: AsyncSession, customer_id: int, consents: Sequence[ConsentDecision], now: datetime
) -> None:
    if not consents:
        return
    current = {
        c.purpose: c
        for c in await session.scalars(
            select(CustomerConsent).where(CustomerConsent.customer_id == customer_id)
        )
    }
    for decision in consents:
        decided_at = decision.decided_at or now
        row = current.get(decision.purpose)
        if row is None:
            row = CustomerConsent(
                customer_id=customer_id,
                purpose=decision.purpose,
                granted=decision.granted,
                source=decision.source.strip(),
                decided_at=decided_at,
            )
            session.add(row)
            current[decision.purpose] = row
        elif decided_at >= row.decided_at:
            row.granted = decision.granted
            row.source = decision.source.strip()
            row.decided_at = decided_at


async def _add_tags(
    session: AsyncSession, customer_id: int, tags: Sequence[str], now: datetime
) -> None:
    if not tags:
        return
    have = set(
        await session.scalars(
            select(CustomerTag.tag).where(
                CustomerTag.customer_id == customer_id, CustomerTag.tag.in_(tags)
            )
        )
    )
    session.add_all(
        CustomerTag(customer_id=customer_id, tag=t, created_at=now) for t in tags if t not in have
    )


def require_hq(principal: Principal, what: str = "manage customer master data") -> None:
    if not principal.is_hq:
        raise DomainError.one(CustomerErrorCode.FORBIDDEN, f"Only HQ staff {what}.")


async def upsert_for(
    session: AsyncSession, principal: Principal, draft: CustomerDraft, now: datetime | None = None
) -> UpsertResult:
    """``customerUpsert``: HQ staff only (customer master data spans every partner)."""
    require_hq(principal)
    return await upsert_customer(session, draft, actor=principal.subject, now=now)


async def update_customer(
    session: AsyncSession,
    principal: Principal,
    customer_id: int,
    changes: CustomerChanges,
    *,
    now: datetime | None = None,
) -> Customer:
    """``customerUpdate``: a partial change of profile, tags, attributes, consents and
    identities. HQ staff only."""
    require_hq(principal)
    now = now or utcnow()
    problems: list[Problem] = []
    add_pairs: list[tuple[IdentityKind, str]] = []
    remove_pairs: list[tuple[IdentityKind, str]] = []
    for path, given, out in (
        ("identitiesAdd", changes.identities_add, add_pairs),
        ("identitiesRemove", changes.identities_remove, remove_pairs),
    ):
        try:
            out.extend(normalize_identities(given, path))
        except DomainError as error:
            problems.extend(error.problems)
    name = changes.name if isinstance(changes.name, str) else None
    phone_raw = changes.contact_phone if isinstance(changes.contact_phone, str) else None
    email_raw = changes.contact_email if isinstance(changes.contact_email, str) else None
    birthday = changes.birthday if isinstance(changes.birthday, date) else None
    phone, email = _check_profile(
        problems,
        name=name,
        contact_phone=phone_raw,
        contact_email=email_raw,
        birthday=birthday,
        now=now,
    )
    tags_add = _check_tags(problems, changes.tags_add, "tagsAdd")
    tags_remove = [t.strip() for t in changes.tags_remove]
    if len(tags_remove) > MAX_TAGS_PER_CALL:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID, f"At most {MAX_TAGS_PER_CALL} tags.", ("tagsRemove",)
            )
        )
    if len(changes.attributes_unset) > MAX_ATTRIBUTE_KEYS:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                f"At most {MAX_ATTRIBUTE_KEYS} attributes.",
                ("attributesUnset",),
            )
        )
    if changes.attributes_set is not None:
        _check_attributes(problems, changes.attributes_set, "attributesSet")
    _check_consents(problems, changes.consents, now)
    if problems:
        raise DomainError(problems)

    if add_pairs:
        await lock_identities(session, add_pairs)
    customer = await get_customer(session, principal, customer_id, lock=True, path=("id",))

    if add_pairs:
        found = await _owners(session, add_pairs)
        for index, pair in enumerate(add_pairs):
            row = found.get(pair)
            owner = None if row is None else await resolve_customer_id(session, row.customer_id)
            if row is not None and owner != customer.id:
                raise _conflict(index, pair[0], "identitiesAdd")
        await _attach(
            session, customer, add_pairs, found, None, now, creating=False, path="identitiesAdd"
        )
    if remove_pairs:
        remaining = await session.scalar(
            select(func.count())
            .select_from(CustomerIdentity)
            .where(CustomerIdentity.customer_id == customer.id, ~_identity_match(remove_pairs))
        )
        if not remaining:
            raise DomainError.one(
                CustomerErrorCode.INVALID,
                "A customer keeps at least one identity.",
                "identitiesRemove",
            )
        await session.execute(
            delete(CustomerIdentity).where(
                CustomerIdentity.customer_id == customer.id, _identity_match(remove_pairs)
            )
        )

    for attr, value in (
        ("name", changes.name.strip() if isinstance(changes.name, str) else changes.name),
        ("gender", changes.gender.value if isinstance(changes.gender, Gender) else changes.gender),
        ("birthday", changes.birthday),
        (
            "contact_phone",
            phone if isinstance(changes.contact_phone, str) else changes.contact_phone,
        ),
        (
            "contact_email",
            email if isinstance(changes.contact_email, str) else changes.contact_email,
        ),
    ):
        if not isinstance(value, _Unset):
            setattr(customer, attr, value)
    if changes.attributes_set or changes.attributes_unset:
        merged = {**(customer.attributes or {}), **(changes.attributes_set or {})}
        for key in changes.attributes_unset:
            merged.pop(key, None)
        _check_attributes(problems, merged, "attributesSet")
        if problems:
            raise DomainError(problems)
        customer.attributes = merged
    await _apply_consents(session, customer.id, changes.consents, now)
    await _add_tags(session, customer.id, tags_add, now)
    if tags_remove:
        await session.execute(
            delete(CustomerTag).where(
                CustomerTag.customer_id == customer.id, CustomerTag.tag.in_(tags_remove)
            )
        )
    customer.updated_at = now
    await session.flush()
    return customer


# --- membership and levels (levels.py), exported here per the cross-domain contract -------


async def record_spend(
    session: AsyncSession,
    customer_id: int,
    amount: Decimal,
    *,
    source_type: str,
    source_id: str,
    at: datetime,
    now: datetime | None = None,
) -> bool:
    """Count spend towards member levels, idempotent by (source_type, source_id); a refund
    is a negative amount under its own source. Upgrades immediately. True when recorded."""
    from api.customers import levels

    return await levels.record_spend(
        session,
        customer_id,
        amount,
        source_type=source_type,
        source_id=source_id,
        at=at,
        now=now,
    )


async def evaluate_level(session: AsyncSession, customer_id: int, now: datetime) -> None:
    """Upgrade a member whose qualification now reaches a higher level (never downgrades:
    that happens at period end, see ``levels.review_levels``)."""
    from api.customers import levels

    await levels.evaluate_level(session, customer_id, now)
