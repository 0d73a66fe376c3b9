"""Claims (领券) and grants: one coupon of a template handed to a person.

Held by conditional writes, never by a read followed by a write:

* a template never issues beyond its stock: ``UPDATE coupon_template SET issued = issued + 1
  WHERE issued < total_stock RETURNING``;
* a person never holds more than the per-person limit: the same guard on their
  ``coupon_claim_count`` row (keyed by the surviving customer, so a merge keeps counting the
  person, not the identity).

A failed guard raises a DomainError and the caller's transaction rolls back, so nothing is
half-written (a refused claim leaves neither a count nor a stock unit behind).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.coupons.access import ACCEPTS, decide_channel, templates_query, usable_at
from api.coupons.codes import new_code
from api.coupons.errors import CouponErrorCode
from api.coupons.models import (
    Coupon,
    CouponChannel,
    CouponClaimCount,
    CouponOrigin,
    CouponStatus,
    CouponTemplate,
    TemplateStatus,
)
from api.coupons.templates import require_hq
from api.customers.locks import lock_customer, resolve_customer_id
from api.customers.models import Customer
from api.db import advisory_lock, update_returning, utcnow
from api.errors import DomainError
from api.partners.models import Store

MAX_CLAIM_KEY = 100


@dataclass(frozen=True, slots=True)
class ClaimResult:
    coupon: Coupon
    created: bool  # False: a retry with the same claim key returned the first coupon


def _claim_digest(template_id: int, customer_id: int, claim_key: str) -> str:
    # The key a client sends is scoped to its claim: two members who both send "1" must not
    # get each other's coupon, and the digest has a fixed length whatever the key's.
    raw = f"coupon-claim\x00{template_id}\x00{customer_id}\x00{claim_key}"
    return hashlib.sha256(raw.encode()).hexdigest()


async def _claimed_with_key(
    session: AsyncSession, template_id: int, person: int, claim_key: str
) -> Coupon | None:
    """The coupon an earlier claim with this key gave the person, whichever of their ids it
    was made under.

    A digest names the customer id the claim was made for, and a merge moves the coupon but
    cannot re-hash its key: a claim made for S and retried after S was merged into T must
    still find it. So every id of the person is tried: the live one and each merged into it
    (a merge re-points older redirects at the survivor, so one level covers them all).
    Another person's coupon never matches: their ids give other digests.
    """
    former = await session.scalars(select(Customer.id).where(Customer.merged_into_id == person))
    digests = [_claim_digest(template_id, c, claim_key) for c in (person, *former)]
    return await session.scalar(
        select(Coupon)
        .where(Coupon.claim_key.in_(digests), Coupon.customer_id == person)
        .order_by(Coupon.id)
        .limit(1)
    )


def dialect_insert(session: AsyncSession) -> Any:
    """The session's dialect's INSERT, which has ON CONFLICT (PostgreSQL and SQLite alike)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _lock_live_customer(session: AsyncSession, customer_id: int) -> int | None:
    """The surviving customer behind ``customer_id``, share-locked until commit.

    The lock makes a concurrent merge wait for this claim (and this claim wait for a running
    merge, then see its redirect), so a coupon never lands on a customer merged meanwhile.
    """
    customer = await lock_customer(session, customer_id, shared=True)
    return None if customer is None else customer.id


async def _claimer(
    session: AsyncSession, principal: Principal, customer_id: int | None, origin: CouponOrigin
) -> int:
    """Who receives the coupon: a member claims for themself; HQ grants to anyone."""
    if origin is CouponOrigin.CLAIM:
        if not principal.is_member or principal.customer_id is None:
            raise DomainError.one(
                CouponErrorCode.FORBIDDEN, "Members claim coupons for themselves."
            )
        own = await _lock_live_customer(session, principal.customer_id)
        if own is None:
            raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such customer.", "customerId")
        if customer_id is not None and customer_id != principal.customer_id:
            # Someone else's id answers like a missing one; an old (merged) id of the member
            # names the member.
            if await resolve_customer_id(session, customer_id) != own:
                raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such customer.", "customerId")
        return own
    require_hq(principal, "grant coupons")
    if customer_id is None:
        raise DomainError.one(CouponErrorCode.REQUIRED, "Grant to which customer?", "customerId")
    live = await _lock_live_customer(session, customer_id)
    if live is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such customer.", "customerId")
    return live


def _check_claimable(template: CouponTemplate, channel: CouponChannel, now: datetime) -> None:
    if template.status is not TemplateStatus.ACTIVE:
        raise DomainError.one(
            CouponErrorCode.TEMPLATE_PAUSED, "This coupon is paused.", "templateId"
        )
    if template.claim_starts_at is not None and now < template.claim_starts_at:
        raise DomainError.one(
            CouponErrorCode.NOT_STARTED,
            f"Claims open at {template.claim_starts_at.isoformat()}.",
            "templateId",
        )
    ended = template.claim_ends_at is not None and now >= template.claim_ends_at
    if ended or (template.valid_until is not None and now >= template.valid_until):
        raise DomainError.one(CouponErrorCode.CLAIM_ENDED, "Claims have ended.", "templateId")
    if template.claim_channel not in ACCEPTS[channel]:
        raise DomainError.one(
            CouponErrorCode.WRONG_CHANNEL,
            f"This coupon is claimed {template.claim_channel.value} only.",
            "channel",
        )


async def claim(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    customer_id: int | None,
    *,
    channel: CouponChannel | None = None,
    store_id: int | None = None,
    claim_key: str | None = None,
    now: datetime | None = None,
    origin: CouponOrigin = CouponOrigin.CLAIM,
) -> ClaimResult:
    """Give one coupon of a template to a person (a member's claim, or an HQ grant).

    The channel follows from the principal (``decide_channel``: a member claims ONLINE, HQ
    states it); a store named (required OFFLINE) must be one where the template may be used.
    Checks run cheapest and least contended first; the template's stock row, which every
    claimer of a campaign updates, is touched last so its row lock is held briefly.
    """
    now = now or utcnow()
    if claim_key is not None and not 0 < len(claim_key) <= MAX_CLAIM_KEY:
        raise DomainError.one(
            CouponErrorCode.INVALID, f"A claim key is 1-{MAX_CLAIM_KEY} characters.", "claimKey"
        )
    person = await _claimer(session, principal, customer_id, origin)
    channel = decide_channel(principal, channel, at_store=store_id is not None)

    digest = None
    if claim_key is not None:
        # Stored under the live person; looked up under every id of the person (a retry
        # after a merge finds the coupon claimed under the old id).
        digest = _claim_digest(template_id, person, claim_key)
        # Two concurrent retries of one claim: the second waits here, then finds the first.
        # (A merge cannot run meanwhile: _claimer share-locked the live customer.)
        await advisory_lock(session, digest)
        first = await _claimed_with_key(session, template_id, person, claim_key)
        if first is not None:
            return ClaimResult(first, created=False)

    template = await _template_to_claim(session, principal, template_id, channel, store_id, now)
    await _count_claim(session, person, template)
    await _take_stock(session, template)
    coupon = await _issue(
        session,
        template,
        person,
        origin=origin,
        channel=channel,
        store_id=store_id,
        digest=digest,
        now=now,
    )
    return ClaimResult(coupon, created=True)


async def _template_to_claim(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    channel: CouponChannel,
    store_id: int | None,
    now: datetime,
) -> CouponTemplate:
    """The template, visible to the principal and claimable now on ``channel`` (at
    ``store_id``, if one is named)."""
    template = await session.scalar(
        templates_query(principal).where(CouponTemplate.id == template_id)
    )
    if template is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such coupon template.", "templateId")
    usable_here = None
    if store_id is not None:
        # Whether the store exists and the template may be used there, in one statement.
        usable_here = await session.scalar(
            select(usable_at(literal(template.id), Store.id, Store.partner_id)).where(
                Store.id == store_id
            )
        )
        if usable_here is None:
            raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such store.", "storeId")
    _check_claimable(template, channel, now)
    if usable_here is not None and not usable_here:
        # An offline campaign is claimed only where it can be used (a store-limited one at
        # its stores), and a claim through a store is attributed only to such a store.
        raise DomainError.one(
            CouponErrorCode.WRONG_STORE, "This coupon cannot be claimed at this store.", "storeId"
        )
    return template


async def _count_claim(session: AsyncSession, person: int, template: CouponTemplate) -> None:
    """Count the claim against the person's limit for the template (LIMIT_REACHED if full)."""
    # The person's limit: one row per (person, template), raised only below the limit.
    await session.execute(
        dialect_insert(session)(CouponClaimCount)
        .values(customer_id=person, template_id=template.id, claimed=0)
        .on_conflict_do_nothing(index_elements=["customer_id", "template_id"])
    )
    counted = await update_returning(
        session,
        update(CouponClaimCount)
        .where(
            CouponClaimCount.customer_id == person,
            CouponClaimCount.template_id == template.id,
            CouponClaimCount.claimed < template.per_person_limit,
        )
        .values(claimed=CouponClaimCount.claimed + 1)
        .returning(CouponClaimCount.claimed),
    )
    if counted is None:
        raise DomainError.one(
            CouponErrorCode.LIMIT_REACHED,
            f"At most {template.per_person_limit} of this coupon per person.",
            "templateId",
        )


async def _take_stock(session: AsyncSession, template: CouponTemplate) -> None:
    """Issue one unit of the template's stock (OUT_OF_STOCK, or TEMPLATE_PAUSED if paused
    since it was read)."""
    # The stock, last: the hot row. Status is part of the guard so a pause that committed
    # after our read still stops the claim.
    issued = await update_returning(
        session,
        update(CouponTemplate)
        .where(
            CouponTemplate.id == template.id,
            CouponTemplate.issued < CouponTemplate.total_stock,
            CouponTemplate.status == TemplateStatus.ACTIVE,
        )
        .values(issued=CouponTemplate.issued + 1)
        .returning(CouponTemplate.issued),
    )
    if issued is None:
        status = await session.scalar(
            select(CouponTemplate.status).where(CouponTemplate.id == template.id)
        )
        if status is not TemplateStatus.ACTIVE:
            raise DomainError.one(
                CouponErrorCode.TEMPLATE_PAUSED, "This coupon is paused.", "templateId"
            )
        raise DomainError.one(
            CouponErrorCode.OUT_OF_STOCK, "This coupon has run out.", "templateId"
        )


async def _issue(
    session: AsyncSession,
    template: CouponTemplate,
    person: int,
    *,
    origin: CouponOrigin,
    channel: CouponChannel,
    store_id: int | None,
    digest: str | None,
    now: datetime,
) -> Coupon:
    """Insert the coupon with a fresh code, valid per the template from ``now``."""
    if template.valid_days is not None:
        valid_from, valid_until = now, now + timedelta(days=template.valid_days)
    else:
        assert template.valid_from is not None and template.valid_until is not None
        valid_from, valid_until = template.valid_from, template.valid_until
    values = {
        "template_id": template.id,
        "customer_id": person,
        "status": CouponStatus.CLAIMED,
        "origin": origin,
        "claim_channel": channel.value,
        "claim_store_id": store_id,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "claimed_at": now,
        "claim_key": digest,
    }
    # A code collision (≈2**-79 per pair) is retried rather than failing the claim.
    for _ in range(5):
        coupon = (
            await session.execute(
                dialect_insert(session)(Coupon)
                .values(code=new_code(), **values)
                .on_conflict_do_nothing(index_elements=["code"])
                .returning(Coupon)
            )
        ).scalar_one_or_none()
        if coupon is not None:
            return coupon
    raise RuntimeError("could not draw an unused coupon code")
