"""Channel spend: what HQ spent acquiring customers on a channel, recorded once per
idempotency key, and read back within the caller's scope (CAC and ROI divide by it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import CENT
from api.analytics.arguments import (
    DEFAULT_CURRENCY,
    AnalyticsErrorCode,
    check_currency,
    outside_calendar,
    raise_problems,
)
from api.analytics.business_calendar import FIRST_DAY, LAST_DAY
from api.analytics.models import ChannelSpend
from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog.models import SalesChannel
from api.db import insert_or_get
from api.errors import DomainError, Problem
from api.orders.validation import idempotency_scope
from api.partners.models import Partner

MAX_SPEND = Decimal("100000000.00")  # 1亿 a record: more is a typo
MAX_NOTE = 200
MAX_KEY = 100

# A partner reads its own spend; HQ's own spend (no partner) is HQ's.
SPEND_KEYSET = (ChannelSpend.id,)


@dataclass(frozen=True, slots=True)
class SpendDraft:
    channel: SalesChannel
    period_start: date
    period_end: date  # inclusive
    amount: Decimal
    idempotency_key: str
    partner_id: int | None = None
    currency: str = DEFAULT_CURRENCY
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SpendResult:
    spend: ChannelSpend
    created: bool


def _spend_problems(draft: SpendDraft) -> list[Problem]:
    problems = []
    key = draft.idempotency_key
    if not key.strip():
        problems.append(
            Problem(AnalyticsErrorCode.REQUIRED, "Give an idempotency key.", ("idempotencyKey",))
        )
    elif len(key) > MAX_KEY:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"An idempotency key is at most {MAX_KEY} characters.",
                ("idempotencyKey",),
            )
        )
    amount = draft.amount
    not_cents = Problem(
        AnalyticsErrorCode.INVALID, "An amount is yuan and fen, e.g. 1200.50.", ("amount",)
    )
    if not amount.is_finite():
        problems.append(not_cents)
    elif not Decimal(0) < amount <= MAX_SPEND:
        problems.append(
            Problem(
                AnalyticsErrorCode.AMOUNT_OUT_OF_RANGE,
                f"A spend is more than 0 and at most {MAX_SPEND:,}.",
                ("amount",),
            )
        )
    # Only now, with the magnitude bounded: quantizing 1E+30 to fen overflows the context.
    elif amount != amount.quantize(CENT):
        problems.append(not_cents)
    outside = outside_calendar(
        [
            ("periodStart", FIRST_DAY <= draft.period_start <= LAST_DAY),
            ("periodEnd", FIRST_DAY <= draft.period_end <= LAST_DAY),
        ]
    )
    if outside:
        problems += outside
    elif draft.period_end < draft.period_start:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID_RANGE,
                "`periodEnd` must not be before `periodStart`.",
                ("periodEnd",),
            )
        )
    elif draft.period_end >= _a_year_after(draft.period_start):
        problems.append(
            Problem(
                AnalyticsErrorCode.RANGE_TOO_LONG,
                "A spend covers at most a year (to the day before the same date a year "
                "later): record each year on its own.",
                ("periodEnd",),
            )
        )
    if draft.note is not None and len(draft.note) > MAX_NOTE:
        problems.append(
            Problem(
                AnalyticsErrorCode.INVALID,
                f"A note is at most {MAX_NOTE} characters.",
                ("note",),
            )
        )
    return problems + check_currency(draft.currency)


def _a_year_after(day: date) -> date:
    """The same date a year later (29 February: 1 March)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return date(day.year + 1, 3, 1)


def spend_digest(draft: SpendDraft) -> str:
    """What a request asked for, normalized: a retry with the same key must ask the same."""
    body = {
        "channel": draft.channel.value,
        "partner": draft.partner_id,
        "start": draft.period_start.isoformat(),
        "end": draft.period_end.isoformat(),
        "amount": str(draft.amount.quantize(CENT)),
        "currency": draft.currency,
        "note": (draft.note or "").strip() or None,
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def require_hq(principal: Principal) -> None:
    """Spend is HQ's to record (spend:write is an HQ-only scope; this holds for any caller)."""
    if not principal.is_hq:
        raise DomainError.one(AnalyticsErrorCode.FORBIDDEN, "Only HQ records channel spend.")


async def record_channel_spend(
    session: AsyncSession, principal: Principal, draft: SpendDraft, *, now: datetime
) -> SpendResult:
    """Record money spent acquiring customers on a channel (HQ only), once per idempotency
    key within the caller's scope: a retry returns the first record (``created`` False), the
    same key for a different request is IDEMPOTENCY_KEY_REUSED. Concurrent retries meet at
    the unique (scope, key): one inserts, the others read it back."""
    require_hq(principal)
    raise_problems(_spend_problems(draft))
    if draft.partner_id is not None and not await session.scalar(
        select(Partner.id).where(Partner.id == draft.partner_id)
    ):
        raise DomainError.one(AnalyticsErrorCode.NOT_FOUND, "No such partner.", "partnerId")
    digest = spend_digest(draft)
    row, created = await insert_or_get(
        session,
        ChannelSpend,
        {
            "channel": draft.channel.value,
            "partner_id": draft.partner_id,
            "period_start": draft.period_start,
            "period_end": draft.period_end,
            "amount": draft.amount,
            "currency": draft.currency,
            "note": (draft.note or "").strip() or None,
            "recorded_scope": idempotency_scope(principal),
            "idempotency_key": draft.idempotency_key,
            "request_digest": digest,
            "recorded_by": principal.subject,
            "created_at": now,
        },
        ("recorded_scope", "idempotency_key"),
    )
    if not created and row.request_digest != digest:
        raise DomainError.one(
            AnalyticsErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This idempotency key was used for a different spend.",
            "idempotencyKey",
        )
    return SpendResult(row, created)


@dataclass(frozen=True, slots=True)
class SpendFilter:
    channels: Sequence[SalesChannel] = ()
    partner_id: int | None = None
    overlapping_from: date | None = None  # periods ending on or after
    overlapping_to: date | None = None  # periods starting on or before


def channel_spends_query(principal: Principal, where: SpendFilter | None = None) -> Select[Any]:
    """Spend records the principal may read: HQ all, a partner its own."""
    stmt = restrict(select(ChannelSpend), ChannelSpend, principal)
    if where is None:
        return stmt
    if where.channels:
        stmt = stmt.where(ChannelSpend.channel.in_([c.value for c in where.channels]))
    if where.partner_id is not None:
        stmt = stmt.where(ChannelSpend.partner_id == where.partner_id)
    if where.overlapping_from is not None:
        stmt = stmt.where(ChannelSpend.period_end >= where.overlapping_from)
    if where.overlapping_to is not None:
        stmt = stmt.where(ChannelSpend.period_start <= where.overlapping_to)
    return stmt


async def spends_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, ChannelSpend]:
    if not ids:
        return {}
    rows = await session.scalars(
        channel_spends_query(principal).where(ChannelSpend.id.in_(set(ids)))
    )
    return {row.id: row for row in rows}
