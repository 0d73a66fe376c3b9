"""Earning points: a purchase (through the earning rules) or any other source, and the
earning rules themselves (HQ's programme).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.models import MemberLevel
from api.customers.qualification import evaluate_level
from api.errors import DomainError, Problem
from api.loyalty import rules as rules_engine
from api.loyalty.errors import PointsErrorCode
from api.loyalty.ledger import (
    MAX_POINTS,
    REASON_MAX,
    SOURCE_ID_MAX,
    check_points,
    check_source,
    check_text,
    credit_lot,
    existing_entry,
    lock_account,
    write_entry,
)
from api.loyalty.models import EntryKind, PointsEarningRule, PointsEntry
from api.loyalty.rules import PointsPolicy, Purchase, Quote
from api.partners.models import Store


async def earn(
    session: AsyncSession,
    customer_id: int,
    points: int,
    *,
    source_type: str,
    source_id: str,
    reason: str,
    actor: str | None,
    now: datetime,
    pending: bool = True,
    policy: PointsPolicy,
) -> PointsEntry:
    """Credit ``points`` earned by ``(source_type, source_id)`` (an order, a campaign).

    Idempotent: a retry with the same source returns the first entry and changes nothing.
    The lot expires per the policy and, when ``pending``, unlocks after the return window.
    Debt is settled first from points that are available at once.
    """
    check_points(points)
    check_source(source_type, source_id, reason, actor)
    account = await lock_account(session, customer_id, now)
    existing = await existing_entry(
        session, EntryKind.EARN, source_type, source_id, account.customer_id
    )
    if existing is not None:
        return existing
    lot_id, move = await credit_lot(
        session,
        account,
        points,
        available_at=policy.available_at(now, pending=pending),
        expires_at=policy.expires_at(now),
        source_type=source_type,
        source_id=source_id,
        now=now,
    )
    entry = await write_entry(
        session,
        account,
        EntryKind.EARN,
        move,
        reason=reason,
        source_type=source_type,
        source_id=source_id,
        actor=actor,
        now=now,
        lot_id=lot_id,
    )
    await evaluate_level(session, account.customer_id, now)
    return entry


async def active_rules(session: AsyncSession, purchase: Purchase, now: datetime) -> list[Any]:
    """The rules that could match the purchase at ``now`` (the engine picks per line)."""
    stmt = select(PointsEarningRule).where(
        PointsEarningRule.active == true(),
        or_(PointsEarningRule.starts_at.is_(None), PointsEarningRule.starts_at <= now),
        or_(PointsEarningRule.ends_at.is_(None), PointsEarningRule.ends_at > now),
        or_(PointsEarningRule.channel.is_(None), PointsEarningRule.channel == purchase.channel),
        or_(
            PointsEarningRule.store_id.is_(None),
            PointsEarningRule.store_id == purchase.store_id,
        ),
        or_(
            PointsEarningRule.level_id.is_(None),
            PointsEarningRule.level_id == purchase.level_id,
        ),
    )
    skus = {line.sku for line in purchase.lines}
    stmt = stmt.where(or_(PointsEarningRule.sku.is_(None), PointsEarningRule.sku.in_(skus)))
    return list((await session.scalars(stmt)).all())


async def quote_purchase(session: AsyncSession, purchase: Purchase, now: datetime) -> Quote:
    """How many points ``purchase`` would earn now (a preview: nothing is written)."""
    _check_purchase(purchase)
    return rules_engine.quote(await active_rules(session, purchase, now), purchase, now)


def _check_purchase(purchase: Purchase) -> None:
    check_text(purchase.channel, "channel", 32)
    check_text(purchase.source_id, "sourceId", SOURCE_ID_MAX)
    if not purchase.lines:
        raise DomainError.one(PointsErrorCode.INVALID, "A purchase needs lines.", "lines")
    if len(purchase.lines) > 500:
        raise DomainError.one(PointsErrorCode.INVALID, "At most 500 lines.", "lines")
    for index, line in enumerate(purchase.lines):
        if not line.sku or len(line.sku) > 64:
            raise DomainError.one(
                PointsErrorCode.INVALID, "A line needs a SKU.", "lines", str(index), "sku"
            )
        if not _is_finite_decimal(line.amount):
            raise DomainError.one(
                PointsErrorCode.INVALID_AMOUNT,
                "Amounts are decimal yuan.",
                "lines",
                str(index),
                "amount",
            )
        if line.amount < 0 or line.amount > Decimal(10) ** 9:
            raise DomainError.one(
                PointsErrorCode.INVALID_AMOUNT,
                "A line amount is between 0 and 1,000,000,000 yuan.",
                "lines",
                str(index),
                "amount",
            )


def _is_finite_decimal(value: object) -> bool:
    # Checked at run time: callers outside the type checker may hand a float or a str.
    return isinstance(value, Decimal) and value.is_finite()


PURCHASE_SOURCE = "order"


async def earn_for_purchase(
    session: AsyncSession,
    customer_id: int,
    purchase: Purchase,
    now: datetime,
    *,
    actor: str | None = None,
    policy: PointsPolicy,
) -> PointsEntry | None:
    """Earn what the earning rules give ``purchase`` (pending for the return window).

    None when it earns nothing. Idempotent by the purchase's ``source_id``: a retry returns
    the first entry even if the rules have changed since.
    """
    _check_purchase(purchase)
    # Unlocked, to skip quoting a retry (whose rules may have changed since); ``earn``
    # checks again under the lock. Any id of the person finds the first earning.
    existing = await existing_entry(
        session, EntryKind.EARN, PURCHASE_SOURCE, purchase.source_id, customer_id
    )
    if existing is not None:
        return existing
    quoted = await quote_purchase(session, purchase, now)
    if quoted.points <= 0:
        return None
    return await earn(
        session,
        customer_id,
        min(quoted.points, MAX_POINTS),
        source_type=PURCHASE_SOURCE,
        source_id=purchase.source_id,
        reason=f"purchase {purchase.source_id} ({purchase.channel})"[:REASON_MAX],
        actor=actor,
        now=now,
        pending=True,
        policy=policy,
    )


# --- earning rules ----------------------------------------------------------------------------


@dataclass(slots=True)
class EarningRuleDraft:
    name: str
    points_per_yuan: Decimal = Decimal(1)
    multiplier: Decimal = Decimal(1)
    channel: str | None = None
    store_id: int | None = None
    sku: str | None = None
    level_id: int | None = None
    priority: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    active: bool = True


_RATE_MAX = Decimal(1000)
_MULTIPLIER_MAX = Decimal(100)


async def create_earning_rule(
    session: AsyncSession, principal: Principal, draft: EarningRuleDraft, now: datetime
) -> PointsEarningRule:
    # Earning rules are the brand's programme: set by HQ, whatever scopes a token carries.
    if not principal.is_hq:
        raise DomainError.one(PointsErrorCode.FORBIDDEN, "Only HQ sets earning rules.")
    problems: list[Problem] = []
    if not draft.name or not draft.name.strip() or len(draft.name) > 100:
        problems.append(
            Problem(PointsErrorCode.INVALID, "A name of 1 to 100 characters.", ("name",))
        )
    for name, value, top in (
        ("pointsPerYuan", draft.points_per_yuan, _RATE_MAX),
        ("multiplier", draft.multiplier, _MULTIPLIER_MAX),
    ):
        if (
            not value.is_finite()
            or not Decimal(0) < value <= top
            or value != value.quantize(Decimal("0.0001"))
        ):
            problems.append(
                Problem(
                    PointsErrorCode.INVALID_AMOUNT,
                    f"{name} must be above 0 and at most {top}, with up to 4 decimals.",
                    (name,),
                )
            )
    for name, text_value, limit in (("channel", draft.channel, 32), ("sku", draft.sku, 64)):
        if text_value is not None and (not text_value.strip() or len(text_value) > limit):
            problems.append(
                Problem(
                    PointsErrorCode.INVALID, f"{name}: 1 to {limit} characters, or null.", (name,)
                )
            )
    if not -1000 <= draft.priority <= 1000:
        problems.append(
            Problem(PointsErrorCode.INVALID, "priority is between -1000 and 1000.", ("priority",))
        )
    if draft.starts_at and draft.ends_at and draft.ends_at <= draft.starts_at:
        problems.append(
            Problem(PointsErrorCode.INVALID, "The rule must end after it starts.", ("endsAt",))
        )
    if draft.store_id is not None and await session.get(Store, draft.store_id) is None:
        problems.append(Problem(PointsErrorCode.UNKNOWN_STORE, "No such store.", ("storeId",)))
    if draft.level_id is not None and await session.get(MemberLevel, draft.level_id) is None:
        problems.append(
            Problem(PointsErrorCode.UNKNOWN_LEVEL, "No such member level.", ("levelId",))
        )
    if problems:
        raise DomainError(problems)
    rule = PointsEarningRule(
        name=draft.name.strip(),
        channel=draft.channel,
        store_id=draft.store_id,
        sku=draft.sku,
        level_id=draft.level_id,
        points_per_yuan=draft.points_per_yuan,
        multiplier=draft.multiplier,
        priority=draft.priority,
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
        active=draft.active,
        created_at=now,
    )
    session.add(rule)
    await session.flush()
    return rule


def earning_rules_query(principal: Principal) -> Select[PointsEarningRule]:
    """Rules are programme-wide configuration. HQ sees every rule; anyone else sees the
    rules for all stores and those for their own partner's stores, never another partner's."""
    stmt = select(PointsEarningRule)
    if principal.is_hq:
        return stmt
    own_stores = restrict(select(Store.id), Store, principal)
    if principal.is_member:
        return stmt.where(PointsEarningRule.store_id.is_(None))
    return stmt.where(
        or_(PointsEarningRule.store_id.is_(None), PointsEarningRule.store_id.in_(own_stores))
    )


RULE_KEYSET = (PointsEarningRule.id,)


async def earning_rules_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, PointsEarningRule]:
    stmt = earning_rules_query(principal).where(PointsEarningRule.id.in_(ids))
    return {r.id: r for r in (await session.scalars(stmt)).all()}
