"""Listing customers: the filter of ``customers(filter:)``, its caps, sort keys and the one
scoped statement it becomes."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, select

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.errors import CustomerErrorCode
from api.customers.identities import IdentityError, normalize_identity
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
from api.errors import DomainError, Problem

# Every list in a customers filter becomes bound parameters (``tags`` one EXISTS per value):
# unbounded, one request passes PostgreSQL's 32,767 parameters or SQLite's expression depth.
MAX_FILTER_VALUES = 50
MAX_SEARCH_CHARS = 100


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


def _has_identity(kind: IdentityKind, raw: str) -> Any:
    """The customer holds this identity (compared in its normalized form)."""
    try:
        value = normalize_identity(kind, raw)
    except IdentityError as error:
        raise DomainError.one(
            CustomerErrorCode.INVALID_IDENTITY, str(error), "filter", "identity", "value"
        ) from None
    return exists().where(
        CustomerIdentity.customer_id == Customer.id,
        CustomerIdentity.kind == kind,
        CustomerIdentity.value == value,
    )


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
        stmt = stmt.where(_has_identity(*where.identity))
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
