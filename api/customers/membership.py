"""Members (会员): joining makes a customer a member and records who recruited them (kept for
life), at the entry level; staff may set a manual level, a floor the member never drops
below."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import StaffUser
from api.auth.principal import Principal, Role
from api.customers.errors import CustomerErrorCode
from api.customers.identities import normalize_identities
from api.customers.levels import all_levels
from api.customers.locks import lock_identities, lock_identity_owner
from api.customers.lookup import get_customer
from api.customers.models import Customer, IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.qualification import ChangeReason, evaluate_level, level_change, period_end
from api.customers.reactions import CustomersWiring, MemberJoined
from api.customers.upsert import upsert_customer
from api.db import utcnow
from api.errors import DomainError
from api.partners.models import Store
from api.partners.service import stores_by_id

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
    store = await _recruiting_store(session, principal, request.store_id)
    guide_id = await _recruiting_guide(session, principal, store.id, request.guide_id)
    customer = await _joining_customer(session, principal, request, counter_draft, now)
    customer.member_since = now
    customer.recruited_store_id = store.id
    customer.recruited_partner_id = store.partner_id
    customer.recruited_guide_id = guide_id
    customer.updated_at = now
    levels = await all_levels(session)
    if levels:
        session.add(
            level_change(customer, levels[0], ChangeReason.JOIN, principal.subject, now, levels)
        )
    await session.flush()
    await evaluate_level(session, customer.id, now, actor=principal.subject)
    await wiring.member_joined(
        session, MemberJoined(customer.id, store.id, store.partner_id, guide_id, now)
    )
    return customer


async def _recruiting_store(
    session: AsyncSession, principal: Principal, store_id: int | None
) -> Store:
    """The store a member joins at: a store principal's own, else the one named (within the
    caller's scope)."""
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
    return store


async def _recruiting_guide(
    session: AsyncSession, principal: Principal, store_id: int, guide_id: int | None
) -> int | None:
    """The guide named (an active staff user of the store), or the clerk enrolling in person.
    An implied guide who is not at this store is no guide; a named one is refused."""
    implied = guide_id is None and principal.store_id is not None
    if implied:
        guide_id = _guide_of(principal)
    if guide_id is not None:
        guide = await session.scalar(
            select(StaffUser.id).where(
                StaffUser.id == guide_id, StaffUser.store_id == store_id, StaffUser.is_active
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
    return guide_id


async def _joining_customer(
    session: AsyncSession,
    principal: Principal,
    request: JoinRequest,
    counter_draft: CustomerDraft | None,
    now: datetime,
) -> Customer:
    """The customer who joins, locked; ALREADY_MEMBER for one who is a member already."""
    if counter_draft is not None:
        return await _enrol_by_phone(session, counter_draft, principal.subject, now)
    if request.draft is not None:
        upserted = await upsert_customer(session, request.draft, actor=principal.subject, now=now)
        customer = upserted.customer
        if customer.member_since is not None:
            raise DomainError.one(
                CustomerErrorCode.ALREADY_MEMBER, ALREADY_MEMBER_MESSAGE, "identities"
            )
        return customer
    assert request.customer_id is not None
    customer = await get_customer(session, principal, request.customer_id, lock=True)
    if customer.member_since is not None:
        raise DomainError.one(
            CustomerErrorCode.ALREADY_MEMBER, ALREADY_MEMBER_MESSAGE, "customerId"
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
        session.add(
            level_change(customer, level, ChangeReason.MANUAL, principal.subject, now, levels)
        )
    elif level is not None and customer.level_grace_ends_at is not None and current is not None:
        # The floor holds the member at (or above) it: no pending downgrade below it.
        if level.rank >= current.rank:
            customer.level_grace_ends_at = None
            customer.level_period_ends_at = period_end(current, levels, now)
    await session.flush()
    return customer
