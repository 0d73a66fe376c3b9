"""The customers domain's own part of a merge: what moves of identities, tags, consents,
profile, attributes, membership, levels and spend, decided once (``plan_customer_data``, which
the preview shows) and then written (``move_customer_data``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.merge_steps import MergeConflict, MergeMove
from api.customers.models import (
    ConsentPurpose,
    Customer,
    CustomerConsent,
    CustomerIdentity,
    CustomerTag,
    MemberLevel,
    MemberLevelChange,
    QualifyingSpend,
)
from api.customers.qualification import ChangeReason
from api.partners.models import Store

_PROFILE = ("name", "gender", "birthday", "contact_phone", "contact_email")
_FIELD_NAMES = {
    "name": "name",
    "gender": "gender",
    "birthday": "birthday",
    "contact_phone": "contactPhone",
    "contact_email": "contactEmail",
}


@dataclass(slots=True)
class CustomerDataPlan:
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


async def plan_customer_data(
    session: AsyncSession, target: Customer, sources: list[Customer]
) -> CustomerDataPlan:
    """What the customers domain's part of the merge of ``sources`` into ``target`` moves,
    and the conflicts it resolves by rule."""
    plan = CustomerDataPlan()
    everyone = [target, *sorted(sources, key=lambda c: c.id)]
    source_ids = [s.id for s in sources]
    await _plan_identities(session, plan, source_ids)
    await _plan_tags(session, plan, target, source_ids)
    await _plan_consents(session, plan, target, source_ids)
    _plan_profile(plan, target, everyone)
    _plan_attributes(plan, target, everyone)
    _plan_first_contact(plan, everyone)
    await _plan_membership(session, plan, target, everyone)
    await _plan_history(session, plan, source_ids)
    return plan


async def _plan_identities(
    session: AsyncSession, plan: CustomerDataPlan, source_ids: list[int]
) -> None:
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


async def _plan_tags(
    session: AsyncSession, plan: CustomerDataPlan, target: Customer, source_ids: list[int]
) -> None:
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


async def _plan_consents(
    session: AsyncSession, plan: CustomerDataPlan, target: Customer, source_ids: list[int]
) -> None:
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


def _plan_profile(plan: CustomerDataPlan, target: Customer, everyone: list[Customer]) -> None:
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


def _plan_attributes(plan: CustomerDataPlan, target: Customer, everyone: list[Customer]) -> None:
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


def _plan_first_contact(plan: CustomerDataPlan, everyone: list[Customer]) -> None:
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


async def _plan_history(
    session: AsyncSession, plan: CustomerDataPlan, source_ids: list[int]
) -> None:
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


async def _plan_membership(
    session: AsyncSession, plan: CustomerDataPlan, target: Customer, everyone: list[Customer]
) -> None:
    """The earliest membership wins (its recruiting store, partner and guide), then the
    levels (``_plan_levels``)."""
    members = [c for c in everyone if c.member_since is not None]
    if not members:
        return
    first = min(members, key=lambda c: (c.member_since, c.id))
    if first is not target:
        plan.membership_from = first
        plan.moves.append(MergeMove("membership", 1, "recruitment of the earliest membership"))
    stores = {c.recruited_store_id for c in members}
    if len(stores) > 1:
        codes: dict[int | None, str] = dict(
            (
                await session.execute(
                    select(Store.id, Store.code).where(Store.id.in_(s for s in stores if s))
                )
            ).all()
        )
        kept = codes.get(first.recruited_store_id, "none")
        listed = ", ".join(
            # Every member has a member_since (filtered above); mypy cannot see it.
            f"{codes.get(c.recruited_store_id, 'none')} ({c.member_since.date().isoformat()})"  # type: ignore[union-attr]
            for c in sorted(members, key=lambda c: (c.member_since, c.id))
        )
        plan.conflicts.append(
            MergeConflict(
                "recruitedStore",
                f"Recruited by different stores: {listed}; the earliest recruitment wins: {kept}.",
            )
        )
    await _plan_levels(session, plan, target, members)


async def _plan_levels(
    session: AsyncSession, plan: CustomerDataPlan, target: Customer, members: list[Customer]
) -> None:
    """The highest level wins (a tie keeps the target's), and the highest manual floor."""
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
    with_level = [(c, c.level_id) for c in members if c.level_id]
    if with_level:
        best, best_level = max(
            with_level, key=lambda pair: (ranks[pair[1]], pair[0] is target, -pair[0].id)
        )
        if best_level != target.level_id:
            plan.level_from = best
            plan.moves.append(MergeMove("level", 1, f"level {codes[best_level]}"))
        if len({level for _, level in with_level}) > 1:
            plan.conflicts.append(
                MergeConflict(
                    "level",
                    "Levels differ ("
                    + ", ".join(sorted({codes[level] for _, level in with_level}))
                    + f"); the higher wins: {codes[best_level]}.",
                )
            )
    floors = [c.manual_level_id for c in members if c.manual_level_id]
    if floors:
        plan.manual_level_id = max(floors, key=lambda i: ranks[i])


async def move_customer_data(
    session: AsyncSession,
    plan: CustomerDataPlan,
    target: Customer,
    sources: list[Customer],
    actor: str | None,
    now: datetime,
) -> None:
    """Write what ``plan`` decided: the sources' identities, tags, consents, spend and level
    history move to the target, and the target takes the profile gaps and membership."""
    source_ids = [s.id for s in sources]
    await _move_identities_tags_consents(session, plan, target, source_ids, now)
    _take_profile_and_membership(plan, target)
    await _move_levels_and_spend(session, plan, target, source_ids, actor, now)
    target.updated_at = now
    await session.flush()


async def _move_identities_tags_consents(
    session: AsyncSession,
    plan: CustomerDataPlan,
    target: Customer,
    source_ids: list[int],
    now: datetime,
) -> None:
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


def _take_profile_and_membership(plan: CustomerDataPlan, target: Customer) -> None:
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


async def _move_levels_and_spend(
    session: AsyncSession,
    plan: CustomerDataPlan,
    target: Customer,
    source_ids: list[int],
    actor: str | None,
    now: datetime,
) -> None:
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
                reason=ChangeReason.MERGE,
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
