"""Who sees which coupon templates and coupons, and where and on which channel a template
may be used. Every read of the domain goes through these; a claim and a redemption put the
same conditions into their guards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal, Role
from api.auth.scope import restrict
from api.coupons.errors import CouponErrorCode
from api.coupons.models import (
    Coupon,
    CouponChannel,
    CouponKind,
    CouponTemplate,
    CouponTemplatePartner,
    CouponTemplateStore,
    TemplateStatus,
)
from api.errors import DomainError
from api.partners.models import Store

# Which channels a template accepts, for a claim or a use in ``channel``.
ACCEPTS: dict[CouponChannel, tuple[CouponChannel, ...]] = {
    CouponChannel.ONLINE: (CouponChannel.ONLINE, CouponChannel.BOTH),
    CouponChannel.OFFLINE: (CouponChannel.OFFLINE, CouponChannel.BOTH),
}


@dataclass(slots=True)
class TemplateFilter:
    statuses: Sequence[TemplateStatus] = ()
    kinds: Sequence[CouponKind] = ()
    # Active, inside its claim window and with stock left at ``now``.
    claimable_at: datetime | None = None
    search: str | None = None


TEMPLATE_KEYSET = (CouponTemplate.id,)
COUPON_KEYSET = (Coupon.id,)


def _restriction_free(template_id: Any) -> ColumnElement[bool]:
    return and_(
        ~exists().where(CouponTemplateStore.template_id == template_id),
        ~exists().where(CouponTemplatePartner.template_id == template_id),
    )


def usable_at(template_id: Any, store_id: Any, partner_id: Any) -> Any:
    """The template may be used at this store: it lists no stores or partners, or it lists
    the store, or the store's partner. Without a store only an unrestricted one may."""
    if store_id is None:
        return _restriction_free(template_id)
    listed: list[Any] = [
        exists().where(
            CouponTemplateStore.template_id == template_id,
            CouponTemplateStore.store_id == store_id,
        )
    ]
    if partner_id is not None:
        listed.append(
            exists().where(
                CouponTemplatePartner.template_id == template_id,
                CouponTemplatePartner.partner_id == partner_id,
            )
        )
    return or_(_restriction_free(template_id), *listed)


def template_scope(principal: Principal) -> ColumnElement[bool] | None:
    """Which templates a principal may see (None: all). HQ sees all; members see all (they
    are offers, and a member's coupons name theirs); a partner or store principal sees those
    usable at one of its stores (a store-level one: at its store), so another partner's
    exclusive campaign, and any coupon of it, answers like a missing one."""
    if principal.is_hq or principal.is_member:
        return None
    if principal.partner_id is None:
        return false()
    own_store = [Store.partner_id == principal.partner_id]
    if principal.store_id is not None:
        own_store.append(Store.id == principal.store_id)
    return or_(
        _restriction_free(CouponTemplate.id),
        exists().where(
            CouponTemplatePartner.template_id == CouponTemplate.id,
            CouponTemplatePartner.partner_id == principal.partner_id,
        ),
        exists().where(
            CouponTemplateStore.template_id == CouponTemplate.id,
            CouponTemplateStore.store_id == Store.id,
            *own_store,
        ),
    )


def templates_query(principal: Principal, where: TemplateFilter | None = None) -> Select[Any]:
    """Templates the principal may see (see ``template_scope``)."""
    stmt = select(CouponTemplate)
    scope = template_scope(principal)
    if scope is not None:
        stmt = stmt.where(scope)
    if where is None:
        return stmt
    if where.statuses:
        stmt = stmt.where(CouponTemplate.status.in_(where.statuses))
    if where.kinds:
        stmt = stmt.where(CouponTemplate.kind.in_(where.kinds))
    if where.claimable_at is not None:
        at = where.claimable_at
        stmt = stmt.where(
            CouponTemplate.status == TemplateStatus.ACTIVE,
            CouponTemplate.issued < CouponTemplate.total_stock,
            or_(CouponTemplate.claim_starts_at.is_(None), CouponTemplate.claim_starts_at <= at),
            or_(CouponTemplate.claim_ends_at.is_(None), CouponTemplate.claim_ends_at > at),
            or_(CouponTemplate.valid_until.is_(None), CouponTemplate.valid_until > at),
        )
    if where.search:
        stmt = stmt.where(func.lower(CouponTemplate.name).like(f"%{_like(where.search)}%"))
    return stmt


def _like(text: str) -> str:
    return text.strip().lower().replace("\\", "").replace("%", "").replace("_", "")


async def templates_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, CouponTemplate]:
    if not ids:
        return {}
    rows = await session.scalars(templates_query(principal).where(CouponTemplate.id.in_(set(ids))))
    return {t.id: t for t in rows}


# A coupon is seen by its holder (member token), by HQ, and by the partner (or store) that
# recruited its holder: the same people who see the customer.
def coupons_query(principal: Principal) -> Select[Any]:
    return restrict(select(Coupon), Coupon, principal)


async def coupons_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Coupon]:
    if not ids:
        return {}
    rows = await session.scalars(coupons_query(principal).where(Coupon.id.in_(set(ids))))
    return {c.id: c for c in rows}


def _states_channel(principal: Principal) -> bool:
    """Who may say which channel they act on: HQ, and a partner-wide integration (a POS
    redeems OFFLINE, a web shop ONLINE). Everyone else's channel follows from who they are."""
    return principal.is_hq or (principal.role is Role.INTEGRATION and principal.store_id is None)


def decide_channel(
    principal: Principal, stated: CouponChannel | None, *, at_store: bool
) -> CouponChannel:
    """The channel of a claim or a use, decided by the principal, never just by the caller:

    * a member (the mini-program) acts ONLINE; a member cannot claim OFFLINE;
    * store staff, a store's integration and partner admins act OFFLINE, at a store;
    * HQ and a partner-wide integration state it (default: OFFLINE at a store, else ONLINE);
      an OFFLINE one names a store.
    Stating a channel the principal cannot act on is refused (FORBIDDEN on ``channel``).
    """
    if stated is CouponChannel.BOTH:
        raise DomainError.one(
            CouponErrorCode.INVALID, "A claim or use happens online or offline.", "channel"
        )
    if _states_channel(principal):
        decided = stated or (CouponChannel.OFFLINE if at_store else CouponChannel.ONLINE)
        if decided is CouponChannel.OFFLINE and not at_store:
            raise DomainError.one(
                CouponErrorCode.REQUIRED, "Offline means at a store: which one?", "storeId"
            )
        return decided
    if principal.is_member:
        decided, why = CouponChannel.ONLINE, "Members act online; offline happens at a store."
    else:
        decided, why = CouponChannel.OFFLINE, "Staff act at a store's counter: offline."
    if stated is not None and stated is not decided:
        raise DomainError.one(CouponErrorCode.FORBIDDEN, why, "channel")
    return decided
