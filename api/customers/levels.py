"""Member levels (会员等级): their definitions, configured by HQ. Each qualifies over SPEND
(Σ qualifying spend) or POINTS (Σ points earned) in a rolling window; how a member moves
between them is ``qualification.py`` (at once, upwards) and ``level_review.py`` (at period
end, downwards)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.customers.errors import CustomerErrorCode, require_hq
from api.customers.models import (
    LevelMetric,
    MemberLevel,
)
from api.errors import DomainError, Problem

_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
MAX_WINDOW_DAYS = 3660
MAX_GRACE_DAYS = 366


_CENT = Decimal("0.01")


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
