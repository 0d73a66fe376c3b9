"""How templates are doing: issued, claimed, redeemed, by channel and by store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.coupons.models import Coupon, CouponOrigin, CouponStatus, CouponTemplate
from api.db import utcnow


@dataclass(slots=True)
class TemplateStats:
    issued: int = 0  # the stock counter: coupons handed out, claimed or granted
    claimed: int = 0  # origin CLAIM
    granted: int = 0  # origin GRANT
    redeemed: int = 0
    voided: int = 0
    expired: int = 0  # still unredeemed and past its validity
    remaining: int = 0  # stock not yet issued
    claims_by_channel: dict[str, int] = field(default_factory=dict)
    redemptions_by_store: dict[int | None, int] = field(default_factory=dict)


async def template_stats(
    session: AsyncSession, template_ids: Sequence[int], *, now: datetime | None = None
) -> dict[int, TemplateStats]:
    """Stats for many templates in three statements (templates, coupon counts by state,
    claims by channel and redemptions by store)."""
    now = now or utcnow()
    ids = list(dict.fromkeys(template_ids))
    stats = {t: TemplateStats() for t in ids}
    if not ids:
        return stats
    for template_id, issued, total in await session.execute(
        select(CouponTemplate.id, CouponTemplate.issued, CouponTemplate.total_stock).where(
            CouponTemplate.id.in_(ids)
        )
    ):
        stats[template_id].issued = issued
        stats[template_id].remaining = max(0, total - issued)

    expired = and_(Coupon.status == CouponStatus.CLAIMED, Coupon.valid_until <= now)
    counts = await session.execute(
        select(
            Coupon.template_id,
            func.count().filter(Coupon.origin == CouponOrigin.CLAIM),
            func.count().filter(Coupon.origin == CouponOrigin.GRANT),
            func.count().filter(Coupon.status == CouponStatus.REDEEMED),
            func.count().filter(Coupon.status == CouponStatus.VOIDED),
            func.count().filter(expired),
        )
        .where(Coupon.template_id.in_(ids))
        .group_by(Coupon.template_id)
    )
    for template_id, claimed, granted, redeemed, voided, n_expired in counts:
        entry = stats[template_id]
        entry.claimed, entry.granted, entry.redeemed = claimed, granted, redeemed
        entry.voided, entry.expired = voided, n_expired

    # One statement for both breakdowns: ('c', channel) and ('s', store) groups.
    by_channel = (
        select(
            Coupon.template_id,
            literal("c").label("what"),
            Coupon.claim_channel.label("channel"),
            literal(None, Coupon.redeemed_store_id.type).label("store_id"),
            func.count().label("n"),
        )
        .where(Coupon.template_id.in_(ids))
        .group_by(Coupon.template_id, Coupon.claim_channel)
    )
    by_store = (
        select(
            Coupon.template_id,
            literal("s").label("what"),
            literal(None, Coupon.claim_channel.type).label("channel"),
            Coupon.redeemed_store_id,
            func.count().label("n"),
        )
        .where(Coupon.template_id.in_(ids), Coupon.status == CouponStatus.REDEEMED)
        .group_by(Coupon.template_id, Coupon.redeemed_store_id)
    )
    breakdowns: dict[int, list[tuple[str, Any, int]]] = defaultdict(list)
    for template_id, what, channel, store_id, n in await session.execute(
        by_channel.union_all(by_store)
    ):
        breakdowns[template_id].append((what, channel if what == "c" else store_id, n))
    for template_id, entries in breakdowns.items():
        entry = stats[template_id]
        for what, key, n in sorted(entries, key=lambda e: (e[0], e[1] is None, e[1] or 0)):
            if what == "c":
                entry.claims_by_channel[key] = n
            else:
                entry.redemptions_by_store[key] = n
    return stats
