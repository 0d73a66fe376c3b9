"""The pure rules: the expiry policy (rolling and annual) and the earning-rule engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from api.loyalty.rules import PointsPolicy, Purchase, PurchaseLine, best_rule, quote
from api.settings import Settings

# --- the policy -------------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_rolling_expiry_is_n_days_after_earning_and_pending_lasts_the_return_window():
    policy = PointsPolicy(pending_days=7, expiry="rolling:365")
    earned = at("2026-03-10T02:00:00")
    assert policy.expires_at(earned) == earned + timedelta(days=365)
    assert policy.available_at(earned, pending=True) == earned + timedelta(days=7)
    assert policy.available_at(earned, pending=False) == earned


def test_annual_expiry_is_the_end_of_that_day_next_year_in_china_time():
    # 积分有效期至次年12月31日: the end of 12-31 in Shanghai is 16:00 UTC that day.
    policy = PointsPolicy(expiry="annual:12-31")
    assert policy.expires_at(at("2026-03-05T00:00:00")) == at("2027-12-31T16:00:00")
    # 12-31 23:00 in Shanghai (15:00 UTC) is still this year's 12-31: next year's end.
    assert policy.expires_at(at("2026-12-31T15:00:00")) == at("2027-12-31T16:00:00")
    # 01-01 01:00 in Shanghai (17:00 UTC the day before) already counts as the new year.
    assert policy.expires_at(at("2026-12-31T17:00:00")) == at("2028-12-31T16:00:00")


def test_annual_expiry_on_another_date_always_leaves_at_least_a_year():
    policy = PointsPolicy(expiry="annual:06-30", timezone="UTC")
    assert policy.expires_at(at("2026-06-29T12:00:00")) == at("2027-07-01T00:00:00")
    assert policy.expires_at(at("2026-07-01T00:00:00")) == at("2028-07-01T00:00:00")
    for day in range(0, 366, 7):
        earned = at("2026-01-01T00:00:00") + timedelta(days=day)
        assert policy.expires_at(earned) - earned >= timedelta(days=365)


def test_never_expiring_points():
    assert PointsPolicy(expiry="never").expires_at(at("2026-01-01T00:00:00")) is None


@pytest.mark.parametrize(
    ("pending_days", "expiry", "timezone", "message"),
    [
        (7, "rolling:7", "Asia/Shanghai", "more than the pending days"),
        (7, "rolling:99999", "Asia/Shanghai", "at most 3650"),
        (7, "annual:02-29", "Asia/Shanghai", "not a day of every year"),
        (7, "annual:13-01", "Asia/Shanghai", "not a day of every year"),
        (7, "yearly", "Asia/Shanghai", "must be 'rolling:N'"),
        (-1, "rolling:365", "Asia/Shanghai", "pending days"),
        (400, "rolling:365", "Asia/Shanghai", "pending days"),
        (7, "rolling:365", "Mars/Olympus", "time zone"),
    ],
)
def test_a_bad_policy_is_refused(pending_days, expiry, timezone, message):
    with pytest.raises(ValueError, match=message):
        PointsPolicy(pending_days=pending_days, expiry=expiry, timezone=timezone)


def test_settings_read_and_validate_the_policy_at_startup():
    settings = Settings.from_env(
        {"QUDAO_POINTS_PENDING_DAYS": "14", "QUDAO_POINTS_EXPIRY": "annual:12-31"}
    )
    assert settings.points_policy == PointsPolicy(14, "annual:12-31", "Asia/Shanghai")
    assert Settings.from_env({}).points_policy == PointsPolicy(7, "rolling:365")
    with pytest.raises(ValueError, match="points expiry"):
        Settings.from_env({"QUDAO_POINTS_EXPIRY": "rolling:3"})
    with pytest.raises(ValueError):
        Settings.from_env({"QUDAO_POINTS_PENDING_DAYS": "seven"})


# --- the earning-rule engine ------------------------------------------------------------------


@dataclass
class Rule:
    id: int
    channel: str | None = None
    store_id: int | None = None
    sku: str | None = None
    level_id: int | None = None
    points_per_yuan: Decimal = Decimal(1)
    multiplier: Decimal = Decimal(1)
    priority: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    active: bool = True


NOW = at("2026-03-10T02:00:00")


def cart(*lines: tuple[str, str], channel="mini_program", store_id=None, level_id=None):
    return Purchase(
        source_id="o-1",
        channel=channel,
        store_id=store_id,
        level_id=level_id,
        lines=[PurchaseLine(sku, Decimal(amount)) for sku, amount in lines],
    )


def test_the_most_specific_rule_prices_each_line():
    base = Rule(1)  # 1 point per yuan everywhere
    online = Rule(2, channel="mini_program", multiplier=Decimal(2))
    tea = Rule(3, channel="mini_program", sku="TEA-1", multiplier=Decimal(5))
    result = quote([base, online, tea], cart(("TEA-1", "10"), ("CUP-1", "10")), NOW)
    assert [(q.sku, q.points, q.rule_id) for q in result.lines] == [
        ("TEA-1", 50, 3),
        ("CUP-1", 20, 2),
    ]
    assert result.points == 70
    # In a store the online rules do not apply: the base rule does.
    assert quote([base, online, tea], cart(("TEA-1", "10"), channel="store"), NOW).points == 10


def test_priority_beats_specificity_and_ties_go_to_the_newest_rule():
    specific = Rule(1, sku="TEA-1", multiplier=Decimal(3))
    campaign = Rule(2, multiplier=Decimal(10), priority=5)  # 双十一: everything ×10
    line = PurchaseLine("TEA-1", Decimal(1))
    assert best_rule([specific, campaign], cart(("TEA-1", "1")), line, NOW) is campaign
    older, newer = Rule(3, sku="TEA-1"), Rule(4, sku="TEA-1")
    assert best_rule([newer, older], cart(("TEA-1", "1")), line, NOW) is newer


def test_rules_apply_only_inside_their_window_and_while_active():
    window = Rule(
        1, multiplier=Decimal(2), starts_at=NOW, ends_at=NOW + timedelta(days=1), priority=1
    )
    base = Rule(2)
    purchase = cart(("TEA-1", "10"))
    assert quote([window, base], purchase, NOW - timedelta(seconds=1)).points == 10
    assert quote([window, base], purchase, NOW).points == 20
    assert quote([window, base], purchase, NOW + timedelta(days=1)).points == 10  # end exclusive
    window.active = False
    assert quote([window, base], purchase, NOW).points == 10


def test_store_and_level_conditions():
    rules = [Rule(1, store_id=7, level_id=3, multiplier=Decimal(3)), Rule(2)]  # gold in store 7
    for store_id, level_id, expected in ((7, 3, 30), (7, 2, 10), (8, 3, 10)):
        purchase = cart(("A", "10"), store_id=store_id, level_id=level_id)
        assert quote(rules, purchase, NOW).points == expected


def test_points_round_down_and_free_lines_or_no_rule_earn_nothing():
    rule = Rule(1, points_per_yuan=Decimal("0.1"), multiplier=Decimal("1.5"))
    # 99.99 × 0.1 × 1.5 = 14.9985 → 14
    assert quote([rule], cart(("A", "99.99")), NOW).points == 14
    assert quote([rule], cart(("A", "0")), NOW).points == 0
    assert quote([Rule(1, sku="B")], cart(("A", "100")), NOW).lines[0].rule_id is None
