"""``customerUpdate``: a partial change of a customer's profile, tags, attributes, consents
and identities."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.customers.errors import CustomerErrorCode, require_hq
from api.customers.identities import normalize_identities
from api.customers.locks import (
    identity_holders,
    identity_match,
    lock_identities,
    resolve_customer_id,
)
from api.customers.lookup import get_customer
from api.customers.models import Customer, CustomerIdentity, CustomerTag, IdentityKind
from api.customers.profile import (
    MAX_ATTRIBUTE_KEYS,
    MAX_TAGS_PER_CALL,
    ConsentDecision,
    Gender,
    add_tags,
    apply_consents,
    check_attributes,
    check_consents,
    check_profile,
    check_tags,
)
from api.customers.upsert import attach_identities, identity_conflict
from api.db import utcnow
from api.errors import DomainError, Problem


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


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


@dataclass(slots=True)
class _Checked:
    """The changes after their checks: identities normalized, contacts canonical, tags clean."""

    add_pairs: list[tuple[IdentityKind, str]]
    remove_pairs: list[tuple[IdentityKind, str]]
    phone: str | None
    email: str | None
    tags_add: list[str]
    tags_remove: list[str]


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
    checked = _check_changes(changes, now)
    if checked.add_pairs:
        await lock_identities(session, checked.add_pairs)
    customer = await get_customer(session, principal, customer_id, lock=True, path=("id",))
    if checked.add_pairs:
        await _add_identities(session, customer, checked.add_pairs, now)
    if checked.remove_pairs:
        await _remove_identities(session, customer, checked.remove_pairs)
    _apply_profile(customer, changes, checked)
    if changes.attributes_set or changes.attributes_unset:
        merged = {**(customer.attributes or {}), **(changes.attributes_set or {})}
        for key in changes.attributes_unset:
            merged.pop(key, None)
        problems: list[Problem] = []
        check_attributes(problems, merged, "attributesSet")
        if problems:
            raise DomainError(problems)
        customer.attributes = merged
    await apply_consents(session, customer.id, changes.consents, now)
    await add_tags(session, customer.id, checked.tags_add, now)
    if checked.tags_remove:
        await session.execute(
            delete(CustomerTag).where(
                CustomerTag.customer_id == customer.id, CustomerTag.tag.in_(checked.tags_remove)
            )
        )
    customer.updated_at = now
    await session.flush()
    return customer


def _check_changes(changes: CustomerChanges, now: datetime) -> _Checked:
    """Every problem of the changes at once (DomainError), before anything is read."""
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
    phone, email = check_profile(
        problems,
        name=name,
        contact_phone=phone_raw,
        contact_email=email_raw,
        birthday=birthday,
        now=now,
    )
    tags_add = check_tags(problems, changes.tags_add, "tagsAdd")
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
        check_attributes(problems, changes.attributes_set, "attributesSet")
    check_consents(problems, changes.consents, now)
    if problems:
        raise DomainError(problems)
    return _Checked(add_pairs, remove_pairs, phone, email, tags_add, tags_remove)


async def _add_identities(
    session: AsyncSession,
    customer: Customer,
    pairs: list[tuple[IdentityKind, str]],
    now: datetime,
) -> None:
    """Attach identities (locked by the caller); one held by another customer is a
    conflict."""
    found = await identity_holders(session, pairs)
    for index, pair in enumerate(pairs):
        row = found.get(pair)
        owner = None if row is None else await resolve_customer_id(session, row.customer_id)
        if row is not None and owner != customer.id:
            raise identity_conflict(index, pair[0], "identitiesAdd")
    await attach_identities(
        session, customer, pairs, found, None, now, creating=False, path="identitiesAdd"
    )


async def _remove_identities(
    session: AsyncSession, customer: Customer, pairs: list[tuple[IdentityKind, str]]
) -> None:
    """Detach identities; a customer keeps at least one."""
    remaining = await session.scalar(
        select(func.count())
        .select_from(CustomerIdentity)
        .where(CustomerIdentity.customer_id == customer.id, ~identity_match(pairs))
    )
    if not remaining:
        raise DomainError.one(
            CustomerErrorCode.INVALID,
            "A customer keeps at least one identity.",
            "identitiesRemove",
        )
    await session.execute(
        delete(CustomerIdentity).where(
            CustomerIdentity.customer_id == customer.id, identity_match(pairs)
        )
    )


def _apply_profile(customer: Customer, changes: CustomerChanges, checked: _Checked) -> None:
    """Set the profile fields given (None clears one); UNSET ones keep what is on file."""
    for attr, value in (
        ("name", changes.name.strip() if isinstance(changes.name, str) else changes.name),
        ("gender", changes.gender.value if isinstance(changes.gender, Gender) else changes.gender),
        ("birthday", changes.birthday),
        (
            "contact_phone",
            checked.phone if isinstance(changes.contact_phone, str) else changes.contact_phone,
        ),
        (
            "contact_email",
            checked.email if isinstance(changes.contact_email, str) else changes.contact_email,
        ),
    ):
        if not isinstance(value, _Unset):
            setattr(customer, attr, value)
