"""Partner and store rules. Plain async functions over a session; no GraphQL here."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, delete, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.db import advisory_lock
from api.errors import DomainError, Problem
from api.partners.models import (
    Partner,
    PartnerStatus,
    PartnerTerritory,
    PartnerTier,
    PartnerType,
    Store,
    StoreKind,
    StoreStatus,
)


class PartnerErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    DUPLICATE_CODE = "duplicate_code"
    UNKNOWN_PARENT = "unknown_parent"
    PARENT_CYCLE = "parent_cycle"
    INVALID_REGION_CODE = "invalid_region_code"
    INVALID_STATUS_TRANSITION = "invalid_status_transition"
    FORBIDDEN = "forbidden"


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET

# GB/T 2260 administrative division codes: six digits, the first two a province-level unit.
_PROVINCE_PREFIXES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
    "50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)
_REGION_CODE = re.compile(r"\d{6}")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9][0-9 -]{5,20}")
HIERARCHY_LOCK = 0x51_D0_0001
# Deep enough for any real distribution chain; bounds the ancestor walk.
MAX_HIERARCHY_DEPTH = 8

# Lifecycle: prospect → active ⇄ probation → terminated (final).
_TRANSITIONS: dict[PartnerStatus, frozenset[PartnerStatus]] = {
    PartnerStatus.PROSPECT: frozenset({PartnerStatus.ACTIVE, PartnerStatus.TERMINATED}),
    PartnerStatus.ACTIVE: frozenset({PartnerStatus.PROBATION, PartnerStatus.TERMINATED}),
    PartnerStatus.PROBATION: frozenset({PartnerStatus.ACTIVE, PartnerStatus.TERMINATED}),
    PartnerStatus.TERMINATED: frozenset(),
}


def is_valid_region_code(code: str) -> bool:
    return bool(_REGION_CODE.fullmatch(code)) and code[:2] in _PROVINCE_PREFIXES


@dataclass(slots=True)
class PartnerDraft:
    code: str
    name: str
    type: PartnerType
    status: PartnerStatus = PartnerStatus.PROSPECT
    tier: PartnerTier | None = None
    parent_id: int | None = None
    territories: Sequence[str] = ()
    contact_name: str | None = None
    contact_phone: str | None = None
    contact_email: str | None = None
    contract_starts_on: date | None = None
    contract_ends_on: date | None = None


@dataclass(slots=True)
class PartnerChanges:
    """A partial update: fields left UNSET keep their value; None clears an optional one."""

    name: str | _Unset = UNSET
    status: PartnerStatus | _Unset = UNSET
    tier: PartnerTier | _Unset | None = UNSET
    parent_id: int | _Unset | None = UNSET
    territories: Sequence[str] | _Unset = UNSET
    contact_name: str | _Unset | None = UNSET
    contact_phone: str | _Unset | None = UNSET
    contact_email: str | _Unset | None = UNSET
    contract_starts_on: date | _Unset | None = UNSET
    contract_ends_on: date | _Unset | None = UNSET


@dataclass(slots=True)
class StoreDraft:
    code: str
    name: str
    region_code: str
    address: str
    partner_id: int | None = None
    kind: StoreKind = StoreKind.STORE
    offers_pickup: bool = False
    status: StoreStatus = StoreStatus.OPEN


@dataclass(slots=True)
class PartnerFilter:
    types: Sequence[PartnerType] = ()
    tiers: Sequence[PartnerTier] = ()
    statuses: Sequence[PartnerStatus] = ()
    region_code: str | None = None
    parent_id: int | None = None
    search: str | None = None


@dataclass(slots=True)
class StoreFilter:
    partner_ids: Sequence[int] = ()
    region_code: str | None = None
    offers_pickup: bool | None = None
    statuses: Sequence[StoreStatus] = ()


class PartnerSortKey(enum.Enum):
    ID = "id"
    NAME = "name"
    CREATED_AT = "created_at"


PARTNER_KEYSETS = {
    PartnerSortKey.ID: (Partner.id,),
    PartnerSortKey.NAME: (Partner.name, Partner.id),
    PartnerSortKey.CREATED_AT: (Partner.created_at, Partner.id),
}
STORE_KEYSET = (Store.id,)


# --- reads ---------------------------------------------------------------------------------


def partners_query(principal: Principal, where: PartnerFilter | None = None) -> Select[Any]:
    stmt = restrict(select(Partner), Partner, principal)
    if where is None:
        return stmt
    if where.types:
        stmt = stmt.where(Partner.type.in_(where.types))
    if where.tiers:
        stmt = stmt.where(Partner.tier.in_(where.tiers))
    if where.statuses:
        stmt = stmt.where(Partner.status.in_(where.statuses))
    if where.parent_id is not None:
        stmt = stmt.where(Partner.parent_id == where.parent_id)
    if where.region_code:
        # A region matches the partners protecting it or any region containing it:
        # a partner holding province 310000 covers district 310115.
        covering = {where.region_code, where.region_code[:4] + "00", where.region_code[:2] + "0000"}
        stmt = stmt.where(
            Partner.id.in_(
                select(PartnerTerritory.partner_id).where(
                    PartnerTerritory.region_code.in_(covering)
                )
            )
        )
    if where.search:
        pattern = f"%{where.search.strip().lower()}%"
        stmt = stmt.where(
            func.lower(Partner.name).like(pattern) | func.lower(Partner.code).like(pattern)
        )
    return stmt


def stores_query(principal: Principal, where: StoreFilter | None = None) -> Select[Any]:
    stmt = restrict(select(Store), Store, principal)
    if where is None:
        return stmt
    if where.partner_ids:
        stmt = stmt.where(Store.partner_id.in_(where.partner_ids))
    if where.region_code:
        prefix = where.region_code.rstrip("0") if where.region_code.endswith("00") else None
        stmt = stmt.where(
            Store.region_code.startswith(prefix)
            if prefix
            else Store.region_code == where.region_code
        )
    if where.offers_pickup is not None:
        stmt = stmt.where(Store.offers_pickup == where.offers_pickup)
    if where.statuses:
        stmt = stmt.where(Store.status.in_(where.statuses))
    return stmt


async def partners_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Partner]:
    rows = await session.scalars(partners_query(principal).where(Partner.id.in_(ids)))
    return {p.id: p for p in rows}


async def stores_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Store]:
    rows = await session.scalars(stores_query(principal).where(Store.id.in_(ids)))
    return {s.id: s for s in rows}


async def territories_of(session: AsyncSession, partner_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = await session.execute(
        select(PartnerTerritory.partner_id, PartnerTerritory.region_code)
        .where(PartnerTerritory.partner_id.in_(partner_ids))
        .order_by(PartnerTerritory.partner_id, PartnerTerritory.region_code)
    )
    result: dict[int, list[str]] = {pid: [] for pid in partner_ids}
    for partner_id, region_code in rows:
        result[partner_id].append(region_code)
    return result


# --- writes --------------------------------------------------------------------------------


def _check_text(problems: list[Problem], value: str, name: str, path: str, limit: int) -> None:
    if not value.strip():
        problems.append(Problem(PartnerErrorCode.REQUIRED, f"{name} must not be blank.", (path,)))
    elif len(value) > limit:
        problems.append(
            Problem(PartnerErrorCode.INVALID, f"{name} is over {limit} characters.", (path,))
        )


def _check_contact(problems: list[Problem], phone: str | None, email: str | None) -> None:
    if phone is not None and not _PHONE.fullmatch(phone):
        problems.append(
            Problem(PartnerErrorCode.INVALID, f"Not a phone number: {phone!r}.", ("contactPhone",))
        )
    if email is not None and not _EMAIL.fullmatch(email):
        problems.append(
            Problem(
                PartnerErrorCode.INVALID, f"Not an email address: {email!r}.", ("contactEmail",)
            )
        )


def _check_territories(problems: list[Problem], territories: Sequence[str]) -> None:
    for index, code in enumerate(territories):
        if not is_valid_region_code(code):
            problems.append(
                Problem(
                    PartnerErrorCode.INVALID_REGION_CODE,
                    f"{code!r} is not a region code (six digits, GB/T 2260, e.g. 310115).",
                    ("territories", str(index)),
                )
            )


def _check_contract(problems: list[Problem], starts: date | None, ends: date | None) -> None:
    if starts and ends and ends < starts:
        problems.append(
            Problem(
                PartnerErrorCode.INVALID,
                "The contract cannot end before it starts.",
                ("contractEndsOn",),
            )
        )


def _require_hq(principal: Principal) -> None:
    if not principal.is_hq:
        raise DomainError.one(
            PartnerErrorCode.FORBIDDEN, "Only HQ staff manage partner master data."
        )


async def _code_taken(session: AsyncSession, model: type[Partner] | type[Store], code: str) -> bool:
    found = await session.scalar(select(literal(1)).where(model.code == code))
    return found is not None


async def _ancestors(session: AsyncSession, partner_id: int) -> list[int]:
    """The partner and its ancestors, nearest first, in one recursive query."""
    chain = (
        select(Partner.id, Partner.parent_id, literal(0).label("depth"))
        .where(Partner.id == partner_id)
        .cte("chain", recursive=True)
    )
    chain = chain.union_all(
        select(Partner.id, Partner.parent_id, chain.c.depth + 1)
        .join(chain, Partner.id == chain.c.parent_id)
        .where(chain.c.depth < MAX_HIERARCHY_DEPTH)
    )
    rows = await session.execute(select(chain.c.id).order_by(chain.c.depth))
    return list(rows.scalars())


async def _check_parent(
    session: AsyncSession,
    principal: Principal,
    problems: list[Problem],
    parent_id: int,
    child_id: int | None,
) -> None:
    if not await partners_by_id(session, principal, [parent_id]):
        problems.append(
            Problem(PartnerErrorCode.UNKNOWN_PARENT, "No such parent partner.", ("parentId",))
        )
        return
    ancestors = await _ancestors(session, parent_id)
    if child_id is not None and child_id in ancestors:
        problems.append(
            Problem(
                PartnerErrorCode.PARENT_CYCLE,
                "That parent is this partner or one of its descendants.",
                ("parentId",),
            )
        )
    elif len(ancestors) >= MAX_HIERARCHY_DEPTH:
        problems.append(
            Problem(
                PartnerErrorCode.INVALID,
                f"Distribution chains are at most {MAX_HIERARCHY_DEPTH} levels deep.",
                ("parentId",),
            )
        )


async def _set_territories(session: AsyncSession, partner_id: int, codes: Sequence[str]) -> None:
    await session.execute(delete(PartnerTerritory).where(PartnerTerritory.partner_id == partner_id))
    unique = sorted(set(codes))
    if unique:
        session.add_all(PartnerTerritory(partner_id=partner_id, region_code=c) for c in unique)


async def _flush_unique(session: AsyncSession, code: str) -> None:
    """Flush, turning a lost race on the unique code into the same error a check gives."""
    try:
        await session.flush()
    except IntegrityError as error:
        if "code" not in str(error.orig).lower():
            raise
        raise DomainError.one(
            PartnerErrorCode.DUPLICATE_CODE, f"The code {code!r} is already taken.", "code"
        ) from None


async def create_partner(
    session: AsyncSession, principal: Principal, draft: PartnerDraft
) -> Partner:
    _require_hq(principal)
    problems: list[Problem] = []
    _check_text(problems, draft.name, "Name", "name", 200)
    if not _CODE.fullmatch(draft.code):
        problems.append(
            Problem(
                PartnerErrorCode.INVALID,
                "A code is 2-32 letters, digits, '-' or '_'.",
                ("code",),
            )
        )
    elif await _code_taken(session, Partner, draft.code):
        problems.append(
            Problem(
                PartnerErrorCode.DUPLICATE_CODE,
                f"The code {draft.code!r} is already taken.",
                ("code",),
            )
        )
    _check_contact(problems, draft.contact_phone, draft.contact_email)
    _check_territories(problems, draft.territories)
    _check_contract(problems, draft.contract_starts_on, draft.contract_ends_on)
    if draft.parent_id is not None:
        await _check_parent(session, principal, problems, draft.parent_id, None)
    if problems:
        raise DomainError(problems)

    partner = Partner(
        code=draft.code,
        name=draft.name.strip(),
        type=draft.type,
        status=draft.status,
        tier=draft.tier,
        parent_id=draft.parent_id,
        contact_name=draft.contact_name,
        contact_phone=draft.contact_phone,
        contact_email=draft.contact_email,
        contract_starts_on=draft.contract_starts_on,
        contract_ends_on=draft.contract_ends_on,
    )
    session.add(partner)
    await _flush_unique(session, draft.code)
    await _set_territories(session, partner.id, draft.territories)
    await session.flush()
    return partner


async def update_partner(
    session: AsyncSession, principal: Principal, partner_id: int, changes: PartnerChanges
) -> Partner:
    _require_hq(principal)
    reparenting = not isinstance(changes.parent_id, _Unset) and changes.parent_id is not None
    if reparenting:
        # Two concurrent re-parentings must not form a cycle that neither saw.
        await advisory_lock(session, HIERARCHY_LOCK)
    # FOR UPDATE: two concurrent status changes must see each other (a no-op on SQLite, whose
    # writers BEGIN IMMEDIATE and so are serialized already).
    partner = await session.scalar(
        partners_query(principal).where(Partner.id == partner_id).with_for_update()
    )
    if partner is None:
        raise DomainError.one(PartnerErrorCode.NOT_FOUND, "No such partner.", "id")

    problems: list[Problem] = []
    if not isinstance(changes.name, _Unset):
        _check_text(problems, changes.name, "Name", "name", 200)
    if not isinstance(changes.status, _Unset) and changes.status != partner.status:
        if changes.status not in _TRANSITIONS[partner.status]:
            problems.append(
                Problem(
                    PartnerErrorCode.INVALID_STATUS_TRANSITION,
                    f"A {partner.status.name} partner cannot become {changes.status.name}.",
                    ("status",),
                )
            )
    phone = None if isinstance(changes.contact_phone, _Unset) else changes.contact_phone
    email = None if isinstance(changes.contact_email, _Unset) else changes.contact_email
    _check_contact(problems, phone, email)
    if not isinstance(changes.territories, _Unset):
        _check_territories(problems, changes.territories)
    starts = (
        partner.contract_starts_on
        if isinstance(changes.contract_starts_on, _Unset)
        else changes.contract_starts_on
    )
    ends = (
        partner.contract_ends_on
        if isinstance(changes.contract_ends_on, _Unset)
        else changes.contract_ends_on
    )
    _check_contract(problems, starts, ends)
    if reparenting:
        assert isinstance(changes.parent_id, int)
        await _check_parent(session, principal, problems, changes.parent_id, partner.id)
    if problems:
        raise DomainError(problems)

    for name in (
        "name",
        "status",
        "tier",
        "parent_id",
        "contact_name",
        "contact_phone",
        "contact_email",
        "contract_starts_on",
        "contract_ends_on",
    ):
        value = getattr(changes, name)
        if not isinstance(value, _Unset):
            setattr(partner, name, value.strip() if name == "name" else value)
    if not isinstance(changes.territories, _Unset):
        await _set_territories(session, partner.id, changes.territories)
    await session.flush()
    return partner


async def create_store(session: AsyncSession, principal: Principal, draft: StoreDraft) -> Store:
    _require_hq(principal)
    problems: list[Problem] = []
    _check_text(problems, draft.name, "Name", "name", 200)
    _check_text(problems, draft.address, "Address", "address", 500)
    if not _CODE.fullmatch(draft.code):
        problems.append(
            Problem(
                PartnerErrorCode.INVALID, "A code is 2-32 letters, digits, '-' or '_'.", ("code",)
            )
        )
    elif await _code_taken(session, Store, draft.code):
        problems.append(
            Problem(
                PartnerErrorCode.DUPLICATE_CODE,
                f"The code {draft.code!r} is already taken.",
                ("code",),
            )
        )
    if not is_valid_region_code(draft.region_code):
        problems.append(
            Problem(
                PartnerErrorCode.INVALID_REGION_CODE,
                f"{draft.region_code!r} is not a region code (six digits, GB/T 2260).",
                ("regionCode",),
            )
        )
    if draft.partner_id is not None and not await partners_by_id(
        session, principal, [draft.partner_id]
    ):
        problems.append(Problem(PartnerErrorCode.NOT_FOUND, "No such partner.", ("partnerId",)))
    if draft.kind is StoreKind.WAREHOUSE and draft.offers_pickup:
        problems.append(
            Problem(
                PartnerErrorCode.INVALID,
                "A warehouse has no counter: it cannot offer pickup.",
                ("offersPickup",),
            )
        )
    if problems:
        raise DomainError(problems)

    store = Store(
        partner_id=draft.partner_id,
        code=draft.code,
        name=draft.name.strip(),
        region_code=draft.region_code,
        address=draft.address.strip(),
        kind=draft.kind,
        offers_pickup=draft.offers_pickup,
        status=draft.status,
    )
    session.add(store)
    await _flush_unique(session, draft.code)
    return store
