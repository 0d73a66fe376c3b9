"""The reports' arithmetic (api/analytics/reports/), at service level, over the hand-computed
data set of tests/analytics/dataset.py (read its docstring first: every number below is
worked out from its tables, not read back from the code).

Every expected figure carries the arithmetic that gives it. Money is Decimal yuan; rates are
4 places, half up.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, update

from api.analytics.business_calendar import Period
from api.analytics.metrics import refresh_customer_metrics
from api.analytics.reports.attributed_sales import (
    AttributionFilter,
    AttributionGroup,
    attributed_sales,
)
from api.analytics.reports.cac import ChannelPerformance, channel_performance
from api.analytics.reports.counted import Audience
from api.analytics.reports.ltv import LifetimeValue, LtvGroup, lifetime_value
from api.analytics.reports.repurchase import Repurchase, RepurchaseGroup, repurchase_rate
from api.analytics.reports.retention import cohort_retention
from api.analytics.reports.rfm import rfm_distribution
from api.catalog.models import SalesChannel
from api.customers.models import Customer, CustomerStatus
from api.db import Database
from api.errors import DomainError
from api.orders.models import Fulfillment, Order, OrderStatus
from tests.analytics.dataset import HQ, MP, POS, SCORED_AT, World, at, build

D = Decimal
CST = timezone(timedelta(hours=8))
JAN, JUN = at(1, 1), at(6, 1)
APRIL = datetime(2026, 4, 1, tzinfo=CST)  # midnight in Beijing: March is the last month before


@pytest.fixture
async def world(db: Database) -> World:
    return await build(db)


def value_rows(report: LifetimeValue) -> list[tuple[Any, ...]]:
    return [
        (
            r.key,
            r.customers,
            r.orders,
            r.revenue,
            r.gross_margin,
            r.revenue_per_customer,
            r.gross_margin_per_customer,
        )
        for r in report.rows
    ]


async def ltv(db: Database, group_by: LtvGroup, principal: Any = HQ, **kw: Any) -> Any:
    async with db.read() as session:
        return await lifetime_value(
            session,
            principal,
            group_by=group_by,
            acquired_from=kw.pop("acquired_from", JAN),
            acquired_to=kw.pop("acquired_to", JUN),
            **kw,
        )


async def repurchase(db: Database, principal: Any = HQ, **kw: Any) -> Repurchase:
    async with db.read() as session:
        return await repurchase_rate(
            session,
            principal,
            first_order_from=kw.pop("first_order_from", JAN),
            first_order_to=kw.pop("first_order_to", at(4, 1)),
            now=kw.pop("now", SCORED_AT),
            **kw,
        )


async def retention(db: Database, principal: Any = HQ, **kw: Any) -> list[tuple[Any, ...]]:
    async with db.read() as session:
        report = await cohort_retention(session, principal, now=SCORED_AT, **kw)
    return [(c.label, c.size, [(x.customers, x.rate) for x in c.cells]) for c in report.cohorts]


async def channels(db: Database, principal: Any = HQ, **kw: Any) -> ChannelPerformance:
    async with db.read() as session:
        return await channel_performance(
            session, principal, start=date(2026, 2, 1), end=date(2026, 3, 31), **kw
        )


def channel_rows(report: ChannelPerformance) -> list[tuple[Any, ...]]:
    return [
        (r.channel, r.partner_id, r.spend, r.new_customers, r.cac, r.revenue, r.gross_margin, r.roi)
        for r in [*report.rows, report.total]
    ]


async def attributed(
    db: Database, group_by: AttributionGroup, principal: Any = HQ, **kw: Any
) -> list[tuple[Any, ...]]:
    async with db.read() as session:
        rows = await attributed_sales(
            session, principal, group_by=group_by, start=at(2, 1), end=at(4, 1), **kw
        )
    return [(r.key, r.orders, r.customers, r.revenue, r.gross_margin) for r in rows]


# --- LTV -------------------------------------------------------------------------------------


async def test_ltv_by_cohort_month_counts_everything_the_cohort_bought_since(
    db: Database, world: World
) -> None:
    report = await ltv(db, LtvGroup.COHORT_MONTH)
    assert value_rows(report) == [
        # January: c1 (4 orders, 400, 240), c2 (2, 150, 90), c3 (2, 150, 90)
        # → 3 customers, 8 orders, 700, 420; per customer 700/3 = 233.33, 420/3 = 140.00
        (date(2026, 1, 1), 3, 8, D("700.00"), D("420.00"), D("233.33"), D("140.00")),
        # February: c4 (3, 500, 300), c5 (2, 150, 90; o11 refunded is not its first),
        # c6 (1, 100, 60) → 3, 6, 750, 450; 250.00, 150.00
        (date(2026, 2, 1), 3, 6, D("750.00"), D("450.00"), D("250.00"), D("150.00")),
        # March: c7 (2, 150, 90), c8 (2, 250, 150), c9 (1, 100, 60), c10 (3, 200, 120)
        # → 4, 8, 700, 420; 175.00, 105.00
        (date(2026, 3, 1), 4, 8, D("700.00"), D("420.00"), D("175.00"), D("105.00")),
    ]
    # 10 buyers, 8 + 6 + 8 = 22 orders, 2150 and 1290 (c11 and c12 never bought).
    total = report.total
    assert (total.customers, total.orders, total.revenue, total.gross_margin) == (
        10,
        22,
        D("2150.00"),
        D("1290.00"),
    )
    assert (total.revenue_per_customer, total.gross_margin_per_customer) == (
        D("215.00"),
        D("129.00"),
    )


async def test_ltv_by_first_channel_credits_later_orders_on_any_channel(
    db: Database, world: World
) -> None:
    report = await ltv(db, LtvGroup.FIRST_CHANNEL)
    assert value_rows(report) == [
        # MP first: c1, c3, c5, c7, c8, c10 → 4+2+2+2+2+3 = 15 orders;
        # 400+150+150+150+250+200 = 1300; 240+90+90+90+150+120 = 780 (c1's POS o3 counts
        # here: it is c1's lifetime value); 1300/6 = 216.67, 780/6 = 130.00
        (MP, 6, 15, D("1300.00"), D("780.00"), D("216.67"), D("130.00")),
        # POS first: c2, c4, c6, c9 → 2+3+1+1 = 7; 150+500+100+100 = 850;
        # 90+300+60+60 = 510; 850/4 = 212.50, 510/4 = 127.50
        (POS, 4, 7, D("850.00"), D("510.00"), D("212.50"), D("127.50")),
    ]


async def test_ltv_by_recruiter_and_level(db: Database, world: World) -> None:
    a, b = world.partners["A"], world.partners["B"]
    by_partner = [
        # A: c1, c2, c3, c9 → 4+2+2+1 = 9 orders, 400+150+150+100 = 800, 240+90+90+60 = 480
        (a, 4, 9, D("800.00"), D("480.00"), D("200.00"), D("120.00")),
        # B: c4, c5, c6, c10 → 3+2+1+3 = 9, 500+150+100+200 = 950, 300+90+60+120 = 570
        (b, 4, 9, D("950.00"), D("570.00"), D("237.50"), D("142.50")),
        # nobody: c7, c8 → 2+2 = 4, 150+250 = 400, 90+150 = 240
        (None, 2, 4, D("400.00"), D("240.00"), D("200.00"), D("120.00")),
    ]
    assert value_rows(await ltv(db, LtvGroup.PARTNER)) == by_partner
    # Each partner's customers were all recruited at its one store.
    a1, b1 = world.stores["a1"], world.stores["b1"]
    assert value_rows(await ltv(db, LtvGroup.STORE)) == [
        (a1, *by_partner[0][1:]),
        (b1, *by_partner[1][1:]),
        by_partner[2],
    ]
    assert value_rows(await ltv(db, LtvGroup.GUIDE)) == [
        # gA: c1, c2, c9 → 4+2+1 = 7, 400+150+100 = 650, 240+90+60 = 390; 216.67, 130.00
        (world.guides["gA"], 3, 7, D("650.00"), D("390.00"), D("216.67"), D("130.00")),
        # gB: c4, c5, c6 → 3+2+1 = 6, 750, 450; 250.00, 150.00
        (world.guides["gB"], 3, 6, D("750.00"), D("450.00"), D("250.00"), D("150.00")),
        # no guide: c3, c7, c8, c10 → 2+2+2+3 = 9, 150+150+250+200 = 750, 450; 187.50, 112.50
        (None, 4, 9, D("750.00"), D("450.00"), D("187.50"), D("112.50")),
    ]
    assert value_rows(await ltv(db, LtvGroup.LEVEL)) == [
        # silver: c2, c3, c5 → 6 orders, 450, 270; 150.00, 90.00
        (world.levels["silver"], 3, 6, D("450.00"), D("270.00"), D("150.00"), D("90.00")),
        # gold: c1, c4 → 4+3 = 7, 400+500 = 900, 540; 450.00, 270.00
        (world.levels["gold"], 2, 7, D("900.00"), D("540.00"), D("450.00"), D("270.00")),
        # none: c6, c7, c8, c9, c10 → 1+2+2+1+3 = 9, 100+150+250+100+200 = 800, 480
        (None, 5, 9, D("800.00"), D("480.00"), D("160.00"), D("96.00")),
    ]


async def test_ltv_acquisition_range_picks_the_cohort_not_the_orders(
    db: Database, world: World
) -> None:
    # Acquired in February only: c4, c5, c6, with all their orders (April and May too).
    report = await ltv(db, LtvGroup.FIRST_CHANNEL, acquired_from=at(2, 1), acquired_to=at(3, 1))
    assert value_rows(report) == [
        # c5 (MP): 2 orders, 150, 90
        (MP, 1, 2, D("150.00"), D("90.00"), D("150.00"), D("90.00")),
        # c4, c6 (POS): 3+1 = 4, 500+100 = 600, 300+60 = 360
        (POS, 2, 4, D("600.00"), D("360.00"), D("300.00"), D("180.00")),
    ]
    # A customer is acquired by their first counted order only: c5's January-less history
    # starts 16 February (o11 on the 14th was refunded), so 15-17 February holds c5 alone.
    alone = await ltv(db, LtvGroup.COHORT_MONTH, acquired_from=at(2, 15), acquired_to=at(2, 17))
    assert [(r.key, r.customers) for r in alone.rows] == [(date(2026, 2, 1), 1)]


async def test_cohorts_follow_the_business_calendar(db: Database, world: World) -> None:
    # 20:00Z on 31 January is 04:00 on 1 February in Beijing: a February customer.
    late = datetime(2026, 1, 31, 20, 0, tzinfo=UTC)
    await _extra_order(db, world, "c12", late, SalesChannel.MINI_PROGRAM, D("100.00"))
    report = await ltv(db, LtvGroup.COHORT_MONTH)
    # February: c4, c5, c6 and now c12 → 4 customers, 6 + 1 orders, 750 + 100, 450 + 60
    assert value_rows(report)[1] == (
        date(2026, 2, 1),
        4,
        7,
        D("850.00"),
        D("510.00"),
        D("212.50"),
        D("127.50"),
    )
    # A range ending at midnight Beijing time (16:00Z) leaves it out of January.
    january = await ltv(
        db,
        LtvGroup.COHORT_MONTH,
        acquired_from=datetime(2026, 1, 1, tzinfo=CST),
        acquired_to=datetime(2026, 2, 1, tzinfo=CST),
    )
    assert [(r.key, r.customers) for r in january.rows] == [(date(2026, 1, 1), 3)]


async def test_money_in_another_currency_is_not_added(db: Database, world: World) -> None:
    # c9 buys for 30 USD on 25 March: the CNY report is unchanged, a USD one shows it alone.
    await _extra_order(db, world, "c9", at(3, 25), SalesChannel.WEB, D("30.00"), "USD")
    cny = await ltv(db, LtvGroup.PARTNER)
    assert value_rows(cny)[0] == (
        world.partners["A"],
        4,
        9,
        D("800.00"),
        D("480.00"),
        D("200.00"),
        D("120.00"),
    )
    usd = await ltv(db, LtvGroup.PARTNER, currency="USD")
    # Still acquired (by CNY orders), so every buyer is a customer of the report; only the
    # USD order is summed: 1 order, 30.00 revenue, 30 - 12 (cost) = 18.00 margin.
    assert [(r.key, r.customers, r.orders, r.revenue, r.gross_margin) for r in usd.rows] == [
        (world.partners["A"], 4, 1, D("30.00"), D("18.00")),
        (world.partners["B"], 4, 0, D("0.00"), D("0.00")),
        (None, 2, 0, D("0.00"), D("0.00")),
    ]


async def test_a_customer_is_acquired_once_by_their_first_order_in_any_currency(
    db: Database, world: World
) -> None:
    # The reports pick the customers acquired in the range first (a counted order in it, none
    # before it), then read only their orders. c12 first buys 20 USD on 10 January, then
    # 100 CNY on 10 February: a January customer, whatever the currency of the report.
    await _extra_order(db, world, "c12", at(1, 10), SalesChannel.WEB, D("20.00"), "USD")
    await _extra_order(db, world, "c12", at(2, 10), SalesChannel.MINI_PROGRAM, D("100.00"))
    # February is still c4, c5, c6 (6 orders, 750); its new-customer counts stay 3 and 7.
    february = await ltv(db, LtvGroup.COHORT_MONTH, acquired_from=at(2, 1), acquired_to=at(3, 1))
    assert [(r.key, r.customers, r.orders, r.revenue) for r in february.rows] == [
        (date(2026, 2, 1), 3, 6, D("750.00"))
    ]
    feb_buyers = await repurchase(db, first_order_from=at(2, 1), first_order_to=at(3, 1))
    assert feb_buyers.total.buyers == 3
    assert sum(r.new_customers for r in (await channels(db)).rows) == 7
    # January gains c12, its CNY order summed (the USD one is not): 3 + 1 customers,
    # 8 + 1 orders, 700 + 100 revenue, 420 + 60 margin.
    january = await ltv(db, LtvGroup.COHORT_MONTH, acquired_from=JAN, acquired_to=at(2, 1))
    assert [(r.key, r.customers, r.orders, r.revenue, r.gross_margin) for r in january.rows] == [
        (date(2026, 1, 1), 4, 9, D("800.00"), D("480.00"))
    ]
    # A range starting at the very instant of the first order holds it: c12 alone, with its
    # second order 31 days later.
    from_then = await repurchase(
        db, first_order_from=at(1, 10), first_order_to=at(1, 11), within_days=31
    )
    assert (from_then.total.buyers, from_then.total.repeaters) == (1, 1)


# --- repurchase ------------------------------------------------------------------------------


async def test_repurchase_within_30_and_90_days(db: Database, world: World) -> None:
    # Buyers with a first counted order in January-March: all ten. Days to the second:
    #   c1 01-05 → 01-20: 15      c2 01-12 → 02-11: 30 (the 30th day counts)
    #   c3 01-25 → 04-10: 75      c4 02-03 → 02-20: 17
    #   c5 02-16 → 05-30: 103     c6 none
    #   c7 03-02 → 03-09: 7 (o16 on 03-05 was cancelled)
    #   c8 03-15 → 04-20: 36      c9 none        c10 03-28 → 03-29: 1
    within_30 = await repurchase(db, within_days=30)
    # 30 days: c1, c2, c4, c7, c10 → 5 / 10
    assert (within_30.total.buyers, within_30.total.repeaters, within_30.total.rate) == (
        10,
        5,
        D("0.5000"),
    )
    assert within_30.rows == []  # no groupBy: the total only
    within_90 = await repurchase(db, within_days=90, group_by=RepurchaseGroup.FIRST_CHANNEL)
    # 90 days: also c3 (75) and c8 (36) → 7 / 10
    assert (within_90.total.buyers, within_90.total.repeaters, within_90.total.rate) == (
        10,
        7,
        D("0.7000"),
    )
    assert [(r.key, r.buyers, r.repeaters, r.rate) for r in within_90.rows] == [
        # MP buyers c1, c3, c5, c7, c8, c10: all but c5 → 5 / 6 = 0.83333 → 0.8333
        (MP, 6, 5, D("0.8333")),
        # POS buyers c2, c4, c6, c9: c2, c4 → 2 / 4
        (POS, 4, 2, D("0.5000")),
    ]
    by_partner = await repurchase(db, within_days=90, group_by=RepurchaseGroup.PARTNER)
    assert [(r.key, r.buyers, r.repeaters, r.rate) for r in by_partner.rows] == [
        (world.partners["A"], 4, 3, D("0.7500")),  # c1, c2, c3 of c1, c2, c3, c9
        (world.partners["B"], 4, 2, D("0.5000")),  # c4, c10 of c4, c5, c6, c10
        (None, 2, 2, D("1.0000")),  # c7, c8
    ]
    by_level = await repurchase(db, within_days=30, group_by=RepurchaseGroup.LEVEL)
    assert [(r.key, r.buyers, r.repeaters, r.rate) for r in by_level.rows] == [
        (world.levels["silver"], 3, 1, D("0.3333")),  # c2 of c2, c3, c5: 1/3
        (world.levels["gold"], 2, 2, D("1.0000")),  # c1, c4
        (None, 5, 2, D("0.4000")),  # c7, c10 of c6, c7, c8, c9, c10
    ]


async def test_repurchase_windows_still_open(db: Database, world: World) -> None:
    # On 1 June 04:00Z a 90-day window has closed for first orders up to 3 March 04:00Z
    # (day 152 - 90 = day 62 of 2026 = 3 March): c1..c7; c8 (03-15), c9, c10 are still open.
    report = await repurchase(db, within_days=90, now=SCORED_AT)
    # Included by default: 10 buyers, 7 repeaters (c8 and c10 came back already), 3 open.
    assert (report.total.buyers, report.total.repeaters, report.total.open_windows) == (10, 7, 3)
    mature = await repurchase(db, within_days=90, now=SCORED_AT, mature_only=True)
    # Mature only: c1..c7, repeaters c1, c2, c3, c4, c7 → 5/7 = 0.714285... → 0.7143
    assert (
        mature.total.buyers,
        mature.total.repeaters,
        mature.total.open_windows,
        mature.total.rate,
    ) == (7, 5, 0, D("0.7143"))


# --- cohort retention ------------------------------------------------------------------------


async def test_monthly_retention_table(db: Database, world: World) -> None:
    # Months with a counted order, per customer (cohort = the first):
    #   Jan: c1 Jan Mar May (k 0, 2, 4)   c2 Jan Feb (0, 1)   c3 Jan Apr (0, 3)
    #   Feb: c4 Feb Apr (0, 2)   c5 Feb May (0, 3)   c6 Feb (0)
    #   Mar: c7 Mar (0)   c8 Mar Apr (0, 1)   c9 Mar (0)   c10 Mar Apr (0, 1)
    # At 1 June: June (Feb + 4, Mar + 3) has begun, July (Mar + 4) has not: null.
    table = await retention(db, period=Period.MONTH, start=JAN, end=APRIL, periods=5)
    third, half, none = D("0.3333"), D("0.5000"), D("0.0000")
    assert table == [
        ("2026-01", 3, [(3, D("1.0000")), (1, third), (1, third), (1, third), (1, third)]),
        ("2026-02", 3, [(3, D("1.0000")), (0, none), (1, third), (1, third), (0, none)]),
        ("2026-03", 4, [(4, D("1.0000")), (2, half), (0, none), (0, none), (None, None)]),
    ]


async def test_weekly_retention_and_empty_cohorts(db: Database, world: World) -> None:
    # Weeks from Monday 2 March to Monday 16 March (Beijing): c7 first bought Monday 2 March
    # (W10) and again Monday 9 March (W11: its k = 1); c8 first on Sunday 15 March: W11.
    table = await retention(
        db,
        period=Period.WEEK,
        start=datetime(2026, 3, 2, tzinfo=CST),
        end=datetime(2026, 3, 16, tzinfo=CST),
        periods=3,
    )
    one, none = D("1.0000"), D("0.0000")
    assert table == [
        ("2026-W10", 1, [(1, one), (1, one), (0, none)]),
        ("2026-W11", 1, [(1, one), (0, none), (0, none)]),
    ]
    # A month without new customers is still a row (size 0, rates null).
    april = await retention(
        db, period=Period.MONTH, start=APRIL, end=datetime(2026, 5, 1, tzinfo=CST), periods=2
    )
    assert april == [("2026-04", 0, [(0, None), (0, None)])]


# --- RFM -------------------------------------------------------------------------------------


async def test_rfm_distribution_after_scoring(db: Database, world: World) -> None:
    # Scored at 1 June (dataset.SCORED_AT) by api/analytics/rfm_scoring.py: each score is
    # 1 + ⌊5 × (rank - 1) / 10⌋, rank from the lowest value (ties share the first rank):
    #   R by last order: c2 02-11, c6 02-22 → 1; c7 03-09, c9 03-20 → 2; c3 04-10, c4 04-15
    #     → 3; c8 04-20, c10 04-28 → 4; c1 05-10, c5 05-30 → 5
    #   F by orders: c6, c9 (1 order, rank 1) → 1; c2, c3, c5, c7, c8 (2, rank 3) → 2;
    #     c4, c10 (3, rank 8) → 4; c1 (4, rank 10) → 5
    # Segments (R, F): c1 (5, 5) champions; c4 (3, 4), c10 (4, 4) loyal; c5 (5, 2),
    # c8 (4, 2) potential_loyalist; c3 (3, 2) about_to_sleep; c2 (1, 2), c7 (2, 2), c9 (2, 1)
    # hibernating; c6 (1, 1) lost.
    # Days from the last order to 1 June: c1 22, c2 110, c3 52, c4 47, c5 2, c6 99, c7 84,
    # c8 42, c9 73, c10 34.
    async with db.read() as session:
        rows = await rfm_distribution(session, HQ, now=SCORED_AT)
    assert [
        (r.segment, r.customers, r.average_recency_days, r.average_orders, r.average_spent)
        for r in rows
    ] == [
        # c2, c7, c9: (110 + 84 + 73) / 3 = 89.0 days; (2 + 2 + 1) / 3 = 1.67 orders;
        # (150 + 150 + 100) / 3 = 133.33
        ("hibernating", 3, D("89.0"), D("1.67"), D("133.33")),
        # c4, c10: (47 + 34) / 2 = 40.5; (3 + 3) / 2; (500 + 200) / 2
        ("loyal", 2, D("40.5"), D("3.00"), D("350.00")),
        # c5, c8: (2 + 42) / 2 = 22.0; 2; (150 + 250) / 2
        ("potential_loyalist", 2, D("22.0"), D("2.00"), D("200.00")),
        ("about_to_sleep", 1, D("52.0"), D("2.00"), D("150.00")),  # c3
        ("champions", 1, D("22.0"), D("4.00"), D("400.00")),  # c1
        ("lost", 1, D("99.0"), D("1.00"), D("100.00")),  # c6
    ]
    assert {r.scored_at for r in rows} == {SCORED_AT}


async def test_unscored_customers_are_their_own_row(db: Database, world: World) -> None:
    # c12 buys after the scoring run: a metrics row without scores until the next run.
    await _extra_order(db, world, "c12", at(5, 31), SalesChannel.MINI_PROGRAM, D("100.00"))
    async with db.transaction() as session:
        await refresh_customer_metrics(session, [world.customers["c12"]])
    async with db.read() as session:
        rows = await rfm_distribution(session, HQ, now=SCORED_AT)
    # 1 day before 1 June, 1 order, 100.00
    assert (rows[-1].segment, rows[-1].customers, rows[-1].average_recency_days) == (
        None,
        1,
        D("1.0"),
    )
    assert rows[-1].scored_at is None


# --- CAC and ROI -----------------------------------------------------------------------------


async def test_channel_cac_and_roi_with_pro_rated_spend(db: Database, world: World) -> None:
    # 1 February - 31 March (59 days). Spend overlapping it:
    #   s1 MP  9000 over 90 days, 59 in range → 9000 × 59/90 = 5900.00
    #   s2 MP  1000, all in range             → 1000.00
    #   s3 POS 1200, all in range             → 1200.00
    #   s4 POS  600 over 30 days, 16 in range (03-16..03-31) → 600 × 16/30 = 320.00
    #   s6 POS  100 over 3 days, 2 in range (02-01, 02-02)   → 100 × 2/3 = 66.666...
    #   s5 (April) is outside.
    # New customers (first counted order in range) and what they bought in range:
    #   MP:  c5 (50, 30), c7 (150, 90), c8 (200, 120; o19 is in April), c10 (150, 90)
    #        → 4, revenue 550, margin 330
    #   POS: c4 (o8 + o9: 400, 240), c6 (100, 60), c9 (100, 60) → 3, 600, 360
    report = await channels(db)
    assert channel_rows(report) == [
        # MP: spend 6900; CAC 6900 / 4 = 1725.00; ROI (330 - 6900) / 6900 = -0.95217 → -0.9522
        (MP, None, D("6900.00"), 4, D("1725.00"), D("550.00"), D("330.00"), D("-0.9522")),
        # POS: spend 1200 + 320 + 66.67 (exactly 4760/3 = 1586.666...) → 1586.67;
        # CAC 4760/9 = 528.888... → 528.89; ROI (360 - 4760/3) / (4760/3) = -3680/4760
        # = -0.77311 → -0.7731
        (POS, None, D("1586.67"), 3, D("528.89"), D("600.00"), D("360.00"), D("-0.7731")),
        # Total: 6900 + 4760/3 = 25460/3 = 8486.67; 7 customers → 25460/21 = 1212.38;
        # ROI (690 - 25460/3) / (25460/3) = -23390/25460 = -0.91869 → -0.9187
        (None, None, D("8486.67"), 7, D("1212.38"), D("1150.00"), D("690.00"), D("-0.9187")),
    ]


async def test_channel_performance_by_partner(db: Database, world: World) -> None:
    a, b = world.partners["A"], world.partners["B"]
    report = await channels(db, by_partner=True)
    assert channel_rows(report)[:-1] == [
        # HQ's own MP spend (s2) and the unrecruited new customers c7, c8:
        # CAC 1000 / 2 = 500.00; revenue 150 + 200, margin 90 + 120 = 210;
        # ROI (210 - 1000) / 1000 = -0.7900
        (MP, None, D("1000.00"), 2, D("500.00"), D("350.00"), D("210.00"), D("-0.7900")),
        # A's MP spend (s1: 5900) found no MP customer for A: CAC null, ROI -5900/5900 = -1
        (MP, a, D("5900.00"), 0, None, D("0.00"), D("0.00"), D("-1.0000")),
        # B recruited c5, c10 (MP) but recorded no MP spend in range: CAC 0.00, ROI null
        (MP, b, D("0.00"), 2, D("0.00"), D("200.00"), D("120.00"), None),
        # A's POS spend s6 (66.666...) for c9: CAC 66.67; ROI (60 - 200/3) / (200/3) = -0.1
        (POS, a, D("66.67"), 1, D("66.67"), D("100.00"), D("60.00"), D("-0.1000")),
        # B's POS spend s3 + s4 = 1520 for c4, c6: CAC 760.00; revenue 400 + 100 = 500,
        # margin 240 + 60 = 300; ROI (300 - 1520) / 1520 = -0.80263 → -0.8026
        (POS, b, D("1520.00"), 2, D("760.00"), D("500.00"), D("300.00"), D("-0.8026")),
    ]


# --- attributed sales ------------------------------------------------------------------------


async def test_attributed_sales_per_partner_store_and_guide(db: Database, world: World) -> None:
    # Orders placed 1 February - 31 March, attributed to the member's recruiter for life:
    #   A (a1): c1 o3 (100, 60), c2 o5 (50, 30), c9 o20 (100, 60) → 3 orders, 3 customers
    #   B (b1): c4 o8 + o9 (400, 240), c5 o12 (50, 30; o11 refunded does not count),
    #           c6 o14 (100, 60), c10 o21 + o22 (150, 90) → 6 orders, 4 customers, 700, 420
    #   c7, c8 are not members: nobody's.
    a_row = (3, 3, D("250.00"), D("150.00"))
    b_row = (6, 4, D("700.00"), D("420.00"))
    assert await attributed(db, AttributionGroup.PARTNER) == [
        (world.partners["A"], *a_row),
        (world.partners["B"], *b_row),
    ]
    assert await attributed(db, AttributionGroup.STORE) == [
        (world.stores["a1"], *a_row),
        (world.stores["b1"], *b_row),
    ]
    assert await attributed(db, AttributionGroup.GUIDE) == [
        (world.guides["gA"], *a_row),  # c1, c2, c9 were all gA's
        (world.guides["gB"], 4, 3, D("550.00"), D("330.00")),  # c4, c5, c6: 400 + 50 + 100
        (None, 2, 1, D("150.00"), D("90.00")),  # c10, recruited at b1 by no guide
    ]
    one_guide = await attributed(
        db, AttributionGroup.STORE, where=AttributionFilter(guide_id=world.guides["gB"])
    )
    assert one_guide == [(world.stores["b1"], 4, 3, D("550.00"), D("330.00"))]


# --- who sees what ---------------------------------------------------------------------------


async def test_a_partner_sees_only_its_own_members_orders_and_spend(
    db: Database, world: World
) -> None:
    a = world.partner("A")
    # LTV: A's buyers c1, c2, c3 (January) and c9 (March).
    assert value_rows(await ltv(db, LtvGroup.COHORT_MONTH, a)) == [
        (date(2026, 1, 1), 3, 8, D("700.00"), D("420.00"), D("233.33"), D("140.00")),
        (date(2026, 3, 1), 1, 1, D("100.00"), D("60.00"), D("100.00"), D("60.00")),
    ]
    # Repurchase within 90 days: c1, c2, c3 of c1, c2, c3, c9.
    mine = await repurchase(db, a, within_days=90, group_by=RepurchaseGroup.PARTNER)
    assert [(r.key, r.buyers, r.repeaters) for r in mine.rows] == [(world.partners["A"], 4, 3)]
    # Retention: January as for everyone; March is c9 alone; February is empty.
    table = await retention(db, a, period=Period.MONTH, start=JAN, end=APRIL, periods=2)
    assert [(label, size, [n for n, _ in cells]) for label, size, cells in table] == [
        ("2026-01", 3, [3, 1]),
        ("2026-02", 0, [0, 0]),
        ("2026-03", 1, [1, 0]),
    ]
    # RFM: c1 champions; c2, c9 hibernating ((110 + 73) / 2 = 91.5 days); c3 about_to_sleep.
    async with db.read() as session:
        rfm = await rfm_distribution(session, a, now=SCORED_AT)
    assert [(r.segment, r.customers, r.average_recency_days) for r in rfm] == [
        ("hibernating", 2, D("91.5")),
        ("about_to_sleep", 1, D("52.0")),
        ("champions", 1, D("22.0")),
    ]
    # CAC/ROI: A's own spend only (s1, s6) and its own new customers (c9).
    assert channel_rows(await channels(db, a))[:-1] == [
        (MP, None, D("5900.00"), 0, None, D("0.00"), D("0.00"), D("-1.0000")),
        (POS, None, D("66.67"), 1, D("66.67"), D("100.00"), D("60.00"), D("-0.1000")),
    ]
    # Attributed sales: its own row only, whatever the grouping.
    assert await attributed(db, AttributionGroup.GUIDE, a) == [
        (world.guides["gA"], 3, 3, D("250.00"), D("150.00"))
    ]


async def test_another_partners_id_finds_nothing(db: Database, world: World) -> None:
    a, b = world.partner("A"), world.partners["B"]
    report = await ltv(db, LtvGroup.PARTNER, a, audience=Audience(partner_id=b))
    assert report.rows == [] and report.total.customers == 0
    assert (await repurchase(db, a, audience=Audience(partner_id=b))).total.buyers == 0
    assert await attributed(db, AttributionGroup.PARTNER, a, where=AttributionFilter(b)) == []
    assert (await channels(db, a, partner_id=b)).rows == []
    store_b = Audience(store_id=world.stores["b1"])
    async with db.read() as session:
        assert await rfm_distribution(session, a, now=SCORED_AT, audience=store_b) == []
    # ... exactly like an id that does not exist.
    missing = await ltv(db, LtvGroup.PARTNER, a, audience=Audience(partner_id=999))
    assert missing.rows == [] and missing.total.customers == 0
    # HQ narrowing to B sees B's.
    only_b = await ltv(db, LtvGroup.PARTNER, audience=Audience(partner_id=b))
    assert [(r.key, r.customers) for r in only_b.rows] == [(b, 4)]


async def test_merged_away_customers_do_not_count(db: Database, world: World) -> None:
    # A customer merged into another no longer counts, even if an order still named it.
    async with db.transaction() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == world.customers["c9"])
            .values(status=CustomerStatus.MERGED, merged_into_id=world.customers["c1"])
        )
    report = await ltv(db, LtvGroup.PARTNER)
    # A: c1, c2, c3 → 8 orders, 700, 420
    assert value_rows(report)[0] == (
        world.partners["A"],
        3,
        8,
        D("700.00"),
        D("420.00"),
        D("233.33"),
        D("140.00"),
    )


# --- bad input -------------------------------------------------------------------------------

NAIVE = datetime(2026, 1, 1)


LTV_REFUSALS: list[tuple[dict[str, Any], tuple[str, tuple[str, ...]]]] = [
    ({"acquired_from": JUN, "acquired_to": JAN}, ("INVALID_RANGE", ("acquiredTo",))),
    ({"acquired_from": JAN, "acquired_to": JAN}, ("INVALID_RANGE", ("acquiredTo",))),
    ({"acquired_from": JAN, "acquired_to": at(1, 2, 2029)}, ("RANGE_TOO_LONG", ("acquiredTo",))),
    ({"acquired_from": NAIVE, "acquired_to": JUN}, ("INVALID", ("acquiredFrom",))),
    ({"currency": "cny"}, ("INVALID", ("currency",))),
]


async def refusal(call: Any) -> list[tuple[str, tuple[str, ...] | None]]:
    with pytest.raises(DomainError) as raised:
        await call
    return [(p.code.name, p.field) for p in raised.value.problems]


async def test_ltv_bad_input(db: Database) -> None:
    for arguments, expected in LTV_REFUSALS:
        assert await refusal(ltv(db, LtvGroup.PARTNER, **arguments)) == [expected], arguments


async def test_three_years_is_the_longest_range(db: Database) -> None:
    # 1 January 2026 + 1096 days (365 × 3 + a leap day) is accepted; a second more is not.
    longest = JAN + timedelta(days=1096)
    assert (await ltv(db, LtvGroup.PARTNER, acquired_to=longest)).rows == []
    assert await refusal(ltv(db, LtvGroup.PARTNER, acquired_to=longest + timedelta(seconds=1))) == [
        ("RANGE_TOO_LONG", ("acquiredTo",))
    ]


async def test_repurchase_and_retention_bad_input(db: Database) -> None:
    for arguments, expected in (
        ({"within_days": 0}, ("INVALID", ("withinDays",))),
        ({"within_days": 731}, ("INVALID", ("withinDays",))),
        ({"first_order_to": JAN}, ("INVALID_RANGE", ("firstOrderTo",))),
    ):
        assert await refusal(repurchase(db, **arguments)) == [expected], arguments
    month = {"period": Period.MONTH, "start": JAN, "end": JUN}
    for arguments, problems in (
        ({"periods": 0}, [("INVALID", ("periods",))]),
        ({"periods": 25}, [("INVALID", ("periods",))]),
        # Every problem at once.
        ({"end": JAN, "periods": 0}, [("INVALID_RANGE", ("to",)), ("INVALID", ("periods",))]),
    ):
        assert await refusal(retention(db, **(month | arguments))) == problems, arguments


async def test_dates_lie_between_2000_and_2100(db: Database) -> None:
    # The first instant is midnight of 1 January 2000 in Beijing, the last (exclusive)
    # midnight of 1 January 2101; outside them, each argument is an INVALID_RANGE of its own.
    first, end = datetime(2000, 1, 1, tzinfo=CST), datetime(2101, 1, 1, tzinfo=CST)
    assert (
        await ltv(db, LtvGroup.PARTNER, acquired_from=first, acquired_to=at(2, 1, 2000))
    ).rows == []
    assert (
        await ltv(db, LtvGroup.PARTNER, acquired_from=at(12, 1, 2100), acquired_to=end)
    ).rows == []
    second = timedelta(seconds=1)
    assert await refusal(
        ltv(db, LtvGroup.PARTNER, acquired_from=first - second, acquired_to=at(2, 1, 2000))
    ) == [("INVALID_RANGE", ("acquiredFrom",))]
    # The very last instants Python knows: once an overflow in the business calendar.
    latest = datetime.max.replace(tzinfo=UTC)
    assert await refusal(
        repurchase(db, first_order_from=latest - 2 * second, first_order_to=latest)
    ) == [("INVALID_RANGE", ("firstOrderFrom",)), ("INVALID_RANGE", ("firstOrderTo",))]
    with pytest.raises(DomainError) as raised:
        async with db.read() as session:
            await attributed_sales(
                session, HQ, group_by=AttributionGroup.STORE, start=JAN, end=end + second
            )
    assert [(p.code.name, p.field) for p in raised.value.problems] == [("INVALID_RANGE", ("to",))]


async def test_channel_and_attribution_bad_input(db: Database) -> None:
    with pytest.raises(DomainError) as raised:
        async with db.read() as session:
            await channel_performance(session, HQ, start=date(2026, 3, 1), end=date(2026, 2, 28))
    assert [(p.code.name, p.field) for p in raised.value.problems] == [("INVALID_RANGE", ("to",))]
    # One day (from = to) is a range of its own; 1096 days is the longest.
    async with db.read() as session:
        one_day = await channel_performance(
            session, HQ, start=date(2026, 3, 1), end=date(2026, 3, 1)
        )
        assert one_day.rows == []
        with pytest.raises(DomainError) as raised:
            await channel_performance(session, HQ, start=date(2026, 1, 1), end=date(2029, 1, 1))
        assert raised.value.problems[0].code.name == "RANGE_TOO_LONG"
        with pytest.raises(DomainError) as raised:
            await attributed_sales(session, HQ, group_by=AttributionGroup.STORE, start=JUN, end=JAN)
        assert raised.value.problems[0].field == ("to",)


# --- helpers ---------------------------------------------------------------------------------


async def _extra_order(
    db: Database,
    world: World,
    customer: str,
    placed_at: datetime,
    channel: SalesChannel,
    total: Decimal,
    currency: str = "CNY",
) -> None:
    """One more completed order, a single line of cost 40% of its total."""
    cost = (total * D("0.4")).quantize(D("0.01"))
    async with db.transaction() as session:
        order_id = (
            await session.execute(
                insert(Order)
                .values(
                    channel=channel,
                    fulfillment=Fulfillment.DELIVERY,
                    status=OrderStatus.COMPLETED,
                    customer_id=world.customers[customer],
                    currency=currency,
                    subtotal=total,
                    total=total,
                    cost_total=cost,
                    placed_at=placed_at,
                    created_at=placed_at,
                    updated_at=placed_at,
                )
                .returning(Order.id)
            )
        ).scalar_one()
        assert order_id
