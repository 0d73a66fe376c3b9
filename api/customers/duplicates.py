"""Finding duplicate customers: who is probably the same person, and why
(``customerDuplicates``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.errors import CustomerErrorCode
from api.customers.lookup import get_customer
from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.errors import DomainError


class DuplicateReason(enum.Enum):
    SAME_UNIONID = "same_unionid"
    SAME_PHONE = "same_phone"
    SAME_EMAIL = "same_email"
    SAME_NAME_AND_BIRTHDAY = "same_name_and_birthday"


# How sure each signal alone is; several signals combine as independent evidence.
_WEIGHTS = {
    DuplicateReason.SAME_UNIONID: 0.95,
    DuplicateReason.SAME_PHONE: 0.9,
    DuplicateReason.SAME_EMAIL: 0.8,
    DuplicateReason.SAME_NAME_AND_BIRTHDAY: 0.6,
}
MAX_CANDIDATES = 50
_SCAN = 200


@dataclass(slots=True)
class DuplicateCandidate:
    customer: Customer
    reasons: list[DuplicateReason]
    score: float


async def find_duplicates(
    session: AsyncSession, principal: Principal, customer_id: int, limit: int = 10
) -> list[DuplicateCandidate]:
    """Customers that are probably the same person, best first, within the principal's scope.

    Signals: a phone identity or contact phone equal to one of this customer's; a WeChat
    unionid equal to theirs, directly or as the hint seen with an openid; an email; the same
    name and birthday. One statement for the candidates, whatever the signals.
    """
    if not 1 <= limit <= MAX_CANDIDATES:
        raise DomainError.one(
            CustomerErrorCode.INVALID, f"Ask for 1-{MAX_CANDIDATES} candidates.", "first"
        )
    customer = await get_customer(session, principal, customer_id)
    rows = list(
        await session.scalars(
            select(CustomerIdentity).where(CustomerIdentity.customer_id == customer.id)
        )
    )
    phones = {r.value for r in rows if r.kind is IdentityKind.PHONE}
    emails = {r.value for r in rows if r.kind is IdentityKind.EMAIL}
    unionids = {r.value for r in rows if r.kind is IdentityKind.WECHAT_UNIONID}
    unionids |= {r.unionid_hint for r in rows if r.unionid_hint}
    if customer.contact_phone:
        phones.add(customer.contact_phone)
    if customer.contact_email:
        emails.add(customer.contact_email)

    def has(kind: IdentityKind, values: set[str], column: Any = CustomerIdentity.value) -> Any:
        return exists().where(
            CustomerIdentity.customer_id == Customer.id,
            CustomerIdentity.kind == kind,
            column.in_(values),
        )

    signals: dict[DuplicateReason, Any] = {}
    if phones:
        signals[DuplicateReason.SAME_PHONE] = or_(
            has(IdentityKind.PHONE, phones), Customer.contact_phone.in_(phones)
        )
    if emails:
        signals[DuplicateReason.SAME_EMAIL] = or_(
            has(IdentityKind.EMAIL, emails), Customer.contact_email.in_(emails)
        )
    if unionids:
        signals[DuplicateReason.SAME_UNIONID] = or_(
            has(IdentityKind.WECHAT_UNIONID, unionids),
            has(IdentityKind.WECHAT_OPENID, unionids, CustomerIdentity.unionid_hint),
        )
    if customer.name and customer.birthday:
        signals[DuplicateReason.SAME_NAME_AND_BIRTHDAY] = and_(
            func.lower(Customer.name) == customer.name.strip().lower(),
            Customer.birthday == customer.birthday,
        )
    if not signals:
        return []
    reasons = list(signals)
    stmt = (
        select(Customer, *(case((signals[r], 1), else_=0) for r in reasons))
        .where(
            Customer.status == CustomerStatus.ACTIVE,
            Customer.id != customer.id,
            or_(*signals.values()),
        )
        .order_by(Customer.id)
        .limit(_SCAN)
    )
    found = []
    for candidate, *flags in await session.execute(restrict(stmt, Customer, principal)):
        matched = [r for r, flag in zip(reasons, flags, strict=True) if flag]
        doubt = 1.0
        for reason in matched:
            doubt *= 1 - _WEIGHTS[reason]
        matched.sort(key=lambda r: -_WEIGHTS[r])
        found.append(DuplicateCandidate(candidate, matched, round(1 - doubt, 4)))
    found.sort(key=lambda c: (-c.score, c.customer.id))
    return found[:limit]
