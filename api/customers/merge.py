"""Merging duplicate customers, and finding them.

A merge moves everything of the source customers onto the target in ONE transaction: the
customers domain locks the rows (ascending id, like every other writer of several
customers), moves identities, tags, consents, profile gaps, membership and level history,
then runs every domain's registered step (points, coupons, orders ...), then marks the
sources MERGED with a redirect so their old ids keep resolving. The preview (dry run) is
computed by the very code the merge runs, so it lists exactly what the merge then does.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers import levels as level_rules
from api.customers.merging import MergeConflict, MergeMove, MergePlan
from api.customers.models import (
    ConsentPurpose,
    Customer,
    CustomerConsent,
    CustomerIdentity,
    CustomerStatus,
    CustomerTag,
    IdentityKind,
    MemberLevel,
    MemberLevelChange,
    QualifyingSpend,
)
from api.customers.reactions import CustomersWiring
from api.customers.service import CustomerErrorCode, get_customer, require_hq
from api.db import utcnow
from api.errors import DomainError, Problem
from api.partners.models import Store

MAX_SOURCES = 10
_PROFILE = ("name", "gender", "birthday", "contact_phone", "contact_email")
_FIELD_NAMES = {
    "name": "name",
    "gender": "gender",
    "birthday": "birthday",
    "contact_phone": "contactPhone",
    "contact_email": "contactEmail",
}


@dataclass(slots=True)
class MergeOutcome:
    target: Customer
    source_ids: list[int]
    moves: list[MergeMove]
    conflicts: list[MergeConflict]
    dry_run: bool


@dataclass(slots=True)
class _Resolution:
    """What the customers domain's part of a merge will write, decided once."""

    moves: list[MergeMove] = field(default_factory=list)
    conflicts: list[MergeConflict] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    consents: dict[ConsentPurpose, CustomerConsent] = field(default_factory=dict)
    tags_to_add: list[str] = field(default_factory=list)
    membership_from: Customer | None = None
    level_from: Customer | None = None
    manual_level_id: int | None = None
    first_channel: str | None = None
    created_at: datetime | None = None


def _check_ids(target_id: int, source_ids: Sequence[int]) -> None:
    problems: list[Problem] = []
    if not source_ids:
        problems.append(
            Problem(CustomerErrorCode.REQUIRED, "Name at least one source.", ("sourceIds",))
        )
    if len(source_ids) > MAX_SOURCES:
        problems.append(
            Problem(
                CustomerErrorCode.MERGE_INVALID,
                f"At most {MAX_SOURCES} sources per merge.",
                ("sourceIds",),
            )
        )
    seen: set[int] = set()
    for index, source in enumerate(source_ids):
        if source == target_id:
            problems.append(
                Problem(
                    CustomerErrorCode.MERGE_INVALID,
                    "A customer cannot be merged into itself.",
                    ("sourceIds", str(index)),
                )
            )
        elif source in seen:
            problems.append(
                Problem(
                    CustomerErrorCode.MERGE_INVALID,
                    "This source is listed twice.",
                    ("sourceIds", str(index)),
                )
            )
        seen.add(source)
    if problems:
        raise DomainError(problems)


async def _lock(
    session: AsyncSession, principal: Principal, target_id: int, source_ids: Sequence[int]
) -> tuple[Customer, list[Customer]]:
    """Lock target and sources in ascending id order (every multi-customer writer does, so
    two merges never deadlock); refuse missing, invisible or already merged ones."""
    stmt = (
        select(Customer)
        .where(Customer.id.in_([target_id, *source_ids]))
        .order_by(Customer.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rows = {c.id: c for c in await session.scalars(restrict(stmt, Customer, principal))}
    problems: list[Problem] = []
    paths = [(target_id, ("targetId",))] + [
        (s, ("sourceIds", str(i))) for i, s in enumerate(source_ids)
    ]
    for customer_id, path in paths:
        row = rows.get(customer_id)
        if row is None:
            problems.append(Problem(CustomerErrorCode.NOT_FOUND, "No such customer.", path))
        elif row.status is CustomerStatus.MERGED:
            problems.append(
                Problem(
                    CustomerErrorCode.MERGE_INVALID,
                    "This customer was merged already; its id redirects to the survivor.",
                    path,
                )
            )
    if problems:
        raise DomainError(problems)
    return rows[target_id], [rows[s] for s in source_ids]


async def _resolve(session: AsyncSession, target: Customer, sources: list[Customer]) -> _Resolution:
    plan = _Resolution()
    everyone = [target, *sorted(sources, key=lambda c: c.id)]
    source_ids = [s.id for s in sources]

    # Identities: all move (they are unique per kind, so they cannot collide).
    kinds = Counter(
        kind
        for kind in await session.scalars(
            select(CustomerIdentity.kind).where(CustomerIdentity.customer_id.in_(source_ids))
        )
    )
    if kinds:
        described = ", ".join(f"{n} {k.value}" for k, n in sorted(kinds.items(), key=str))
        plan.moves.append(MergeMove("identities", sum(kinds.values()), described))

    # Tags: the union.
    have = set(
        await session.scalars(select(CustomerTag.tag).where(CustomerTag.customer_id == target.id))
    )
    incoming = sorted(
        set(
            await session.scalars(
                select(CustomerTag.tag).where(CustomerTag.customer_id.in_(source_ids))
            )
        )
        - have
    )
    plan.tags_to_add = incoming
    if incoming:
        plan.moves.append(MergeMove("tags", len(incoming), ", ".join(incoming)))

    # Consents: per purpose the latest decision wins (a tie keeps the target's).
    decisions: dict[ConsentPurpose, list[CustomerConsent]] = {}
    for row in await session.scalars(
        select(CustomerConsent)
        .where(CustomerConsent.customer_id.in_([target.id, *source_ids]))
        .order_by(CustomerConsent.customer_id)
    ):
        decisions.setdefault(row.purpose, []).append(row)
    moved_consents = 0
    for purpose, rows in sorted(decisions.items(), key=lambda kv: kv[0].value):
        winner = max(rows, key=lambda r: (r.decided_at, r.customer_id == target.id))
        if winner.customer_id != target.id:
            plan.consents[purpose] = winner
            moved_consents += 1
        if len({r.granted for r in rows}) > 1:
            verdict = "granted" if winner.granted else "withdrawn"
            plan.conflicts.append(
                MergeConflict(
                    f"consents.{purpose.value}",
                    f"Decisions differ; the latest ({winner.decided_at.isoformat()}, "
                    f"{winner.source}) wins: {verdict}.",
                )
            )
    if moved_consents:
        plan.moves.append(
            MergeMove("consents", moved_consents, "later consent decisions of the sources")
        )

    # Profile: the target's values win; blanks are filled from the sources (lowest id first).
    # Conflict messages name the field, never the personal data.
    for attr in _PROFILE:
        values = [getattr(c, attr) for c in everyone if getattr(c, attr) is not None]
        if getattr(target, attr) is None and values:
            plan.profile[attr] = values[0]
        if len(set(values)) > 1:
            plan.conflicts.append(
                MergeConflict(
                    _FIELD_NAMES[attr], "The customers differ here; the target's value is kept."
                )
            )
    filled = [_FIELD_NAMES[a] for a in plan.profile]
    if filled:
        plan.moves.append(MergeMove("profile", len(filled), "fills " + ", ".join(filled)))

    # Attributes: shallow union, the target wins a key both have (then the lowest source id).
    merged = dict(target.attributes or {})
    added: list[str] = []
    for source in everyone[1:]:
        for key, value in (source.attributes or {}).items():
            if key not in merged:
                merged[key] = value
                added.append(key)
            elif merged[key] != value:
                plan.conflicts.append(
                    MergeConflict(f"attributes.{key}", "Values differ; the target's value is kept.")
                )
    plan.attributes = merged
    if added:
        plan.moves.append(MergeMove("attributes", len(added), ", ".join(sorted(added))))

    # The first contact is the earliest customer's.
    earliest = min(everyone, key=lambda c: (c.created_at, c.id))
    plan.created_at = earliest.created_at
    channels = [
        c.first_channel
        for c in sorted(everyone, key=lambda c: (c.created_at, c.id))
        if c.first_channel
    ]
    plan.first_channel = channels[0] if channels else None
    if len(set(channels)) > 1:
        plan.conflicts.append(
            MergeConflict(
                "firstChannel", f"Channels differ; the earliest contact wins: {channels[0]}."
            )
        )

    await _resolve_membership(session, plan, target, everyone)

    # Spend and level history follow the person.
    spend = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(QualifyingSpend.amount), 0)).where(
                QualifyingSpend.customer_id.in_(source_ids)
            )
        )
    ).one()
    if spend[0]:
        plan.moves.append(MergeMove("spend", spend[0], f"{Decimal(spend[1]):.2f} qualifying spend"))
    history = await session.scalar(
        select(func.count())
        .select_from(MemberLevelChange)
        .where(MemberLevelChange.customer_id.in_(source_ids))
    )
    if history:
        plan.moves.append(MergeMove("levelHistory", history, "level changes of the sources"))
    return plan


async def _resolve_membership(
    session: AsyncSession, plan: _Resolution, target: Customer, everyone: list[Customer]
) -> None:
    members = [c for c in everyone if c.member_since is not None]
    if not members:
        return
    first = min(members, key=lambda c: (c.member_since, c.id))
    if first is not target:
        plan.membership_from = first
        plan.moves.append(MergeMove("membership", 1, "recruitment of the earliest membership"))
    stores = {c.recruited_store_id for c in members}
    if len(stores) > 1:
        codes = dict(
            (
                await session.execute(
                    select(Store.id, Store.code).where(Store.id.in_(s for s in stores if s))
                )
            ).all()
        )
        kept = codes.get(first.recruited_store_id, "none")
        listed = ", ".join(
            f"{codes.get(c.recruited_store_id, 'none')} ({c.member_since.date().isoformat()})"  # type: ignore[union-attr]
            for c in sorted(members, key=lambda c: (c.member_since, c.id))
        )
        plan.conflicts.append(
            MergeConflict(
                "recruitedStore",
                f"Recruited by different stores: {listed}; the earliest recruitment wins: {kept}.",
            )
        )
    level_ids = {c.level_id for c in members if c.level_id} | {
        c.manual_level_id for c in members if c.manual_level_id
    }
    ranks = (
        dict(
            (
                await session.execute(
                    select(MemberLevel.id, MemberLevel.rank).where(MemberLevel.id.in_(level_ids))
                )
            ).all()
        )
        if level_ids
        else {}
    )
    codes = (
        dict(
            (
                await session.execute(
                    select(MemberLevel.id, MemberLevel.code).where(MemberLevel.id.in_(level_ids))
                )
            ).all()
        )
        if level_ids
        else {}
    )
    with_level = [c for c in members if c.level_id]
    if with_level:
        best = max(with_level, key=lambda c: (ranks[c.level_id], c is target, -c.id))
        if best.level_id != target.level_id:
            plan.level_from = best
            plan.moves.append(MergeMove("level", 1, f"level {codes[best.level_id]}"))
        if len({c.level_id for c in with_level}) > 1:
            plan.conflicts.append(
                MergeConflict(
                    "level",
                    "Levels differ ("
                    + ", ".join(sorted({codes[c.level_id] for c in with_level}))
                    + f"); the higher wins: {codes[best.level_id]}.",
                )
            )
    floors = [c.manual_level_id for c in members if c.manual_level_id]
    if floors:
        plan.manual_level_id = max(floors, key=lambda i: ranks[i])


async def _apply(
    session: AsyncSession,
    plan: _Resolution,
    target: Customer,
    sources: list[Customer],
    actor: str | None,
    now: datetime,
) -> None:
    source_ids = [s.id for s in sources]
    await session.execute(
        update(CustomerIdentity)
        .where(CustomerIdentity.customer_id.in_(source_ids))
        .values(customer_id=target.id),
        execution_options={"synchronize_session": False},
    )
    session.add_all(
        CustomerTag(customer_id=target.id, tag=t, created_at=now) for t in plan.tags_to_add
    )
    await session.execute(delete(CustomerTag).where(CustomerTag.customer_id.in_(source_ids)))
    if plan.consents:
        current = {
            c.purpose: c
            for c in await session.scalars(
                select(CustomerConsent).where(CustomerConsent.customer_id == target.id)
            )
        }
        for purpose, winner in plan.consents.items():
            row = current.get(purpose)
            if row is None:
                session.add(
                    CustomerConsent(
                        customer_id=target.id,
                        purpose=purpose,
                        granted=winner.granted,
                        source=winner.source,
                        decided_at=winner.decided_at,
                    )
                )
            else:
                row.granted, row.source, row.decided_at = (
                    winner.granted,
                    winner.source,
                    winner.decided_at,
                )
    await session.flush()
    await session.execute(
        delete(CustomerConsent).where(CustomerConsent.customer_id.in_(source_ids)),
        execution_options={"synchronize_session": False},
    )
    for attr, value in plan.profile.items():
        setattr(target, attr, value)
    target.attributes = plan.attributes
    target.first_channel = plan.first_channel
    if plan.created_at is not None:
        target.created_at = plan.created_at
    if plan.membership_from is not None:
        origin = plan.membership_from
        target.member_since = origin.member_since
        target.recruited_partner_id = origin.recruited_partner_id
        target.recruited_store_id = origin.recruited_store_id
        target.recruited_guide_id = origin.recruited_guide_id
    target.manual_level_id = (
        plan.manual_level_id if plan.manual_level_id else target.manual_level_id
    )
    # History first (it keeps its ids and times), then the merge's own change on top.
    await session.execute(
        update(MemberLevelChange)
        .where(MemberLevelChange.customer_id.in_(source_ids))
        .values(customer_id=target.id),
        execution_options={"synchronize_session": False},
    )
    if plan.level_from is not None:
        origin = plan.level_from
        session.add(
            MemberLevelChange(
                customer_id=target.id,
                from_level_id=target.level_id,
                to_level_id=origin.level_id,
                reason=level_rules.ChangeReason.MERGE,
                actor=actor,
                created_at=now,
            )
        )
        target.level_id = origin.level_id
        target.level_period_ends_at = origin.level_period_ends_at
        target.level_grace_ends_at = origin.level_grace_ends_at
    await session.execute(
        update(QualifyingSpend)
        .where(QualifyingSpend.customer_id.in_(source_ids))
        .values(customer_id=target.id),
        execution_options={"synchronize_session": False},
    )
    target.updated_at = now
    await session.flush()


async def merge_customers(
    session: AsyncSession,
    principal: Principal,
    target_id: int,
    source_ids: Sequence[int],
    *,
    dry_run: bool,
    wiring: CustomersWiring,
    now: datetime | None = None,
) -> MergeOutcome:
    """``customersMerge``: preview (``dry_run``) or merge ``source_ids`` into ``target_id``.

    Everything happens in the caller's one transaction; any failure rolls it all back.
    """
    require_hq(principal, "merge customers")
    now = now or utcnow()
    _check_ids(target_id, source_ids)
    target, sources = await _lock(session, principal, target_id, source_ids)
    own = await _resolve(session, target, sources)
    plan = MergePlan(
        session=session,
        target_id=target.id,
        source_ids=[s.id for s in sources],
        actor=principal.subject,
        now=now,
    )
    moves, conflicts = list(own.moves), list(own.conflicts)
    steps = wiring.merge_steps
    for step in steps:
        step_moves, step_conflicts = await step.preview(plan)
        moves += step_moves
        conflicts += step_conflicts
    outcome = MergeOutcome(target, plan.source_ids, moves, conflicts, dry_run)
    if dry_run:
        return outcome

    await _apply(session, own, target, sources, principal.subject, now)
    for step in steps:
        await step.apply(plan)
    for source in sources:
        source.status = CustomerStatus.MERGED
        source.merged_into_id = target.id
        # The survivor holds the membership now; a merged row must not count twice.
        source.member_since = None
        source.level_id = None
        source.manual_level_id = None
        source.level_period_ends_at = None
        source.level_grace_ends_at = None
        source.updated_at = now
    await session.flush()
    # Customers merged into a source earlier now redirect straight to the target (one hop).
    await session.execute(
        update(Customer)
        .where(Customer.merged_into_id.in_(plan.source_ids))
        .values(merged_into_id=target.id, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    # The combined spend and points may qualify for more.
    await level_rules.evaluate_level(session, target.id, now, actor=principal.subject)
    await session.refresh(target)
    return outcome


# --- duplicate detection --------------------------------------------------------------------


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
