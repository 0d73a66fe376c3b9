"""Release: an order was cancelled, expired or refunded, and the coupons it used are given
back (RESTORE) or voided (VOID), per each template's policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.coupons.errors import CouponErrorCode
from api.coupons.models import CancelPolicy, Coupon, CouponStatus, CouponTemplate
from api.db import utcnow
from api.errors import DomainError
from api.partners.models import Store


@dataclass(slots=True)
class ReleaseResult:
    restored: list[int] = field(default_factory=list)
    voided: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OrderScope:
    """Whose order an order reference names. References are free text, unique at best within
    one partner: "1001" at partner A and "1001" at partner B are different orders.

    ``partner_id`` None: HQ's own orders (at HQ-run stores, or online without a store).
    ``store_id``: only that store's (a store-level caller).
    """

    partner_id: int | None
    store_id: int | None = None

    @classmethod
    def of(cls, principal: Principal) -> OrderScope:
        """The orders a principal cancels: HQ its own; a partner its stores'; store staff
        their store's. Members cancel no order here."""
        if principal.is_hq:
            return cls(partner_id=None)
        if principal.is_member or principal.partner_id is None:
            raise DomainError.one(CouponErrorCode.FORBIDDEN, "Only the order's seller releases.")
        return cls(partner_id=principal.partner_id, store_id=principal.store_id)

    def redeemed_within(self) -> ColumnElement[bool]:
        if self.store_id is not None:
            return Coupon.redeemed_store_id == self.store_id
        if self.partner_id is None:
            hq_stores = select(Store.id).where(Store.partner_id.is_(None))
            return or_(Coupon.redeemed_store_id.is_(None), Coupon.redeemed_store_id.in_(hq_stores))
        own_stores = select(Store.id).where(Store.partner_id == self.partner_id)
        return Coupon.redeemed_store_id.in_(own_stores)


async def release(
    session: AsyncSession,
    scope: Principal | OrderScope,
    *,
    order_ref: str,
    now: datetime | None = None,
) -> ReleaseResult:
    """An order was cancelled: give back the coupons it used, per each template's policy.

    Only coupons redeemed for ``order_ref`` within ``scope`` (a principal: the orders it
    sells; or the order's seller, given by the orders domain) are touched, never another
    partner's coupons used on an order with the same reference.

    RESTORE puts a still-valid coupon back to CLAIMED (an expired one is voided: it could
    not be used anyway); VOID voids it. Guarded by status = REDEEMED, so running it again,
    or concurrently, changes nothing more.
    """
    now = now or utcnow()
    seller = scope if isinstance(scope, OrderScope) else OrderScope.of(scope)
    return await _release(
        session, and_(Coupon.redeemed_for == order_ref, seller.redeemed_within()), now
    )


async def release_order_coupons(
    session: AsyncSession, order_id: int, coupon_ids: Sequence[int], *, now: datetime
) -> ReleaseResult:
    """A Qudao order was cancelled, expired or refunded in full: give back exactly the
    coupons it used (``coupon_ids``, from its ``order_coupon`` rows), per each template's
    policy as ``release`` does.

    By id, not by reference: a reference is free text, and a coupon redeemed at a counter
    for a receipt that happens to read like the order's id must stay used. Each coupon must
    still be redeemed for this order (``redeemed_for`` is the order id), so one released
    once, and maybe used again since, is never touched twice.
    """
    if not coupon_ids:
        return ReleaseResult()
    ours = and_(Coupon.id.in_(coupon_ids), Coupon.redeemed_for == str(order_id))
    return await _release(session, ours, now)


async def _release(
    session: AsyncSession, ours: ColumnElement[bool], now: datetime
) -> ReleaseResult:
    """Restore (still valid, RESTORE policy) or void the REDEEMED coupons matching ``ours``."""
    restorable = select(CouponTemplate.id).where(
        CouponTemplate.cancel_policy == CancelPolicy.RESTORE
    )
    restored = await session.execute(
        update(Coupon)
        .where(
            ours,
            Coupon.status == CouponStatus.REDEEMED,
            Coupon.template_id.in_(restorable),
            Coupon.valid_until > now,
        )
        .values(
            status=CouponStatus.CLAIMED,
            redeemed_at=None,
            redeemed_store_id=None,
            redeemed_by=None,
            redeemed_for=None,
        )
        .returning(Coupon.id),
        execution_options={"synchronize_session": False},
    )
    result = ReleaseResult(restored=sorted(restored.scalars()))
    voided = await session.execute(
        update(Coupon)
        .where(ours, Coupon.status == CouponStatus.REDEEMED)
        .values(status=CouponStatus.VOIDED, voided_at=now)
        .returning(Coupon.id),
        execution_options={"synchronize_session": False},
    )
    result.voided = sorted(voided.scalars())
    return result
