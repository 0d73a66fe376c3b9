"""Channel conflict (渠道冲突): recording violations and reading them back.

Detection happens where the facts are (an order being placed, a coupon being redeemed); this
module gives those places two tools: ``outside_territory``, an SQL expression they fold into a
statement they run anyway, and ``record_violation``, an idempotent insert. Reading violations
is HQ's business only: they are evidence about partners, not something a partner browses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, String, exists, false, func, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.catalog.models import SalesChannel
from api.conflicts.models import ChannelViolation, ViolationKind
from api.partners.models import PartnerTerritory

VIOLATION_KEYSET = (ChannelViolation.id,)
_DETAIL_MAX = 300
_SOURCE_KEY_MAX = 120


def _covering_codes(region: Any) -> list[Any]:
    """The territory codes that cover a region: itself, its city (310100 covers 310115) and its
    province (310000), the rule partners' region filter uses (api/partners/service.py)."""
    if isinstance(region, str):
        return [region, region[:4] + "00", region[:2] + "0000"]
    city = func.substr(region, 1, 4).concat(literal("00", String(6)))
    province = func.substr(region, 1, 2).concat(literal("0000", String(6)))
    return [region, city, province]


def outside_territory(partner_id: Any, region_code: Any) -> ColumnElement[bool]:
    """True when the partner protects territories (区域保护) and none of them covers the region.

    ``partner_id`` and ``region_code`` are columns or plain values, so callers fold the check
    into a statement they run anyway. A partner without territories sells anywhere, and an
    HQ-run location (no partner) is never outside: both are false.
    """
    if partner_id is None:
        return false()
    partner = literal(partner_id) if isinstance(partner_id, int) else partner_id
    held = exists().where(PartnerTerritory.partner_id == partner)
    covering = exists().where(
        PartnerTerritory.partner_id == partner,
        or_(*(PartnerTerritory.region_code == code for code in _covering_codes(region_code))),
    )
    return held & ~covering


async def is_outside_territory(session: AsyncSession, partner_id: int, region_code: str) -> bool:
    return bool(await session.scalar(select(outside_territory(partner_id, region_code))))


async def record_violation(
    session: AsyncSession,
    *,
    kind: ViolationKind,
    source_key: str,
    detail: str,
    now: datetime,
    partner_id: int | None = None,
    store_id: int | None = None,
    channel: SalesChannel | None = None,
    order_id: int | None = None,
    coupon_id: int | None = None,
    sku_id: int | None = None,
    region_code: str | None = None,
    expected_amount: Decimal | None = None,
    actual_amount: Decimal | None = None,
) -> None:
    """Record a violation once: ``source_key`` names what was detected ("order:12:line:1:
    price_below_floor"), so a replayed detection (a retried import row) adds nothing."""
    if not 0 < len(source_key) <= _SOURCE_KEY_MAX:
        raise ValueError(f"a violation's source key is 1-{_SOURCE_KEY_MAX} characters")
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    await session.execute(
        insert(ChannelViolation)
        .values(
            kind=kind,
            source_key=source_key,
            partner_id=partner_id,
            store_id=store_id,
            channel=channel,
            order_id=order_id,
            coupon_id=coupon_id,
            sku_id=sku_id,
            region_code=region_code,
            expected_amount=expected_amount,
            actual_amount=actual_amount,
            detail=detail[:_DETAIL_MAX],
            detected_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source_key"])
    )


# --- reads ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ViolationFilter:
    kinds: Sequence[ViolationKind] = ()
    partner_ids: Sequence[int] = ()
    store_ids: Sequence[int] = ()
    detected_from: datetime | None = None  # inclusive
    detected_to: datetime | None = None  # exclusive


def violations_query(principal: Principal, where: ViolationFilter | None = None) -> Select[Any]:
    """Violations HQ may read; nothing for anyone else (the schema refuses them before)."""
    stmt = select(ChannelViolation)
    if not principal.is_hq:
        return stmt.where(false())
    if where is None:
        return stmt
    if where.kinds:
        stmt = stmt.where(ChannelViolation.kind.in_(where.kinds))
    if where.partner_ids:
        stmt = stmt.where(ChannelViolation.partner_id.in_(where.partner_ids))
    if where.store_ids:
        stmt = stmt.where(ChannelViolation.store_id.in_(where.store_ids))
    if where.detected_from is not None:
        stmt = stmt.where(ChannelViolation.detected_at >= where.detected_from)
    if where.detected_to is not None:
        stmt = stmt.where(ChannelViolation.detected_at < where.detected_to)
    return stmt


async def violations_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, ChannelViolation]:
    if not ids:
        return {}
    rows = await session.scalars(
        violations_query(principal).where(ChannelViolation.id.in_(set(ids)))
    )
    return {row.id: row for row in rows}


__all__ = [
    "VIOLATION_KEYSET",
    "ViolationFilter",
    "is_outside_territory",
    "outside_territory",
    "record_violation",
    "violations_by_id",
    "violations_query",
]
