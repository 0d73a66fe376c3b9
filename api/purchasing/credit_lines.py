"""A partner's credit line (授信): HQ sets the limit; a submitted purchase order holds its
total until it is rejected, cancelled or paid. Taking credit is one conditional UPDATE
(``used + total <= limit``), so concurrent submissions never overdraw it; the table's CHECK
constraints are the last line behind that guard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.db import insert_or_get, update_returning
from api.errors import DomainError, Problem
from api.partners.models import Partner
from api.purchasing.errors import PurchasingErrorCode, require_hq
from api.purchasing.models import (
    PartnerCredit,
    PurchaseOrder,
)
from api.purchasing.pricing import MAX_CENTS


@dataclass(frozen=True, slots=True)
class Credit:
    partner_id: int
    currency: str
    limit_cents: int
    used_cents: int
    payment_terms_days: int

    @property
    def available_cents(self) -> int:
        return self.limit_cents - self.used_cents

    @classmethod
    def of(cls, row: Any) -> Credit:
        return cls(
            row.partner_id, row.currency, row.limit_cents, row.used_cents, row.payment_terms_days
        )


async def credit_of(session: AsyncSession, principal: Principal, partner_id: int) -> Credit | None:
    """The partner's credit line, if HQ gave it one and the caller may see it."""
    row = await session.scalar(
        restrict(
            select(PartnerCredit).where(PartnerCredit.partner_id == partner_id),
            PartnerCredit,
            principal,
        )
    )
    return Credit.of(row) if row else None


async def set_credit(
    session: AsyncSession,
    principal: Principal,
    partner_id: int,
    *,
    limit_cents: int,
    payment_terms_days: int,
    now: datetime,
) -> Credit:
    """Give a partner a credit line or change it (HQ). A limit under what its open orders
    already use is refused (LIMIT_BELOW_USED), decided by the same conditional UPDATE."""
    require_hq(principal, "Only HQ sets credit lines.")
    problems = []
    if not 0 <= limit_cents <= MAX_CENTS:
        problems.append(
            Problem(PurchasingErrorCode.INVALID, "A limit is 0 to 10^12 cents.", ("limitCents",))
        )
    if not 0 <= payment_terms_days <= 365:
        problems.append(
            Problem(
                PurchasingErrorCode.INVALID,
                "Payment terms are 0 to 365 days.",
                ("paymentTermsDays",),
            )
        )
    if problems:
        raise DomainError(problems)
    if await session.get(Partner, partner_id) is None:
        raise DomainError.one(PurchasingErrorCode.NOT_FOUND, "No such partner.", "partnerId")
    await insert_or_get(
        session,
        PartnerCredit,
        {
            "partner_id": partner_id,
            "currency": "CNY",
            "limit_cents": 0,
            "used_cents": 0,
            "payment_terms_days": payment_terms_days,
            "updated_at": now,
        },
        ["partner_id"],
    )
    row = await update_returning(
        session,
        update(PartnerCredit)
        .where(PartnerCredit.partner_id == partner_id, PartnerCredit.used_cents <= limit_cents)
        .values(limit_cents=limit_cents, payment_terms_days=payment_terms_days, updated_at=now)
        .returning(PartnerCredit)
        .execution_options(populate_existing=True),
    )
    if row is None:
        used = await session.scalar(
            select(PartnerCredit.used_cents).where(PartnerCredit.partner_id == partner_id)
        )
        raise DomainError.one(
            PurchasingErrorCode.LIMIT_BELOW_USED,
            f"Open orders already use {used} cents of this line; the limit cannot go below.",
            "limitCents",
        )
    return Credit.of(row[0])


async def take_credit(session: AsyncSession, order: PurchaseOrder, now: datetime) -> None:
    total = order.total_cents
    row = await update_returning(
        session,
        update(PartnerCredit)
        .where(
            PartnerCredit.partner_id == order.partner_id,
            PartnerCredit.currency == order.currency,
            PartnerCredit.used_cents + total <= PartnerCredit.limit_cents,
        )
        .values(used_cents=PartnerCredit.used_cents + total, updated_at=now)
        .returning(PartnerCredit.used_cents),
    )
    if row is not None:
        return
    credit = await session.get(PartnerCredit, order.partner_id)
    if credit is None or credit.currency != order.currency:
        raise DomainError.one(
            PurchasingErrorCode.NO_CREDIT,
            f"The partner has no {order.currency} credit line: ask HQ for one.",
        )
    raise DomainError.one(
        PurchasingErrorCode.CREDIT_EXCEEDED,
        f"The order's {total} cents exceed the available credit of "
        f"{credit.limit_cents - credit.used_cents} cents (limit {credit.limit_cents}, "
        f"used {credit.used_cents}).",
    )


async def give_back_credit(session: AsyncSession, order: PurchaseOrder, now: datetime) -> None:
    row = await update_returning(
        session,
        update(PartnerCredit)
        .where(
            PartnerCredit.partner_id == order.partner_id,
            PartnerCredit.used_cents >= order.total_cents,
        )
        .values(used_cents=PartnerCredit.used_cents - order.total_cents, updated_at=now)
        .returning(PartnerCredit.used_cents),
    )
    # The order took this much when it was submitted: less used now is a ledger bug.
    assert row is not None, f"credit of partner {order.partner_id} below order {order.id}"
