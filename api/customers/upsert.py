"""Finding a customer by any of their identities, or creating one (``customerUpsert``, channel
feeds, enrolment, touchpoints): race-safe, attaching the identities not on file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.customers.errors import CustomerErrorCode, require_hq
from api.customers.identities import IdentityError, normalize_identities, normalize_identity
from api.customers.locks import (
    identity_holders,
    lock_identities,
    lock_live_customers,
    resolve_customer_id,
)
from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.customers.profile import (
    CustomerDraft,
    add_tags,
    apply_consents,
    check_attributes,
    check_consents,
    check_profile,
    check_tags,
)
from api.db import insert_or_get, utcnow
from api.errors import DomainError, Problem


@dataclass(slots=True)
class UpsertResult:
    customer: Customer
    created: bool
    attached: list[tuple[IdentityKind, str]] = field(default_factory=list)


class _LostRace(Exception):
    """An identity appeared under another customer while we were creating ours: retry."""


def identity_conflict(index: int, kind: IdentityKind, path: str = "identities") -> DomainError:
    return DomainError.one(
        CustomerErrorCode.IDENTITY_CONFLICT,
        f"This {kind.value} belongs to a different customer; merge the two customers first "
        "(customersMerge).",
        path,
        str(index),
        "value",
    )


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
    phone, email = check_profile(
        problems,
        name=draft.name,
        contact_phone=draft.contact_phone,
        contact_email=draft.contact_email,
        first_channel=draft.first_channel,
        birthday=draft.birthday,
        now=now,
    )
    tags = check_tags(problems, draft.tags, "tags")
    if draft.attributes is not None:
        check_attributes(problems, draft.attributes, "attributes")
    check_consents(problems, draft.consents, now)
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
    found = await identity_holders(session, pairs)
    owners = {row.customer_id for row in found.values()}
    live = await lock_live_customers(session, owners) if owners else {}
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
            raise identity_conflict(index, pair[0])

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
            attached = await attach_identities(
                session, customer, pairs, {}, hint, now, creating=True
            )
    else:
        attached = await attach_identities(
            session, customer, pairs, found, hint, now, creating=False
        )

    _apply_profile(customer, draft, phone, email, now)
    await apply_consents(session, customer.id, draft.consents, now)
    await add_tags(session, customer.id, tags, now)
    if draft.attributes:
        customer.attributes = {**(customer.attributes or {}), **draft.attributes}
    await session.flush()
    return UpsertResult(customer=customer, created=created, attached=attached)


async def attach_identities(
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
            raise identity_conflict(index, kind, path)
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


async def upsert_for(
    session: AsyncSession, principal: Principal, draft: CustomerDraft, now: datetime | None = None
) -> UpsertResult:
    """``customerUpsert``: HQ staff only (customer master data spans every partner)."""
    require_hq(principal)
    return await upsert_customer(session, draft, actor=principal.subject, now=now)
