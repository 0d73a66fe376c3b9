"""What a channel tells about a person (``CustomerDraft``: profile, consents, tags,
attributes), how that input is checked, and how consents and tags are written."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.errors import CustomerErrorCode
from api.customers.identities import IdentityError, normalize_email, normalize_phone
from api.customers.models import ConsentPurpose, CustomerConsent, CustomerTag, IdentityKind
from api.errors import Problem


class Gender(enum.Enum):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


_TAG_LIMIT = 64
MAX_TAGS_PER_CALL = 50
MAX_ATTRIBUTE_KEYS = 100
MAX_ATTRIBUTES_BYTES = 16_384


# Decisions per call: a handful of purposes, each decided once or a few times at most.
MAX_CONSENTS_PER_CALL = 20


def check_tags(problems: list[Problem], tags: Sequence[str], path: str) -> list[str]:
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


def _attribute_name(key: object) -> bool:
    """1-64 characters, not blank (a caller's mapping may have keys of any type)."""
    return isinstance(key, str) and bool(key.strip()) and len(key) <= 64


def check_attributes(problems: list[Problem], attributes: Mapping[str, Any], path: str) -> None:
    if len(attributes) > MAX_ATTRIBUTE_KEYS:
        problems.append(
            Problem(CustomerErrorCode.INVALID, f"At most {MAX_ATTRIBUTE_KEYS} attributes.", (path,))
        )
        return
    for key in attributes:
        if not _attribute_name(key):
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


def check_profile(
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


def check_consents(
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


async def apply_consents(
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


async def add_tags(
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
