"""Redemption (核销): a coupon used once, at a counter or on an order, and what the
redeeming store sees before it redeems (``check_coupon``).

A coupon is redeemed at most once: ``UPDATE coupon SET status = 'redeemed' WHERE code = :c
AND status = 'claimed' AND <valid now> AND <usable here> RETURNING``. Only a refusal reads
the coupon again, to say precisely why.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    Update,
    bindparam,
    exists,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.pii import mask_phone
from api.auth.principal import Principal
from api.conflicts.models import ViolationKind
from api.conflicts.service import outside_territory, record_violation
from api.coupons.access import ACCEPTS, decide_channel, template_scope, usable_at
from api.coupons.codes import normalize_code
from api.coupons.errors import CouponErrorCode
from api.coupons.models import Coupon, CouponChannel, CouponStatus, CouponTemplate
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.db import UTCDateTime, utcnow
from api.errors import DomainError
from api.partners.models import Store
from api.partners.service import stores_query

MAX_ORDER_REF = 100


@dataclass(frozen=True, slots=True)
class CouponCheck:
    """What a redeeming store sees before it redeems: the coupon and why it would fail."""

    coupon: Coupon
    template: CouponTemplate
    problem: CouponErrorCode | None
    holder_name: str | None
    holder_phone: str | None


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a redemption happens: a store (and its partner), within the principal's reach."""

    store_id: int
    partner_id: int | None
    region_code: str | None = None
    # The store lies outside its partner's territories (窜货): a redemption there is recorded.
    outside_territory: bool = False


async def _redeeming_store(
    session: AsyncSession, principal: Principal, store_id: int | None
) -> _Place | None:
    """The store redeeming, within the principal's reach; None for an HQ online use."""
    if principal.is_member or not principal.is_authenticated:
        raise DomainError.one(CouponErrorCode.FORBIDDEN, "Members cannot redeem coupons.")
    if store_id is None:
        store_id = principal.store_id
    if store_id is None:
        if principal.is_hq:
            return None
        raise DomainError.one(CouponErrorCode.REQUIRED, "Redeem at which store?", "storeId")
    # The scope applies: another partner's store (or, for store staff, another store) is not
    # found, exactly like a missing one. The territory check rides along in the same statement.
    found = (
        await session.execute(
            stores_query(principal)
            .with_only_columns(
                Store.id,
                Store.partner_id,
                Store.region_code,
                outside_territory(Store.partner_id, Store.region_code).label("outside"),
            )
            .where(Store.id == store_id)
        )
    ).first()
    if found is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such store.", "storeId")
    return _Place(found.id, found.partner_id, found.region_code, bool(found.outside))


@functools.cache
def _redeem_statement(
    use: CouponChannel, at_store: bool, with_partner: bool, holder: bool = False
) -> Update:
    """The guarded UPDATE of a redemption, built once per shape: every call binds values
    into the same statement (building SQL expressions costs more than running them). With
    ``holder`` the coupon must also be held by ``b_customer`` (an order's customer)."""
    now = bindparam("b_now", type_=UTCDateTime())
    store = bindparam("b_store", type_=BigInteger()) if at_store else None
    partner = bindparam("b_partner", type_=BigInteger()) if with_partner else None
    usable = exists().where(
        CouponTemplate.id == Coupon.template_id,
        CouponTemplate.use_channel.in_(ACCEPTS[use]),
        usable_at(CouponTemplate.id, store, partner),
    )
    guards = [
        Coupon.code == bindparam("b_code", type_=String()),
        Coupon.status == CouponStatus.CLAIMED,
        Coupon.valid_from <= now,
        Coupon.valid_until > now,
        usable,
    ]
    if holder:
        guards.append(Coupon.customer_id == bindparam("b_customer", type_=BigInteger()))
    return (
        update(Coupon)
        .where(*guards)
        .values(
            status=CouponStatus.REDEEMED,
            redeemed_at=now,
            redeemed_store_id=store,
            redeemed_by=bindparam("b_actor", type_=String()),
            redeemed_for=bindparam("b_order_ref", type_=String()),
        )
        .returning(Coupon)
    )


async def redeem(
    session: AsyncSession,
    principal: Principal,
    code: str,
    *,
    store_id: int | None = None,
    channel: CouponChannel | None = None,
    order_ref: str | None = None,
    now: datetime | None = None,
) -> Coupon:
    """Redeem a coupon exactly once: one guarded UPDATE decides, whoever races.

    The guard holds every rule (status, validity, use channel, store restrictions), so the
    happy path is two statements (the store's scope, the update); only a refusal reads the
    coupon again, to say precisely why. The channel follows from the principal (store staff
    redeem OFFLINE; see ``decide_channel``).
    """
    now = now or utcnow()
    place = await _redeeming_store(session, principal, store_id)
    use = decide_channel(principal, channel, at_store=place is not None)
    if order_ref is not None and not 0 < len(order_ref) <= MAX_ORDER_REF:
        raise DomainError.one(
            CouponErrorCode.INVALID, f"An order ref is 1-{MAX_ORDER_REF} characters.", "orderRef"
        )
    canonical = normalize_code(code)
    if canonical is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such coupon.", "code")
    at_store = place is not None
    with_partner = place is not None and place.partner_id is not None
    params: dict[str, Any] = {
        "b_code": canonical,
        "b_now": now,
        "b_actor": principal.subject,
        "b_order_ref": order_ref,
    }
    if place is not None:
        params["b_store"] = place.store_id
        if place.partner_id is not None:
            params["b_partner"] = place.partner_id
    # Decided by the returned row (see api.db.update_returning), never by rowcount.
    result = await session.execute(
        _redeem_statement(use, at_store, with_partner),
        params,
        execution_options={"synchronize_session": False},
    )
    row = result.first()
    if row is not None:
        if place is not None and place.outside_territory:
            await _record_cross_region(session, row[0], place, now)
        return row[0]
    found = await _explain(session, principal, canonical, place, use, now)
    assert found is not None  # the update would have succeeded
    raise DomainError.one(found[0], found[1], "code")


async def _record_cross_region(
    session: AsyncSession, coupon: Coupon, place: _Place, now: datetime
) -> None:
    """窜货: a coupon redeemed at a store outside its partner's territories. Keyed by the
    redemption (a coupon released and redeemed again is a new one)."""
    await record_violation(
        session,
        kind=ViolationKind.CROSS_REGION_REDEMPTION,
        source_key=f"coupon:{coupon.id}:redeemed:{now.isoformat()}",
        detail=f"Coupon …{coupon.code[-4:]} redeemed at a store outside its partner's "
        f"territories (region {place.region_code}).",
        now=now,
        partner_id=place.partner_id,
        store_id=place.store_id,
        coupon_id=coupon.id,
        region_code=place.region_code,
    )


async def redeem_for_order(
    session: AsyncSession,
    principal: Principal,
    codes: Sequence[str],
    *,
    customer_id: int,
    use: CouponChannel,
    store_id: int | None,
    partner_id: int | None,
    order_ref: str,
    now: datetime,
    store_region: str | None = None,
    outside_territory: bool = False,
) -> list[tuple[Coupon, CouponTemplate]]:
    """Redeem an order's coupons in the order's transaction, exactly once each.

    ``customer_id`` is the order's live customer (merges move coupons to the survivor, so the
    person's coupons are all held by that id). Each coupon is one guarded UPDATE: the redeem
    guard (claimed, valid now, usable on ``use`` at the store and partner) plus "held by the
    customer". ``store_id`` None is an online order without a store: only coupons without
    store or partner limits apply, and the redemption records no store; an order at a store
    records it. A cancel or refund gives back exactly these coupons (``release_order_coupons``).
    ``outside_territory`` (the caller's store lookup found the store, in ``store_region``,
    outside its partner's territories) records each redemption as a CROSS_REGION_REDEMPTION,
    as ``redeem`` does.

    A failure names the code (``("couponCodes", index)``): NOT_FOUND for a code that is not
    the customer's (someone else's code answers like an unknown one), otherwise why it cannot
    be used here now. The caller's transaction then rolls the earlier ones back. Returns
    (coupon, template) in the order of ``codes``.
    """
    canonical = _order_codes(codes)
    place = (
        _Place(store_id, partner_id, store_region, outside_territory)
        if store_id is not None
        else None
    )
    with_partner = place is not None and partner_id is not None
    statement = _redeem_statement(use, place is not None, with_partner, holder=True)
    redeemed: list[Coupon] = []
    for index, code in enumerate(canonical):
        params: dict[str, Any] = {
            "b_code": code,
            "b_now": now,
            "b_actor": principal.subject,
            "b_order_ref": order_ref,
            "b_customer": customer_id,
        }
        if place is not None:
            params["b_store"] = place.store_id
            if with_partner:
                params["b_partner"] = partner_id
        row = (
            await session.execute(
                statement, params, execution_options={"synchronize_session": False}
            )
        ).first()
        if row is None:
            why = await _order_refusal(session, principal, code, customer_id, place, use, now)
            raise DomainError.one(why[0], why[1], "couponCodes", str(index))
        if place is not None and place.outside_territory:
            await _record_cross_region(session, row[0], place, now)
        redeemed.append(row[0])
    if not redeemed:
        return []
    templates = {
        t.id: t
        for t in await session.scalars(
            select(CouponTemplate).where(CouponTemplate.id.in_({c.template_id for c in redeemed}))
        )
    }
    return [(c, templates[c.template_id]) for c in redeemed]


def _order_codes(codes: Sequence[str]) -> list[str]:
    """An order's codes, canonical; an impossible or repeated one is refused by its index."""
    canonical: list[str] = []
    for index, raw in enumerate(codes):
        code = normalize_code(raw)
        if code is None:
            raise DomainError.one(
                CouponErrorCode.NOT_FOUND, "No such coupon.", "couponCodes", str(index)
            )
        if code in canonical:
            raise DomainError.one(
                CouponErrorCode.INVALID, "This coupon is given twice.", "couponCodes", str(index)
            )
        canonical.append(code)
    return canonical


async def _order_refusal(
    session: AsyncSession,
    principal: Principal,
    code: str,
    customer_id: int,
    place: _Place | None,
    use: CouponChannel,
    now: datetime,
) -> tuple[CouponErrorCode, str]:
    """Why an order's code did not redeem: NOT_FOUND unless the customer holds it."""
    held = (
        await session.execute(
            select(Coupon, CouponTemplate)
            .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
            .where(Coupon.code == code, Coupon.customer_id == customer_id)
        )
    ).first()
    if held is None:
        return CouponErrorCode.NOT_FOUND, "No such coupon."
    return await _problem(session, principal, held[0], held[1], place, use, now) or (
        CouponErrorCode.ALREADY_REDEEMED,
        "This coupon was already redeemed.",
    )


def _coupon_in_reach(principal: Principal, code: str) -> Select[Coupon, CouponTemplate]:
    """A coupon by code with its template, if the principal could ever use it.

    A code whose template can never be used at the principal's stores (another partner's
    exclusive campaign, or for store staff another store's) is not found, exactly like an
    unknown code: nothing about it (template, holder, state, where it failed) is explained.
    """
    stmt = (
        select(Coupon, CouponTemplate)
        .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
        .where(Coupon.code == code)
    )
    scope = template_scope(principal)
    return stmt if scope is None else stmt.where(scope)


async def _explain(
    session: AsyncSession,
    principal: Principal,
    code: str,
    place: _Place | None,
    use: CouponChannel,
    now: datetime,
) -> tuple[CouponErrorCode, str] | None:
    """Why this coupon cannot be redeemed here now; None when it can."""
    found = (await session.execute(_coupon_in_reach(principal, code))).first()
    if found is None:
        return CouponErrorCode.NOT_FOUND, "No such coupon."
    coupon, template = found
    return await _problem(session, principal, coupon, template, place, use, now)


async def _redeemed_in_reach(session: AsyncSession, principal: Principal, coupon: Coupon) -> bool:
    """The coupon was redeemed at a store the principal sees (HQ: anywhere)."""
    if principal.is_hq:
        return True
    if coupon.redeemed_store_id is None:
        return False
    found = await session.scalar(
        stores_query(principal)
        .with_only_columns(Store.id)
        .where(Store.id == coupon.redeemed_store_id)
    )
    return found is not None


async def _problem(
    session: AsyncSession,
    principal: Principal,
    coupon: Coupon,
    template: CouponTemplate,
    place: _Place | None,
    use: CouponChannel,
    now: datetime,
) -> tuple[CouponErrorCode, str] | None:
    # Only for a coupon the principal could use somewhere (``_coupon_in_reach``). Where first
    # (channel, store), then whether (status), then when (validity): a cashier at the wrong
    # store learns that before anything about the coupon's state.
    if template.use_channel not in ACCEPTS[use]:
        return (
            CouponErrorCode.WRONG_CHANNEL,
            f"This coupon is used {template.use_channel.value} only.",
        )
    allowed = await session.scalar(
        select(
            usable_at(
                literal(template.id),
                place.store_id if place is not None else None,
                place.partner_id if place is not None else None,
            )
        )
    )
    if not allowed:
        return CouponErrorCode.WRONG_STORE, "This coupon cannot be used at this store."
    if coupon.status is CouponStatus.REDEEMED:
        # When, only if it was used in the principal's own stores: an unrestricted coupon
        # used at another partner's store is "already redeemed", not that partner's trade.
        if coupon.redeemed_at is not None and await _redeemed_in_reach(session, principal, coupon):
            when = coupon.redeemed_at.isoformat()
            return CouponErrorCode.ALREADY_REDEEMED, f"This coupon was redeemed at {when}."
        return CouponErrorCode.ALREADY_REDEEMED, "This coupon was already redeemed."
    if coupon.status is CouponStatus.VOIDED:
        return CouponErrorCode.VOIDED, "This coupon was voided."
    if now < coupon.valid_from:
        return CouponErrorCode.NOT_STARTED, f"Valid from {coupon.valid_from.isoformat()}."
    if now >= coupon.valid_until:
        return CouponErrorCode.EXPIRED, f"Expired at {coupon.valid_until.isoformat()}."
    return None


def _mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


async def check_coupon(
    session: AsyncSession,
    principal: Principal,
    code: str,
    *,
    store_id: int | None = None,
    channel: CouponChannel | None = None,
    now: datetime | None = None,
) -> CouponCheck | None:
    """What the redeeming store sees when it scans a code: validity and whether it would
    redeem here now. The holder is shown masked (a name initial, 138****1234). None for an
    unknown code, a store out of the principal's reach, or a coupon the principal could never
    use at its stores."""
    now = now or utcnow()
    try:
        place = await _redeeming_store(session, principal, store_id)
    except DomainError as error:
        if error.problems[0].code is CouponErrorCode.NOT_FOUND:
            return None
        raise
    use = decide_channel(principal, channel, at_store=place is not None)
    canonical = normalize_code(code)
    if canonical is None:
        return None
    # A coupon this principal could never redeem is none of its business: null, like an
    # unknown code, before any channel, store or state is looked at.
    found = (
        await session.execute(
            _coupon_in_reach(principal, canonical)
            .add_columns(Customer.name)
            .join(Customer, Customer.id == Coupon.customer_id)
        )
    ).first()
    if found is None:
        return None
    coupon, template, name = found
    problem = await _problem(session, principal, coupon, template, place, use, now)
    phone = await session.scalar(
        select(CustomerIdentity.value)
        .where(
            CustomerIdentity.customer_id == coupon.customer_id,
            CustomerIdentity.kind == IdentityKind.PHONE,
        )
        .order_by(CustomerIdentity.id)
        .limit(1)
    )
    return CouponCheck(
        coupon=coupon,
        template=template,
        problem=problem[0] if problem else None,
        holder_name=_mask_name(name),
        holder_phone=mask_phone(phone),
    )
