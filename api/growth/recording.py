"""Recording touchpoints (触点): ``touchpointRecord`` and ``touchpointsRecord``. What Qudao
records itself is ``system_touches.py``, reading them back ``reads.py``, the funnel
``funnel.py``.

Who records what
----------------
* Callers (``touchpointRecord``, ``touchpointsRecord``): the engagement steps a channel sees
  (a marketplace purchase reported by a partner's shop, a package-insert QR scan, a WeCom
  friend added, a community joined). HQ may also backfill the three steps Qudao records
  itself (SYSTEM_STEPS): a partner claiming a first order without an order would inflate its
  own funnel. A partner records for itself (its partner id, its stores, its staff as guides);
  store staff for their store.
* Qudao itself (recorded_scope "system"): MEMBER_REGISTERED when ``memberJoin`` makes a
  customer a member, FIRST_ORDER / REPURCHASE for counted private-domain orders and
  MARKETPLACE_PURCHASE for marketplace orders (orderCreate and the import, via the order
  hook). Event ids "member:<customer id>" and "order:<order id>". An order's touch lasts
  while the order counts: cancelled, expired or wholly refunded, it is deleted.

Attribution (last_touch, api/analytics) follows only ``attributable_touch``: Qudao's own
touches, HQ's, and those of the partner that recruited the customer.

Idempotency: one touchpoint per (recorded_scope, event_id); the scope is whose event ids
they are ("hq", "partner:<id>", "store:<id>" for store-bound callers, like order idempotency
keys, so two stores' ids never collide, or "system"). A retry returns the first touchpoint
(created: false); the same id with a different payload is EVENT_ID_REUSED. The unique
constraint decides races: INSERT ... ON CONFLICT DO NOTHING, then the loser reads the winner.

Customers are named by id (one the caller may see) or by identities. By identities HQ upserts
as ``customerUpsert`` does (finds or creates, attaches the identities not on file); anyone
else finds the customer the identities name, or creates one with them, but never attaches an
identity to a customer on file: as for a counter enrolment (api/customers/membership.py
``_counter_draft``), a phone or WeChat id attached by a partner would let whoever holds it
sign in as someone else.

A batch (``record_touchpoints``, at most MAX_BATCH items) costs a fixed number of statements
for items that name known customers: the events on file, the stores, guides, partners,
customers by id and by identity (one statement each, only when some item needs it) and one
INSERT for every new touchpoint; a read-back only when a concurrent writer won an event id.
An item that introduces a new customer (or, for HQ, a new identity) goes through
``upsert_customer`` on its own, in a savepoint, so its failure leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import StaffUser
from api.auth.principal import Principal
from api.customers.identities import normalize_identities
from api.customers.lookup import customers_by_id
from api.customers.models import Customer, CustomerIdentity, CustomerStatus, IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.upsert import upsert_customer
from api.db import dialect_insert
from api.errors import DomainError, Problem
from api.growth.errors import GrowthErrorCode
from api.growth.models import HQ_SCOPE, Touchpoint, TouchpointStep
from api.partners.service import partners_by_id, stores_by_id

# The steps Qudao records itself (memberJoin, orders); callers other than HQ may not.
SYSTEM_STEPS = frozenset(
    {TouchpointStep.MEMBER_REGISTERED, TouchpointStep.FIRST_ORDER, TouchpointStep.REPURCHASE}
)
MAX_BATCH = 500
MAX_EVENT_ID = 100
MAX_CAMPAIGN_ID = 64
# A caller's clock may run a little ahead of ours; a touch further ahead is a bug.
CLOCK_SKEW = timedelta(minutes=5)
# Older than this is not conversion history anyone acts on, but a mistyped year.
MAX_AGE = timedelta(days=5 * 365 + 1)
# The format customers' first_channel takes (a touch's channel may become it).
_CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """Who the touch is of: a customer id, or identities (found, else created)."""

    id: int | None = None
    identities: Sequence[tuple[IdentityKind, str]] = ()


@dataclass(frozen=True, slots=True)
class TouchpointDraft:
    event_id: str
    step: TouchpointStep
    customer: CustomerRef
    occurred_at: datetime
    source_channel: str | None = None
    # HQ only (a partner records for itself); with a store it must be the store's partner.
    partner_id: int | None = None
    store_id: int | None = None
    guide_id: int | None = None  # a staff user of the store (needs a store)
    campaign_id: str | None = None  # for QR_SCAN: the QR code's campaign (required)


@dataclass(frozen=True, slots=True)
class RecordResult:
    touchpoint: Touchpoint
    created: bool  # False: a retry of the same event returned the first touchpoint


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """One item of a batch: the touchpoint (created or found), or the problems."""

    touchpoint: Touchpoint | None
    created: bool = False
    problems: tuple[Problem, ...] = ()


@dataclass(slots=True)
class _Item:
    """One draft on its way through a batch: normalized, then resolved."""

    index: int
    draft: TouchpointDraft
    event_id: str = ""
    source_channel: str | None = None
    campaign_id: str | None = None
    pairs: list[tuple[IdentityKind, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    customer_id: int | None = None
    partner_id: int | None = None
    store_id: int | None = None
    needs_upsert: bool = False  # identities not all on file: found or created one by one
    outcome: RecordOutcome | None = None

    def fail(self, code: GrowthErrorCode, message: str, *path: str) -> None:
        self.problems.append(Problem(code, message, path or None))

    @property
    def values(self) -> dict[str, Any]:
        """What the touchpoint records (and what a retry must repeat)."""
        return {
            "step": self.draft.step,
            "customer_id": self.customer_id,
            "occurred_at": self.draft.occurred_at,
            "source_channel": self.source_channel,
            "partner_id": self.partner_id,
            "store_id": self.store_id,
            "guide_id": self.draft.guide_id,
            "campaign_id": self.campaign_id,
        }


def recorded_scope(principal: Principal) -> str:
    """Whose event ids these are: a retry finds its first touchpoint only among its own."""
    if principal.is_hq:
        return HQ_SCOPE
    if principal.store_id is not None:
        return f"store:{principal.store_id}"
    return f"partner:{principal.partner_id}"


def _check_caller(principal: Principal) -> None:
    if principal.is_member or (
        not principal.is_hq and principal.partner_id is None and principal.store_id is None
    ):
        raise DomainError.one(
            GrowthErrorCode.FORBIDDEN, "Touchpoints are recorded by HQ, partners and stores."
        )


def _translated(error: DomainError, *prefix: str) -> list[Problem]:
    """The customers domain's refusal of identities as this domain's (INVALID, REQUIRED kept;
    the message as it is) on the customer's field."""
    return [
        Problem(
            GrowthErrorCode.REQUIRED if p.code.name == "REQUIRED" else GrowthErrorCode.INVALID,
            p.message,
            (*prefix, *(p.field or ())),
        )
        for p in error.problems
    ]


def _check_shape(principal: Principal, item: _Item, now: datetime) -> None:
    """What can be said of one draft before anything is read; normalizes as it goes."""
    draft = item.draft
    item.event_id = draft.event_id.strip()
    if not 0 < len(item.event_id) <= MAX_EVENT_ID:
        item.fail(
            GrowthErrorCode.INVALID, f"An event id is 1-{MAX_EVENT_ID} characters.", "eventId"
        )
    if draft.step in SYSTEM_STEPS and not principal.is_hq:
        item.fail(
            GrowthErrorCode.FORBIDDEN,
            "Member registrations and orders are recorded by Qudao itself (memberJoin, "
            "orderCreate); HQ may backfill them.",
            "step",
        )
    if draft.source_channel is not None:
        item.source_channel = draft.source_channel.strip().lower()
        if not _CHANNEL.fullmatch(item.source_channel):
            item.fail(
                GrowthErrorCode.INVALID,
                "A source channel is a short lowercase word (tmall, wecom, mini_program...).",
                "sourceChannel",
            )
    if draft.campaign_id is not None:
        item.campaign_id = draft.campaign_id.strip()
        if not 0 < len(item.campaign_id) <= MAX_CAMPAIGN_ID or not item.campaign_id.isprintable():
            item.fail(
                GrowthErrorCode.INVALID,
                f"A campaign id is 1-{MAX_CAMPAIGN_ID} printable characters.",
                "campaignId",
            )
    elif draft.step is TouchpointStep.QR_SCAN:
        item.fail(GrowthErrorCode.REQUIRED, "A QR scan names its QR code's campaign.", "campaignId")
    occurred = draft.occurred_at
    if occurred.tzinfo is None:
        item.fail(GrowthErrorCode.INVALID, "A time needs a UTC offset.", "occurredAt")
    elif occurred > now + CLOCK_SKEW:
        item.fail(GrowthErrorCode.INVALID, "A touch cannot happen in the future.", "occurredAt")
    elif occurred < now - MAX_AGE:
        item.fail(GrowthErrorCode.INVALID, "A touch at most 5 years old.", "occurredAt")
    if draft.guide_id is not None and draft.store_id is None and principal.store_id is None:
        item.fail(GrowthErrorCode.REQUIRED, "A guide is recorded with their store.", "storeId")
    if draft.partner_id is not None and not principal.is_hq:
        if draft.partner_id != principal.partner_id:
            # Another partner's id answers like a missing one.
            item.fail(GrowthErrorCode.NOT_FOUND, "No such partner.", "partnerId")
    ref = draft.customer
    if (ref.id is None) == (not ref.identities):
        item.fail(
            GrowthErrorCode.REQUIRED,
            "Name the customer: either id or identities.",
            "customer",
        )
    elif ref.identities:
        try:
            item.pairs = normalize_identities(ref.identities)
        except DomainError as error:
            item.problems += _translated(error, "customer")


async def record_touchpoint(
    session: AsyncSession, principal: Principal, draft: TouchpointDraft, *, now: datetime
) -> RecordResult:
    """``touchpointRecord``: one touchpoint, or DomainError. The caller owns the transaction."""
    _check_caller(principal)
    (outcome,) = await _record(session, principal, [draft], now)
    if outcome.problems:
        raise DomainError(outcome.problems)
    assert outcome.touchpoint is not None
    return RecordResult(outcome.touchpoint, outcome.created)


async def record_touchpoints(
    session: AsyncSession, principal: Principal, drafts: Sequence[TouchpointDraft], *, now: datetime
) -> list[RecordOutcome]:
    """``touchpointsRecord``: each draft's outcome, in order; the valid ones are recorded
    whatever happens to the others. Problems name their item: ("touchpoints", "3", ...)."""
    _check_caller(principal)
    if len(drafts) > MAX_BATCH:
        raise DomainError.one(
            GrowthErrorCode.LIMIT_EXCEEDED,
            f"At most {MAX_BATCH} touchpoints at once.",
            "touchpoints",
        )
    outcomes = await _record(session, principal, drafts, now)
    return [
        replace(
            outcome,
            problems=tuple(
                Problem(p.code, p.message, ("touchpoints", str(index), *(p.field or ())))
                for p in outcome.problems
            ),
        )
        for index, outcome in enumerate(outcomes)
    ]


async def _record(
    session: AsyncSession, principal: Principal, drafts: Sequence[TouchpointDraft], now: datetime
) -> list[RecordOutcome]:
    scope = recorded_scope(principal)
    items = [_Item(index, draft) for index, draft in enumerate(drafts)]
    for item in items:
        _check_shape(principal, item, now)
    # A repeated event id within the batch answers like a retry of its first occurrence.
    firsts: dict[str, _Item] = {}
    repeats: list[tuple[_Item, _Item]] = []
    for item in items:
        if item.problems:
            continue
        first = firsts.setdefault(item.event_id, item)
        if first is not item:
            repeats.append((item, first))
    live = list(firsts.values())

    on_file = await _events_on_file(session, scope, [i.event_id for i in live])
    await _resolve_places(session, principal, live)
    await _resolve_customers(session, principal, live)
    fresh: list[_Item] = []
    for item in live:
        if item.problems:
            continue
        existing = on_file.get(item.event_id)
        if existing is not None:
            _retried(existing, item)
        elif item.needs_upsert:
            await _upsert_customer(session, principal, item, now)
            if not item.problems:
                fresh.append(item)
        else:
            fresh.append(item)
    await _insert_touchpoints(session, principal, scope, fresh, now)

    for item, first in repeats:
        if first.draft != item.draft:
            item.fail(
                GrowthErrorCode.EVENT_ID_REUSED,
                f"This event id names a different touchpoint (item {first.index}).",
                "eventId",
            )
        elif first.problems:
            item.problems = list(first.problems)
        else:
            assert first.outcome is not None  # every item ends recorded or refused
            item.outcome = RecordOutcome(first.outcome.touchpoint, created=False)
    return [_outcome(item) for item in items]


def _outcome(item: _Item) -> RecordOutcome:
    if item.problems:
        return RecordOutcome(None, problems=tuple(item.problems))
    assert item.outcome is not None  # every item ends recorded or refused
    return item.outcome


def _retried(existing: Touchpoint, item: _Item) -> None:
    """An event id on file: the same touch again is a retry, another one a reuse."""
    if all(getattr(existing, name) == value for name, value in item.values.items()):
        item.outcome = RecordOutcome(existing, created=False)
    else:
        item.fail(
            GrowthErrorCode.EVENT_ID_REUSED,
            "This event id was recorded with a different touchpoint.",
            "eventId",
        )


async def _events_on_file(
    session: AsyncSession, scope: str, event_ids: Sequence[str]
) -> dict[str, Touchpoint]:
    if not event_ids:
        return {}
    rows = await session.scalars(
        select(Touchpoint).where(
            Touchpoint.recorded_scope == scope, Touchpoint.event_id.in_(set(event_ids))
        )
    )
    return {row.event_id: row for row in rows}


async def _resolve_places(session: AsyncSession, principal: Principal, items: list[_Item]) -> None:
    """Store, partner and guide of each item, within the principal's reach (one statement
    per kind, only when an item names one). Out of reach answers like missing."""
    for item in items:
        if item.draft.store_id is None and principal.store_id is not None and not principal.is_hq:
            item.store_id = principal.store_id
        else:
            item.store_id = item.draft.store_id
    store_ids = {i.store_id for i in items if i.store_id is not None and not i.problems}
    stores = await stores_by_id(session, principal, list(store_ids)) if store_ids else {}
    asked_partners = {
        i.draft.partner_id
        for i in items
        if principal.is_hq and i.draft.partner_id is not None and i.store_id is None
    }
    found_partners = (
        await partners_by_id(session, principal, list(asked_partners)) if asked_partners else {}
    )
    guide_ids = {i.draft.guide_id for i in items if i.draft.guide_id is not None and not i.problems}
    guides: dict[int, int | None] = {}
    if guide_ids:
        rows = await session.execute(
            select(StaffUser.id, StaffUser.store_id).where(
                StaffUser.id.in_(guide_ids), StaffUser.is_active
            )
        )
        guides = {guide: store for guide, store in rows}
    for item in items:
        if item.problems:
            continue
        draft = item.draft
        if item.store_id is not None:
            store = stores.get(item.store_id)
            if store is None:
                item.fail(GrowthErrorCode.NOT_FOUND, "No such store.", "storeId")
                continue
            item.partner_id = store.partner_id
            if draft.partner_id is not None and draft.partner_id != store.partner_id:
                item.fail(GrowthErrorCode.INVALID, "The store is not this partner's.", "partnerId")
        elif principal.is_hq:
            if draft.partner_id is not None and draft.partner_id not in found_partners:
                item.fail(GrowthErrorCode.NOT_FOUND, "No such partner.", "partnerId")
            item.partner_id = draft.partner_id
        else:
            item.partner_id = principal.partner_id
        if draft.guide_id is not None and (
            draft.guide_id not in guides or guides[draft.guide_id] != item.store_id
        ):
            item.fail(
                GrowthErrorCode.NOT_FOUND,
                "The guide must be an active staff user of the store.",
                "guideId",
            )


async def _resolve_customers(
    session: AsyncSession, principal: Principal, items: list[_Item]
) -> None:
    """The live customer of each item: by id (one the principal may see), or the one its
    identities name; one statement for all ids and one for all identities. Items whose
    identities are not all on file (HQ) or name nobody (others) are marked for an upsert."""
    asked = {i.draft.customer.id for i in items if i.draft.customer.id is not None}
    by_id = await customers_by_id(session, principal, list(asked)) if asked else {}
    pairs = {pair for item in items if not item.problems for pair in item.pairs}
    owners: dict[tuple[IdentityKind, str], int] = {}
    if pairs:
        rows = await session.execute(
            select(CustomerIdentity.kind, CustomerIdentity.value, Customer.id)
            .join(Customer, Customer.id == CustomerIdentity.customer_id)
            .where(
                or_(
                    *(
                        and_(CustomerIdentity.kind == kind, CustomerIdentity.value.in_(values))
                        for kind, values in _by_kind(pairs).items()
                    )
                ),
                Customer.status == CustomerStatus.ACTIVE,
            )
        )
        owners = {(kind, value): cid for kind, value, cid in rows}
    for item in items:
        if item.problems:
            continue
        ref = item.draft.customer
        if ref.id is not None:
            found = by_id.get(ref.id)
            if found is None:
                item.fail(GrowthErrorCode.NOT_FOUND, "No such customer.", "customer", "id")
            else:
                item.customer_id = found.id
            continue
        named = [(index, owners.get(pair)) for index, pair in enumerate(item.pairs)]
        known = [(index, cid) for index, cid in named if cid is not None]
        if known and any(cid != known[0][1] for _, cid in known):
            index = next(i for i, cid in known if cid != known[0][1])
            item.fail(
                GrowthErrorCode.INVALID,
                f"This {item.pairs[index][0].value} belongs to a different customer; merge the "
                "two customers first (customersMerge).",
                "customer",
                "identities",
                str(index),
                "value",
            )
            continue
        if known and (len(known) == len(named) or not principal.is_hq):
            item.customer_id = known[0][1]
        else:
            item.needs_upsert = True


def _by_kind(pairs: set[tuple[IdentityKind, str]]) -> dict[IdentityKind, list[str]]:
    grouped: dict[IdentityKind, list[str]] = {}
    for kind, value in sorted(pairs, key=lambda p: (p[0].value, p[1])):
        grouped.setdefault(kind, []).append(value)
    return grouped


async def _upsert_customer(
    session: AsyncSession, principal: Principal, item: _Item, now: datetime
) -> None:
    """Find or create the customer of identities not all on file, in a savepoint: a refusal
    (or, for a partner, an identity that would attach to someone on file) leaves nothing."""
    savepoint = await session.begin_nested()
    try:
        result = await upsert_customer(
            session,
            CustomerDraft(
                identities=item.pairs,
                first_channel=item.source_channel,
                # A channel's view never overwrites what the person or HQ put on file.
                fill_only=True,
            ),
            actor=principal.subject,
            now=now,
        )
    except DomainError as error:
        await savepoint.rollback()
        item.problems += _translated(error, "customer")
        return
    item.customer_id = result.customer.id
    if result.attached and not result.created and not principal.is_hq:
        # Someone created the person since we looked: take them, attach nothing.
        await savepoint.rollback()
    else:
        await savepoint.commit()


async def _insert_touchpoints(
    session: AsyncSession, principal: Principal, scope: str, items: list[_Item], now: datetime
) -> None:
    """One INSERT for every new touchpoint; an event id a concurrent writer recorded first is
    read back (one more statement) and answers like a retry."""
    if not items:
        return
    stmt = (
        dialect_insert(session)(Touchpoint)
        .values(
            [
                {
                    **item.values,
                    "recorded_scope": scope,
                    "event_id": item.event_id,
                    "recorded_by": principal.subject[:100],
                    "created_at": now,
                }
                for item in items
            ]
        )
        .on_conflict_do_nothing(index_elements=["recorded_scope", "event_id"])
        .returning(Touchpoint)
    )
    created = {row.event_id: row for row in (await session.scalars(stmt)).all()}
    for item in items:
        row = created.get(item.event_id)
        if row is not None:
            item.outcome = RecordOutcome(row, created=True)
    lost = [item for item in items if item.outcome is None]
    if lost:
        # The winners committed before our INSERT went on (it waited for them).
        winners = await _events_on_file(session, scope, [i.event_id for i in lost])
        for item in lost:
            _retried(winners[item.event_id], item)
