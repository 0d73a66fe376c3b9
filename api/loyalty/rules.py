"""Pure points rules: the expiry policy and the earning-rule engine. No database here, so the
same code quotes a cart, earns for a purchase and is property-tested without a session."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_ROLLING = re.compile(r"rolling:(\d{1,5})")
_ANNUAL = re.compile(r"annual:(\d{2})-(\d{2})")
_NEVER = "never"
# Far enough for any programme, short enough that a typo (rolling:36500) is refused.
MAX_ROLLING_DAYS = 3650
MAX_PENDING_DAYS = 365


@dataclass(frozen=True, slots=True)
class PointsPolicy:
    """When earned points unlock and when they expire.

    ``pending_days``: the return window; earned points are pending until it has passed.
    ``expiry``: ``rolling:N`` (N days after earning), ``annual:MM-DD`` (积分有效期至次年MM月DD日:
    the end of that day, in ``timezone``, in the year after the first such date following the
    earning; so a lot always lives at least a year) or ``never``.
    """

    pending_days: int = 7
    expiry: str = "rolling:365"
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if not 0 <= self.pending_days <= MAX_PENDING_DAYS:
            raise ValueError(
                f"points pending days must be between 0 and {MAX_PENDING_DAYS}; "
                f"got {self.pending_days}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown points time zone {self.timezone!r}") from None
        if self.expiry == _NEVER:
            return
        if rolling := _ROLLING.fullmatch(self.expiry):
            days = int(rolling.group(1))
            # A lot must outlive its return window, or it would expire before it unlocks.
            if not self.pending_days < days <= MAX_ROLLING_DAYS:
                raise ValueError(
                    f"points expiry {self.expiry!r}: N must be more than the pending days "
                    f"({self.pending_days}) and at most {MAX_ROLLING_DAYS}"
                )
            return
        if annual := _ANNUAL.fullmatch(self.expiry):
            month, day = int(annual.group(1)), int(annual.group(2))
            try:
                date(2001, month, day)  # not a leap year: 02-29 would not exist every year
            except ValueError:
                raise ValueError(
                    f"points expiry {self.expiry!r}: not a day of every year"
                ) from None
            return
        raise ValueError(
            f"points expiry must be 'rolling:N', 'annual:MM-DD' or 'never'; got {self.expiry!r}"
        )

    def available_at(self, earned_at: datetime, *, pending: bool) -> datetime:
        return earned_at + timedelta(days=self.pending_days) if pending else earned_at

    def expires_at(self, earned_at: datetime) -> datetime | None:
        if self.expiry == _NEVER:
            return None
        if rolling := _ROLLING.fullmatch(self.expiry):
            return earned_at + timedelta(days=int(rolling.group(1)))
        annual = _ANNUAL.fullmatch(self.expiry)
        assert annual is not None  # validated in __post_init__
        month, day = int(annual.group(1)), int(annual.group(2))
        zone = ZoneInfo(self.timezone)
        local = earned_at.astimezone(zone)

        def end_of(year: int) -> datetime:
            # The end of MM-DD local time is the start of the next local day.
            start = datetime.combine(date(year, month, day) + timedelta(days=1), time(), zone)
            return start.astimezone(UTC)

        year = local.year if end_of(local.year) > earned_at else local.year + 1
        # ... and then one more year: points earned on 12-30 do not vanish the next day.
        return end_of(year + 1)

    def describe(self) -> str:
        return f"pending {self.pending_days}d, expiry {self.expiry} ({self.timezone})"


# --- earning rules ----------------------------------------------------------------------------


class EarningRule(Protocol):
    """What the engine reads of a rule (a ``PointsEarningRule`` row, or a test double)."""

    id: int
    channel: str | None
    store_id: int | None
    sku: str | None
    level_id: int | None
    points_per_yuan: Decimal
    multiplier: Decimal
    priority: int
    starts_at: datetime | None
    ends_at: datetime | None
    active: bool


@dataclass(frozen=True, slots=True)
class PurchaseLine:
    sku: str
    amount: Decimal  # what the customer paid for the line, in yuan


@dataclass(frozen=True, slots=True)
class Purchase:
    """A paid purchase as the earning rules see it."""

    source_id: str
    channel: str
    lines: Sequence[PurchaseLine]
    store_id: int | None = None
    level_id: int | None = None  # the member level at purchase time


@dataclass(frozen=True, slots=True)
class LineQuote:
    sku: str
    amount: Decimal
    points: int
    rule_id: int | None  # None: no rule matched, the line earns nothing


@dataclass(frozen=True, slots=True)
class Quote:
    points: int
    lines: tuple[LineQuote, ...]


def rule_matches(rule: EarningRule, purchase: Purchase, line: PurchaseLine, now: datetime) -> bool:
    if not rule.active:
        return False
    if rule.starts_at is not None and now < rule.starts_at:
        return False
    if rule.ends_at is not None and now >= rule.ends_at:
        return False
    return (
        (rule.channel is None or rule.channel == purchase.channel)
        and (rule.store_id is None or rule.store_id == purchase.store_id)
        and (rule.sku is None or rule.sku == line.sku)
        and (rule.level_id is None or rule.level_id == purchase.level_id)
    )


def specificity(rule: EarningRule) -> int:
    """How many conditions narrow the rule: a SKU rule beats a channel-wide one."""
    return sum(
        condition is not None
        for condition in (rule.channel, rule.store_id, rule.sku, rule.level_id)
    )


def best_rule(
    rules: Sequence[EarningRule], purchase: Purchase, line: PurchaseLine, now: datetime
) -> EarningRule | None:
    """The rule that prices a line: highest priority, then most specific, then newest (the
    higher id), so the choice is total and does not depend on the order rows came in."""
    matching = [r for r in rules if rule_matches(r, purchase, line, now)]
    if not matching:
        return None
    return max(matching, key=lambda r: (r.priority, specificity(r), r.id))


def line_points(rule: EarningRule, amount: Decimal) -> int:
    if amount <= 0:
        return 0
    points = amount * rule.points_per_yuan * rule.multiplier
    return int(points.to_integral_value(rounding=ROUND_DOWN))


def quote(rules: Sequence[EarningRule], purchase: Purchase, now: datetime) -> Quote:
    """How many points a purchase earns under ``rules`` at ``now``: per line, the best rule's
    ``amount × points_per_yuan × multiplier``, rounded down."""
    lines = []
    for line in purchase.lines:
        rule = best_rule(rules, purchase, line, now)
        points = line_points(rule, line.amount) if rule is not None else 0
        lines.append(LineQuote(line.sku, line.amount, points, rule.id if rule else None))
    return Quote(sum(q.points for q in lines), tuple(lines))
