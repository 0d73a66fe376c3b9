"""Members (会员) and member levels (会员等级).

Joining makes a customer a member and records who recruited them (kept for life). Levels
qualify over SPEND (Σ qualifying spend) or POINTS (Σ points earned) in a rolling window:

* upgrades happen at once (``evaluate_level``, called when spend or points arrive);
* downgrades only at the end of a level's period (``review_levels``, a daily job): a member
  who no longer qualifies enters a grace period; still not qualifying when it ends, they
  drop to the best level they do qualify for; qualifying again in grace keeps the level and
  starts a new period;
* a manually set level is a floor: evaluation never places the member below it.

Every change is a ``MemberLevelChange`` row (the history), with its reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import StaffUser
from api.auth.principal import Principal, Role
from api.customers.models import (
    Customer,
    CustomerStatus,
    IdentityKind,
    LevelMetric,
    MemberLevel,
    MemberLevelChange,
    QualifyingSpend,
)
from api.customers.reactions import CustomersWiring, MemberJoined
from api.customers.service import (
    CustomerDraft,
    CustomerErrorCode,
    get_customer,
    lock_customer,
    lock_identities,
    lock_identity_owner,
    normalize_identities,
    require_hq,
    upsert_customer,
)
from api.db import insert_or_get, utcnow
from api.errors import DomainError, Problem
from api.partners.service import stores_by_id

_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
MAX_WINDOW_DAYS = 3660
MAX_GRACE_DAYS = 366
REVIEW_BATCH = 500
_CENT = Decimal("0.01")


class ChangeReason:
    JOIN = "join"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    MANUAL = "manual"
    MERGE = "merge"


# --- level configuration ------------------------------------------------------------------


@dataclass(slots=True)
class LevelDraft:
    code: str
    name: str
    rank: int
    metric: LevelMetric
    threshold: Decimal
    window_days: int = 365
    grace_days: int = 30


@dataclass(slots=True)
class LevelChanges:
    name: str | None = None
    threshold: Decimal | None = None
    window_days: int | None = None
    grace_days: int | None = None


async def all_levels(session: AsyncSession) -> list[MemberLevel]:
    """Every level, lowest rank first (a small table, read whole)."""
    return list(await session.scalars(select(MemberLevel).order_by(MemberLevel.rank)))


def _check_level(
    problems: list[Problem],
    *,
    name: str | None,
    threshold: Decimal | None,
    window_days: int | None,
    grace_days: int | None,
) -> None:
    if name is not None and (not name.strip() or len(name) > 100):
        problems.append(
            Problem(CustomerErrorCode.INVALID, "A name is 1-100 characters.", ("name",))
        )
    if threshold is not None and (
        not threshold.is_finite()
        or threshold < 0
        or threshold >= Decimal("1e12")
        or threshold != threshold.quantize(_CENT)
    ):
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                "A threshold is zero or more, to the cent (yuan for SPEND, points for POINTS).",
                ("threshold",),
            )
        )
    if window_days is not None and not 1 <= window_days <= MAX_WINDOW_DAYS:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                f"The rolling window is 1-{MAX_WINDOW_DAYS} days.",
                ("windowDays",),
            )
        )
    if grace_days is not None and not 0 <= grace_days <= MAX_GRACE_DAYS:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID,
                f"The grace period is 0-{MAX_GRACE_DAYS} days.",
                ("graceDays",),
            )
        )


async def create_level(
    session: AsyncSession, principal: Principal, draft: LevelDraft
) -> MemberLevel:
    require_hq(principal, "configure member levels")
    problems: list[Problem] = []
    if not 1 <= len(draft.code) <= 32 or not set(draft.code) <= _CODE_CHARS:
        problems.append(
            Problem(
                CustomerErrorCode.INVALID, "A code is 1-32 letters, digits, '-' or '_'.", ("code",)
            )
        )
    if not 0 <= draft.rank <= 1000:
        problems.append(
            Problem(CustomerErrorCode.INVALID, "A rank is 0 (entry level) to 1000.", ("rank",))
        )
    _check_level(
        problems,
        name=draft.name,
        threshold=draft.threshold,
        window_days=draft.window_days,
        grace_days=draft.grace_days,
    )
    taken = (
        await session.execute(
            select(MemberLevel.code, MemberLevel.rank).where(
                or_(MemberLevel.code == draft.code, MemberLevel.rank == draft.rank)
            )
        )
    ).all()
    if any(code == draft.code for code, _ in taken):
        problems.append(
            Problem(
                CustomerErrorCode.DUPLICATE_CODE,
                f"The code {draft.code!r} is already taken.",
                ("code",),
            )
        )
    if any(rank == draft.rank for _, rank in taken):
        problems.append(
            Problem(
                CustomerErrorCode.DUPLICATE_RANK,
                f"Another level has rank {draft.rank}.",
                ("rank",),
            )
        )
    if problems:
        raise DomainError(problems)
    level = MemberLevel(
        code=draft.code,
        name=draft.name.strip(),
        rank=draft.rank,
        metric=draft.metric,
        threshold=draft.threshold.quantize(_CENT),
        window_days=draft.window_days,
        grace_days=draft.grace_days,
    )
    session.add(level)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # A concurrent create took the code or the rank between our check and insert.
        raise DomainError.one(
            CustomerErrorCode.DUPLICATE_CODE,
            "Another level with this code or rank was just created.",
            "code",
        ) from None
    return level


async def update_level(
    session: AsyncSession, principal: Principal, level_id: int, changes: LevelChanges
) -> MemberLevel:
    """Rename or retune a level. Members keep their level; a stricter rule takes effect at
    their next period end (downgrades only happen then), a looser one at the next
    evaluation."""
    require_hq(principal, "configure member levels")
    problems: list[Problem] = []
    _check_level(
        problems,
        name=changes.name,
        threshold=changes.threshold,
        window_days=changes.window_days,
        grace_days=changes.grace_days,
    )
    if problems:
        raise DomainError(problems)
    level = await session.scalar(
        select(MemberLevel).where(MemberLevel.id == level_id).with_for_update()
    )
    if level is None:
        raise DomainError.one(CustomerErrorCode.NOT_FOUND, "No such member level.", "id")
    if changes.name is not None:
        level.name = changes.name.strip()
    if changes.threshold is not None:
        level.threshold = changes.threshold.quantize(_CENT)
    for attr in ("window_days", "grace_days"):
        value = getattr(changes, attr)
        if value is not None:
            setattr(level, attr, value)
    await session.flush()
    return level


# --- qualification ------------------------------------------------------------------------


async def qualification(
    session: AsyncSession,
    customer_ids: Sequence[int],
    levels: Sequence[MemberLevel],
    now: datetime,
) -> dict[tuple[LevelMetric, int], dict[int, Decimal]]:
    """(metric, window days) → customer → the amount in that window ending at ``now``.

    One grouped query per distinct rule, however many customers: the review job runs it
    per batch. POINTS counts what was earned (released and pending) less what refunds
    reversed, from the ledger, as SPEND counts refunds as negative spend. An entry's effect
    is ``amount + pending_delta - debt_delta``: an earning that paid down debt credited less
    but earned the whole; a reversal that found the points spent took nothing but left debt.
    """
    from api.loyalty.models import EntryKind, PointsEntry

    result: dict[tuple[LevelMetric, int], dict[int, Decimal]] = {}
    for metric, window in sorted({(lv.metric, lv.window_days) for lv in levels}, key=str):
        since = now - timedelta(days=window)
        if metric is LevelMetric.SPEND:
            stmt = (
                select(QualifyingSpend.customer_id, func.sum(QualifyingSpend.amount))
                .where(
                    QualifyingSpend.customer_id.in_(customer_ids),
                    QualifyingSpend.occurred_at > since,
                    QualifyingSpend.occurred_at <= now,
                )
                .group_by(QualifyingSpend.customer_id)
            )
        else:
            # Ledger entries are never rewritten, so a merged customer's earnings stay under
            # its old id: count them for the customer it was merged into (one hop).
            person = func.coalesce(Customer.merged_into_id, Customer.id)
            stmt = (
                select(
                    person,
                    func.sum(
                        PointsEntry.amount + PointsEntry.pending_delta - PointsEntry.debt_delta
                    ),
                )
                .join(Customer, Customer.id == PointsEntry.customer_id)
                .where(
                    PointsEntry.customer_id.in_(
                        select(Customer.id).where(
                            or_(
                                Customer.id.in_(customer_ids),
                                Customer.merged_into_id.in_(customer_ids),
                            )
                        )
                    ),
                    PointsEntry.kind.in_((EntryKind.EARN, EntryKind.REVERSE)),
                    PointsEntry.created_at > since,
                    PointsEntry.created_at <= now,
                )
                .group_by(person)
            )
        sums: dict[int, Decimal] = defaultdict(Decimal)
        for customer_id, total in await session.execute(stmt):
            sums[customer_id] = Decimal(total or 0)
        result[(metric, window)] = sums
    return result


def best_qualifying(
    customer_id: int,
    levels: Sequence[MemberLevel],
    sums: dict[tuple[LevelMetric, int], dict[int, Decimal]],
) -> MemberLevel | None:
    """The highest level whose rule the customer meets (levels sorted by rank)."""
    best = None
    for level in levels:
        amount = sums[(level.metric, level.window_days)].get(customer_id, Decimal(0))
        if amount >= level.threshold:
            best = level
    return best


def _higher(a: MemberLevel | None, b: MemberLevel | None) -> MemberLevel | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.rank >= b.rank else b


def _period_end(
    level: MemberLevel, levels: Sequence[MemberLevel], start: datetime
) -> datetime | None:
    """When the level next comes up for review; never for the lowest level (nothing below)."""
    if level.rank == levels[0].rank:
        return None
    return start + timedelta(days=level.window_days)


def _change(
    customer: Customer,
    to: MemberLevel | None,
    reason: str,
    actor: str | None,
    now: datetime,
    levels: Sequence[MemberLevel],
) -> MemberLevelChange:
    change = MemberLevelChange(
        customer_id=customer.id,
        from_level_id=customer.level_id,
        to_level_id=to.id if to else None,
        reason=reason,
        actor=actor,
        created_at=now,
    )
    customer.level_id = to.id if to else None
    customer.level_period_ends_at = _period_end(to, levels, now) if to else None
    customer.level_grace_ends_at = None
    customer.updated_at = now
    return change


async def evaluate_level(
    session: AsyncSession, customer_id: int, now: datetime, *, actor: str | None = None
) -> MemberLevelChange | None:
    """Upgrade at once when the member now qualifies for a higher level (or sits below their
    manual floor); a member in grace who qualifies again keeps the level for a new period.
    Never downgrades. Returns the change made, if any."""
    customer = await lock_customer(session, customer_id)
    if customer is None or customer.member_since is None:
        return None
    levels = await all_levels(session)
    if not levels:
        return None
    by_id = {lv.id: lv for lv in levels}
    sums = await qualification(session, [customer.id], levels, now)
    best = best_qualifying(customer.id, levels, sums)
    floor = by_id.get(customer.manual_level_id) if customer.manual_level_id else None
    current = by_id.get(customer.level_id) if customer.level_id else None
    target = _higher(best, floor)
    if target is not None and (current is None or target.rank > current.rank):
        reason = ChangeReason.UPGRADE if target is best else ChangeReason.MANUAL
        change = _change(customer, target, reason, actor, now, levels)
        session.add(change)
        await session.flush()
        return change
    if (
        current is not None
        and customer.level_grace_ends_at is not None
        and best is not None
        and best.rank >= current.rank
    ):
        customer.level_grace_ends_at = None
        customer.level_period_ends_at = _period_end(current, levels, now)
        customer.updated_at = now
        await session.flush()
    return None


async def record_spend(
    session: AsyncSession,
    customer_id: int,
    amount: Decimal,
    *,
    source_type: str,
    source_id: str,
    at: datetime,
    now: datetime | None = None,
) -> bool:
    """Count spend towards levels, once per (source_type, source_id): a retried order adds
    nothing. A refund is a negative amount under its own source id. Recorded on the live
    customer (following merges); an upgrade it earns happens at once (evaluated as of
    ``now``, by default the later of ``at`` and the clock). True when recorded."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise DomainError.one(CustomerErrorCode.INVALID, "Spend is a finite Decimal.", "amount")
    # Locked first (like every writer of customer data): a merge running now either moves
    # this row with the rest or has redirected us to its survivor.
    customer = await lock_customer(session, customer_id)
    if customer is None:
        raise DomainError.one(CustomerErrorCode.NOT_FOUND, "No such customer.", "customerId")
    live_id = customer.id
    _, created = await insert_or_get(
        session,
        QualifyingSpend,
        {
            "customer_id": live_id,
            "amount": amount,
            "source_type": source_type,
            "source_id": source_id,
            "occurred_at": at,
        },
        ["source_type", "source_id"],
    )
    if created and amount > 0:
        await evaluate_level(session, live_id, now or max(at, utcnow()))
    return created


# --- the period-end review ----------------------------------------------------------------


@dataclass(slots=True)
class ReviewSummary:
    reviewed: int = 0
    renewed: int = 0
    upgraded: int = 0
    entered_grace: int = 0
    grace_cleared: int = 0
    downgraded: int = 0

    def add(self, other: ReviewSummary) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _due(now: datetime) -> Any:
    return and_(
        Customer.status == CustomerStatus.ACTIVE,
        Customer.member_since.is_not(None),
        or_(
            and_(Customer.level_grace_ends_at.is_(None), Customer.level_period_ends_at <= now),
            Customer.level_grace_ends_at <= now,
        ),
    )


async def review_levels(
    session: AsyncSession, now: datetime, *, limit: int | None = REVIEW_BATCH
) -> ReviewSummary:
    """Review the members whose level period (or grace) has ended by ``now``; at most
    ``limit`` of them (the CLI commits batch by batch until none is due).

    Qualifying still (or again): a new period. Not qualifying at period end: grace until
    period end + the level's grace days. Not qualifying when grace ends: down to the best
    level they qualify for, never below their manual floor.
    """
    summary = ReviewSummary()
    levels = await all_levels(session)
    if not levels:
        return summary
    by_id = {lv.id: lv for lv in levels}
    stmt = select(Customer).where(_due(now)).order_by(Customer.id).with_for_update()
    if limit is not None:
        stmt = stmt.limit(limit)
    members = list(await session.scalars(stmt.execution_options(populate_existing=True)))
    if not members:
        return summary
    sums = await qualification(session, [m.id for m in members], levels, now)
    for customer in members:
        summary.reviewed += 1
        current = by_id.get(customer.level_id) if customer.level_id else None
        floor = by_id.get(customer.manual_level_id) if customer.manual_level_id else None
        # Never below the floor, nor below the entry level: a member always has a level.
        target = _higher(_higher(best_qualifying(customer.id, levels, sums), floor), levels[0])
        if current is None or (target is not None and target.rank >= current.rank):
            if target is not None and (current is None or target.rank > current.rank):
                session.add(_change(customer, target, ChangeReason.UPGRADE, None, now, levels))
                summary.upgraded += 1
                continue
            if customer.level_grace_ends_at is not None:
                summary.grace_cleared += 1
            else:
                summary.renewed += 1
            customer.level_grace_ends_at = None
            customer.level_period_ends_at = _next_period(customer, current, levels, now)
            customer.updated_at = now
            continue
        if customer.level_grace_ends_at is None:
            assert customer.level_period_ends_at is not None
            grace_end = customer.level_period_ends_at + timedelta(days=current.grace_days)
            if grace_end > now:
                customer.level_grace_ends_at = grace_end
                customer.updated_at = now
                summary.entered_grace += 1
                continue
        # Grace is over (or there was none): down to what they qualify for.
        session.add(_change(customer, target, ChangeReason.DOWNGRADE, None, now, levels))
        summary.downgraded += 1
    await session.flush()
    return summary


def _next_period(
    customer: Customer, level: MemberLevel | None, levels: Sequence[MemberLevel], now: datetime
) -> datetime | None:
    """Periods follow each other from the last one's end (a late job does not shift them),
    but always end in the future."""
    if level is None:
        return None
    end = customer.level_period_ends_at
    if end is None or _period_end(level, levels, now) is None:
        return _period_end(level, levels, now)
    step = timedelta(days=level.window_days)
    while end <= now:
        end += step
    return end


# --- membership -----------------------------------------------------------------------------


ALREADY_MEMBER_MESSAGE = "This customer is a member already."
ONE_PHONE_MESSAGE = (
    "Enrol by one phone number; WeChat and other identities come from the member's own login."
)


@dataclass(slots=True)
class JoinRequest:
    """Who joins: an existing customer by id, or find-or-create by identities (a store clerk
    enrolling a walk-in by phone). Where: the recruiting store (implied for store staff) and
    optionally the guide (导购), a staff user of that store.

    Outside HQ the identities are exactly one phone number (see ``join``)."""

    customer_id: int | None = None
    draft: CustomerDraft | None = None
    store_id: int | None = None
    guide_id: int | None = None


def _guide_of(principal: Principal) -> int | None:
    """A store clerk recruiting in person is the guide."""
    if principal.role is not Role.STORE_STAFF:
        return None
    kind, _, number = principal.subject.partition(":")
    return int(number) if kind == "user" and number.isdigit() else None


def _counter_draft(draft: CustomerDraft) -> CustomerDraft:
    """The draft a partner, store or partner integration may enrol with: exactly one phone
    number, a name and consents, filling blanks only.

    Nobody has proven to the caller that the person at the counter owns anything but the
    number they give, and even that only by saying it: attaching a second identity to the
    customer the phone finds would let a clerk add their own phone (or WeChat) to someone
    else's account and then log in as them. So a counter enrolment never attaches an
    identity to a customer on file; the phone is attached only to a customer it creates.
    """
    if len(draft.identities) != 1 or draft.identities[0][0] is not IdentityKind.PHONE:
        raise DomainError.one(CustomerErrorCode.INVALID, ONE_PHONE_MESSAGE, "identities")
    extras = (
        draft.gender,
        draft.birthday,
        draft.contact_phone,
        draft.contact_email,
        draft.attributes,
        draft.unionid_hint,
    )
    if any(value is not None for value in extras) or draft.tags:
        # Not reachable through memberJoin (its input has no such fields): a programming
        # error in a caller, refused rather than silently dropped.
        raise DomainError.one(
            CustomerErrorCode.FORBIDDEN,
            "A store enrolment records a phone number, a name and consents only.",
        )
    return CustomerDraft(
        identities=normalize_identities(draft.identities),
        name=draft.name,
        first_channel=draft.first_channel,
        consents=draft.consents,
        # Partners enrol; they do not overwrite what HQ or the member keeps on file.
        fill_only=True,
    )


async def _enrol_by_phone(
    session: AsyncSession, draft: CustomerDraft, actor: str, now: datetime
) -> Customer:
    """A counter enrolment (``draft`` from ``_counter_draft``): the customer the phone
    names if they are not a member yet, else a new customer with that phone.

    The member check comes before anything is written, and answers the same whoever
    recruited them: that the phone is a member's is a fact of the brand, the one thing a
    store learns about a phone it did not enrol.
    """
    (phone,) = draft.identities
    # Held to the end of the transaction: a concurrent enrolment or login of the same phone
    # waits, then finds the customer (and the membership) this one commits.
    await lock_identities(session, [phone])
    owner = await lock_identity_owner(session, phone)
    if owner is not None and owner.member_since is not None:
        raise DomainError.one(
            CustomerErrorCode.ALREADY_MEMBER, ALREADY_MEMBER_MESSAGE, "identities"
        )
    upserted = await upsert_customer(session, draft, actor=actor, now=now)
    if upserted.attached and not upserted.created:  # pragma: no cover - one identity, owned
        raise RuntimeError("a counter enrolment attached an identity to a customer on file")
    return upserted.customer


async def join(
    session: AsyncSession,
    principal: Principal,
    request: JoinRequest,
    *,
    wiring: CustomersWiring,
    now: datetime | None = None,
) -> Customer:
    """``memberJoin``: make a customer a member, recruited by a store (and guide).

    A store principal's store (and, for a clerk, the guide) are implied; HQ and partner
    callers name a store within their scope. By ``customer_id`` the customer must be one
    the caller may see. By identities, HQ finds or creates the customer and attaches the
    identities not on file; anyone else gives exactly one phone number (``_counter_draft``):
    a customer on file with it who is not a member yet becomes this store's member (and
    from then on the store sees them), otherwise a new customer is created with it.

    A customer who is a member already is refused with ALREADY_MEMBER, with the same
    message whichever store recruited them. The entry level (lowest rank) is set when
    levels exist, then past spend may upgrade at once.
    """
    now = now or utcnow()
    if principal.is_member:
        raise DomainError.one(CustomerErrorCode.FORBIDDEN, "Members cannot enrol members.")
    if (request.customer_id is None) == (request.draft is None):
        raise DomainError.one(
            CustomerErrorCode.REQUIRED,
            "Name the customer: either customerId or identities.",
            "customerId",
        )
    # The input's shape is checked before any store, guide or customer is looked up.
    counter_draft = (
        _counter_draft(request.draft) if request.draft is not None and not principal.is_hq else None
    )
    store_id = request.store_id
    if principal.store_id is not None:
        if store_id is not None and store_id != principal.store_id:
            raise DomainError.one(
                CustomerErrorCode.UNKNOWN_STORE, "You recruit for your own store.", "storeId"
            )
        store_id = principal.store_id
    if store_id is None:
        raise DomainError.one(CustomerErrorCode.REQUIRED, "Name the recruiting store.", "storeId")
    store = (await stores_by_id(session, principal, [store_id])).get(store_id)
    if store is None:
        raise DomainError.one(CustomerErrorCode.UNKNOWN_STORE, "No such store.", "storeId")
    guide_id = request.guide_id
    implied = guide_id is None and principal.store_id is not None
    if implied:
        guide_id = _guide_of(principal)
    if guide_id is not None:
        guide = await session.scalar(
            select(StaffUser.id).where(
                StaffUser.id == guide_id, StaffUser.store_id == store.id, StaffUser.is_active
            )
        )
        if guide is None:
            if not implied:
                raise DomainError.one(
                    CustomerErrorCode.UNKNOWN_GUIDE,
                    "The guide must be an active staff user of the recruiting store.",
                    "guideId",
                )
            guide_id = None  # a token whose user is not at this store: no implied guide

    if counter_draft is not None:
        customer = await _enrol_by_phone(session, counter_draft, principal.subject, now)
    elif request.draft is not None:
        upserted = await upsert_customer(session, request.draft, actor=principal.subject, now=now)
        customer = upserted.customer
        if customer.member_since is not None:
            raise DomainError.one(
                CustomerErrorCode.ALREADY_MEMBER, ALREADY_MEMBER_MESSAGE, "identities"
            )
    else:
        assert request.customer_id is not None
        customer = await get_customer(session, principal, request.customer_id, lock=True)
        if customer.member_since is not None:
            raise DomainError.one(
                CustomerErrorCode.ALREADY_MEMBER, ALREADY_MEMBER_MESSAGE, "customerId"
            )
    customer.member_since = now
    customer.recruited_store_id = store.id
    customer.recruited_partner_id = store.partner_id
    customer.recruited_guide_id = guide_id
    customer.updated_at = now
    levels = await all_levels(session)
    if levels:
        session.add(_change(customer, levels[0], ChangeReason.JOIN, principal.subject, now, levels))
    await session.flush()
    await evaluate_level(session, customer.id, now, actor=principal.subject)
    await wiring.member_joined(
        session, MemberJoined(customer.id, store.id, store.partner_id, guide_id, now)
    )
    return customer


async def set_manual_level(
    session: AsyncSession,
    principal: Principal,
    customer_id: int,
    level_id: int | None,
    *,
    now: datetime | None = None,
) -> Customer:
    """``memberLevelSet``: a floor the member never drops below (None clears it). A floor
    above the current level lifts the member to it now; clearing it changes nothing until
    the next period end."""
    now = now or utcnow()
    customer = await get_customer(session, principal, customer_id, lock=True)
    if customer.member_since is None:
        raise DomainError.one(
            CustomerErrorCode.NOT_A_MEMBER, "This customer has not joined.", "customerId"
        )
    levels = await all_levels(session)
    by_id = {lv.id: lv for lv in levels}
    level = None
    if level_id is not None:
        level = by_id.get(level_id)
        if level is None:
            raise DomainError.one(
                CustomerErrorCode.UNKNOWN_LEVEL, "No such member level.", "levelId"
            )
    customer.manual_level_id = level.id if level else None
    customer.updated_at = now
    current = by_id.get(customer.level_id) if customer.level_id else None
    if level is not None and (current is None or level.rank > current.rank):
        session.add(_change(customer, level, ChangeReason.MANUAL, principal.subject, now, levels))
    elif level is not None and customer.level_grace_ends_at is not None and current is not None:
        # The floor holds the member at (or above) it: no pending downgrade below it.
        if level.rank >= current.rank:
            customer.level_grace_ends_at = None
            customer.level_period_ends_at = _period_end(current, levels, now)
    await session.flush()
    return customer
