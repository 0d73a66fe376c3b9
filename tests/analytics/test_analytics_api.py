"""The reports over GraphQL: their shape, who may ask, what a partner sees, bad arguments as
coded errors, and how many statements each costs (pinned). The arithmetic is checked at
service level (test_reports.py); the expected numbers here come from the same hand-computed
data set (tests/analytics/dataset.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from api.db import Database
from tests.analytics.dataset import World, build
from tests.orders.conftest import caller, gid, member, partner_admin, store_staff, token_of


@pytest.fixture
async def world(db: Database) -> World:
    return await build(db)


def as_partner(app: Any, issue_token: Any, world: World, name: str) -> Any:
    return caller(app, token_of(issue_token, partner_admin(world.partners[name])))


LTV = """
query($groupBy: LifetimeValueGroupBy!, $from: DateTime!, $to: DateTime!, $partnerId: ID) {
  customerLifetimeValue(groupBy: $groupBy, acquiredFrom: $from, acquiredTo: $to,
                        partnerId: $partnerId) {
    rows { key label customers orders revenue { amount currency } grossMargin { amount }
           revenuePerCustomer { amount } grossMarginPerCustomer { amount } }
    total { key label customers orders revenue { amount } revenuePerCustomer { amount } }
    errors { field message code }
  }
}"""
YEAR = {"from": "2026-01-01T00:00:00+08:00", "to": "2026-06-01T00:00:00+08:00"}


async def test_ltv_by_cohort_month(gql: Any, world: World) -> None:
    report = (await gql(LTV, {"groupBy": "COHORT_MONTH", **YEAR}))["customerLifetimeValue"]
    assert report["errors"] == []
    # January: c1, c2, c3 → 700 / 3 = 233.33; February: c4, c5, c6 → 750 / 3 = 250.00;
    # March: c7, c8, c9, c10 → 700 / 4 = 175.00 (see test_reports.py for the sums).
    assert [
        (r["key"], r["label"], r["customers"], r["orders"], r["revenue"], r["revenuePerCustomer"])
        for r in report["rows"]
    ] == [
        ("2026-01", "2026-01", 3, 8, {"amount": "700.00", "currency": "CNY"}, {"amount": "233.33"}),
        ("2026-02", "2026-02", 3, 6, {"amount": "750.00", "currency": "CNY"}, {"amount": "250.00"}),
        ("2026-03", "2026-03", 4, 8, {"amount": "700.00", "currency": "CNY"}, {"amount": "175.00"}),
    ]
    # 10 buyers, 22 orders, 2150 → 215.00 each.
    assert report["total"] == {
        "key": None,
        "label": "total",
        "customers": 10,
        "orders": 22,
        "revenue": {"amount": "2150.00"},
        "revenuePerCustomer": {"amount": "215.00"},
    }


GROUPS = """
query($groupBy: LifetimeValueGroupBy!) {
  customerLifetimeValue(groupBy: $groupBy, acquiredFrom: "2026-01-01T00:00:00Z",
                        acquiredTo: "2026-06-01T00:00:00Z") {
    rows { key label channel customers
           partner { id name } store { id name }
           guide { id email store { name } partner { name } }
           level { id code } }
  }
}"""


async def test_ltv_rows_resolve_who_they_are_about(gql: Any, world: World) -> None:
    async def rows(group_by: str) -> list[dict[str, Any]]:
        return (await gql(GROUPS, {"groupBy": group_by}))["customerLifetimeValue"]["rows"]

    empty = {"channel": None, "partner": None, "store": None, "guide": None, "level": None}
    a, b = gid("Partner", world.partners["A"]), gid("Partner", world.partners["B"])
    assert await rows("PARTNER") == [
        empty
        | {
            "key": a,
            "label": "Partner A",
            "customers": 4,
            "partner": {"id": a, "name": "Partner A"},
        },
        empty
        | {
            "key": b,
            "label": "Partner B",
            "customers": 4,
            "partner": {"id": b, "name": "Partner B"},
        },
        empty | {"key": None, "label": "(none)", "customers": 2},
    ]
    channel_rows = await rows("FIRST_CHANNEL")
    assert [(r["key"], r["channel"], r["customers"]) for r in channel_rows] == [
        ("MINI_PROGRAM", "MINI_PROGRAM", 6),
        ("STORE_POS", "STORE_POS", 4),
    ]
    guide_a = gid("StaffUser", world.guides["gA"])
    by_guide = await rows("GUIDE")
    # HQ admin holds pii:read: the guide's email in full (the label stays masked).
    assert by_guide[0] == empty | {
        "key": guide_a,
        "label": "g***@guides.example.com",
        "customers": 3,
        "guide": {
            "id": guide_a,
            "email": "ga@guides.example.com",
            "store": {"name": "Store a1"},
            "partner": {"name": "Partner A"},
        },
    }
    gold = gid("MemberLevel", world.levels["gold"])
    by_level = await rows("LEVEL")
    assert [(r["label"], r["customers"], r["level"]) for r in by_level] == [
        ("Silver 会员", 3, {"id": gid("MemberLevel", world.levels["silver"]), "code": "silver"}),
        ("Gold 会员", 2, {"id": gold, "code": "gold"}),
        ("(none)", 5, None),
    ]


REPURCHASE = """
query($days: Int!, $groupBy: RepurchaseGroupBy, $matureOnly: Boolean) {
  repurchaseRate(withinDays: $days, firstOrderFrom: "2026-01-01T00:00:00+08:00",
                 firstOrderTo: "2026-04-01T00:00:00+08:00", groupBy: $groupBy,
                 matureOnly: $matureOnly) {
    rows { key buyers repeaters rate openWindows }
    total { buyers repeaters rate openWindows }
    errors { field code }
  }
}"""


async def test_repurchase_rate(gql: Any, world: World) -> None:
    # Within 30 days: c1, c2, c4, c7, c10 of all ten (MP: c1, c7, c10 of 6; POS: c2, c4 of 4).
    report = (await gql(REPURCHASE, {"days": 30, "groupBy": "FIRST_CHANNEL"}))["repurchaseRate"]
    assert report["rows"] == [
        {"key": "MINI_PROGRAM", "buyers": 6, "repeaters": 3, "rate": "0.5000", "openWindows": 0},
        {"key": "STORE_POS", "buyers": 4, "repeaters": 2, "rate": "0.5000", "openWindows": 0},
    ]
    assert report["total"] == {"buyers": 10, "repeaters": 5, "rate": "0.5000", "openWindows": 0}
    # Within 90 days, no grouping: + c3, c8 → 7/10. Every window closed long ago (the test
    # clock is past June 2026), so matureOnly changes nothing.
    for mature in (False, True):
        plain = (await gql(REPURCHASE, {"days": 90, "matureOnly": mature}))["repurchaseRate"]
        assert (plain["rows"], plain["total"]["rate"]) == ([], "0.7000")


RETENTION = """
query($period: RetentionPeriod!, $periods: Int) {
  cohortRetention(period: $period, from: "2026-01-01T00:00:00+08:00",
                  to: "2026-04-01T00:00:00+08:00", periods: $periods) {
    cohorts { start label size cells { offset customers rate } }
    errors { field code }
  }
}"""


async def test_cohort_retention(gql: Any, world: World) -> None:
    report = (await gql(RETENTION, {"period": "MONTH", "periods": 3}))["cohortRetention"]
    assert report["errors"] == []

    def cells(*values: tuple[int, str | None]) -> list[dict[str, Any]]:
        return [{"offset": k, "customers": n, "rate": r} for k, (n, r) in enumerate(values)]

    # January: c1, c2, c3 (February: c2; March: c1); February: c4, c5, c6 (April: c4);
    # March: c7..c10 (April: c8, c10).
    assert report["cohorts"] == [
        {
            "start": "2026-01-01",
            "label": "2026-01",
            "size": 3,
            "cells": cells((3, "1.0000"), (1, "0.3333"), (1, "0.3333")),
        },
        {
            "start": "2026-02-01",
            "label": "2026-02",
            "size": 3,
            "cells": cells((3, "1.0000"), (0, "0.0000"), (1, "0.3333")),
        },
        {
            "start": "2026-03-01",
            "label": "2026-03",
            "size": 4,
            "cells": cells((4, "1.0000"), (2, "0.5000"), (0, "0.0000")),
        },
    ]


RFM = """
query($partnerId: ID) {
  rfmDistribution(partnerId: $partnerId) {
    segments { segment customers averageRecencyDays averageOrders averageSpent { amount }
               scoredAt }
    errors { field code }
  }
}"""


async def test_rfm_distribution(gql: Any, world: World) -> None:
    segments = (await gql(RFM, {}))["rfmDistribution"]["segments"]
    # As scored on 1 June (test_reports.py works the scores out); recency is counted to the
    # real clock here, so only its presence is checked.
    assert [
        (s["segment"], s["customers"], s["averageOrders"], s["averageSpent"]["amount"])
        for s in segments
    ] == [
        ("hibernating", 3, "1.67", "133.33"),
        ("loyal", 2, "3.00", "350.00"),
        ("potential_loyalist", 2, "2.00", "200.00"),
        ("about_to_sleep", 1, "2.00", "150.00"),
        ("champions", 1, "4.00", "400.00"),
        ("lost", 1, "1.00", "100.00"),
    ]
    assert all(s["averageRecencyDays"] and s["scoredAt"].startswith("2026-06-01") for s in segments)


CHANNELS = """
query($byPartner: Boolean) {
  channelPerformance(from: "2026-02-01", to: "2026-03-31", byPartner: $byPartner) {
    rows { channel partner { name } spend { amount } newCustomers cac { amount }
           revenue { amount } grossMargin { amount } roi }
    total { channel spend { amount } newCustomers cac { amount } roi }
    errors { field code }
  }
}"""


async def test_channel_performance(gql: Any, world: World) -> None:
    report = (await gql(CHANNELS, {"byPartner": True}))["channelPerformance"]
    rows = [
        (
            r["channel"],
            r["partner"] and r["partner"]["name"],
            r["spend"]["amount"],
            r["newCustomers"],
            r["cac"] and r["cac"]["amount"],
            r["roi"],
        )
        for r in report["rows"]
    ]
    # The arithmetic: test_reports.py::test_channel_performance_by_partner.
    assert rows == [
        ("MINI_PROGRAM", None, "1000.00", 2, "500.00", "-0.7900"),
        ("MINI_PROGRAM", "Partner A", "5900.00", 0, None, "-1.0000"),
        ("MINI_PROGRAM", "Partner B", "0.00", 2, "0.00", None),
        ("STORE_POS", "Partner A", "66.67", 1, "66.67", "-0.1000"),
        ("STORE_POS", "Partner B", "1520.00", 2, "760.00", "-0.8026"),
    ]
    assert report["total"] == {
        "channel": None,
        "spend": {"amount": "8486.67"},
        "newCustomers": 7,
        "cac": {"amount": "1212.38"},
        "roi": "-0.9187",
    }


ATTRIBUTED = """
query($groupBy: AttributedSalesGroupBy!, $partnerId: ID, $guideId: ID) {
  attributedSales(groupBy: $groupBy, from: "2026-02-01T00:00:00+08:00",
                  to: "2026-04-01T00:00:00+08:00", partnerId: $partnerId, guideId: $guideId) {
    rows { key label orders customers revenue { amount } grossMargin { amount }
           store { name partner { name } } partner { name } }
    errors { field code }
  }
}"""


async def test_attributed_sales(gql: Any, world: World) -> None:
    report = (await gql(ATTRIBUTED, {"groupBy": "STORE"}))["attributedSales"]
    assert report["errors"] == []
    # a1: c1 o3, c2 o5, c9 o20; b1: c4 o8, o9, c5 o12, c6 o14, c10 o21, o22.
    assert report["rows"] == [
        {
            "key": gid("Store", world.stores["a1"]),
            "label": "Store a1",
            "orders": 3,
            "customers": 3,
            "revenue": {"amount": "250.00"},
            "grossMargin": {"amount": "150.00"},
            "store": {"name": "Store a1", "partner": {"name": "Partner A"}},
            "partner": None,
        },
        {
            "key": gid("Store", world.stores["b1"]),
            "label": "Store b1",
            "orders": 6,
            "customers": 4,
            "revenue": {"amount": "700.00"},
            "grossMargin": {"amount": "420.00"},
            "store": {"name": "Store b1", "partner": {"name": "Partner B"}},
            "partner": None,
        },
    ]


# --- Customer.metrics ------------------------------------------------------------------------

CUSTOMER = """
query($id: ID!) {
  customer(id: $id) {
    metrics { ordersCount totalSpent { amount currency } grossMargin { amount }
              avgOrderValue { amount } firstOrderAt lastOrderAt firstOrderChannel
              rfm { recency frequency monetary segment scoredAt } }
  }
}"""


async def test_customer_metrics(gql: Any, world: World) -> None:
    c1 = (await gql(CUSTOMER, {"id": gid("Customer", world.customers["c1"])}))["customer"]
    # c1: o1, o2, o26 (MP), o3 (POS): 4 orders, 400, 240, 400 / 4 = 100.00; scored
    # R 5 (rank 9 of 10 by last order), F 5 (4 orders, rank 10), M 5 (400, rank 9).
    assert c1["metrics"] == {
        "ordersCount": 4,
        "totalSpent": {"amount": "400.00", "currency": "CNY"},
        "grossMargin": {"amount": "240.00"},
        "avgOrderValue": {"amount": "100.00"},
        "firstOrderAt": "2026-01-05T04:00:00+00:00",
        "lastOrderAt": "2026-05-10T04:00:00+00:00",
        "firstOrderChannel": "mini_program",
        "rfm": {
            "recency": 5,
            "frequency": 5,
            "monetary": 5,
            "segment": "champions",
            "scoredAt": "2026-06-01T04:00:00+00:00",
        },
    }
    # c11 only had a refunded order, c12 none: no metrics.
    for name in ("c11", "c12"):
        found = await gql(CUSTOMER, {"id": gid("Customer", world.customers[name])})
        assert found["customer"]["metrics"] is None


async def test_metrics_follow_who_may_see_the_customer(
    app: Any, issue_token: Any, world: World
) -> None:
    c1, c4 = gid("Customer", world.customers["c1"]), gid("Customer", world.customers["c4"])
    as_a = as_partner(app, issue_token, world, "A")
    mine = (await as_a(CUSTOMER, {"id": c1}))["data"]["customer"]["metrics"]
    # A partner admin (analytics:read) reads its member's metrics, RFM label included, but
    # not the margin: that is the brand's cost, HQ's alone (like Order.costTotal).
    assert (mine["ordersCount"], mine["totalSpent"], mine["grossMargin"]) == (
        4,
        {"amount": "400.00", "currency": "CNY"},
        None,
    )
    assert mine["rfm"]["segment"] == "champions"
    assert (await as_a(CUSTOMER, {"id": c4}))["data"]["customer"] is None


@pytest.mark.parametrize("who", ["member", "store staff"])
async def test_metrics_need_analytics_read(
    app: Any, issue_token: Any, world: World, who: str
) -> None:
    # c2 is a "hibernating" member of store a1: neither the member nor the store's staff
    # (no analytics:read) read how the brand rates them, or what the brand earned on them.
    c2 = world.customers["c2"]
    principal = (
        member(c2) if who == "member" else store_staff(world.partners["A"], world.stores["a1"])
    )
    call = caller(app, token_of(issue_token, principal))
    customer = (await call(CUSTOMER, {"id": gid("Customer", c2)}))["data"]["customer"]
    assert customer == {"metrics": None}  # they see the customer, not the metrics


MARGINS = """
query($partnerId: ID) {
  customerLifetimeValue(groupBy: PARTNER, acquiredFrom: "2026-01-01T00:00:00Z",
                        acquiredTo: "2026-06-01T00:00:00Z", partnerId: $partnerId) {
    rows { revenue { amount } grossMargin { amount } grossMarginPerCustomer { amount } }
    total { grossMargin { amount } grossMarginPerCustomer { amount } }
  }
  channelPerformance(from: "2026-02-01", to: "2026-03-31", partnerId: $partnerId) {
    rows { channel spend { amount } grossMargin { amount } roi }
    total { grossMargin { amount } roi }
  }
  attributedSales(groupBy: PARTNER, from: "2026-02-01T00:00:00+08:00",
                  to: "2026-04-01T00:00:00+08:00", partnerId: $partnerId) {
    rows { revenue { amount } grossMargin { amount } }
  }
}"""


async def test_gross_margin_and_roi_are_hq_only(
    app: Any, gql: Any, issue_token: Any, world: World
) -> None:
    a = gid("Partner", world.partners["A"])
    # HQ, narrowed to A: the numbers of test_reports.py (A: 800 revenue, 480 margin, 120 a
    # customer; MP: 5900 spend and no margin, POS: 66.67 spend, 60 margin; attributed 250, 150).
    hq = await gql(MARGINS, {"partnerId": a})
    assert hq["customerLifetimeValue"] == {
        "rows": [
            {
                "revenue": {"amount": "800.00"},
                "grossMargin": {"amount": "480.00"},
                "grossMarginPerCustomer": {"amount": "120.00"},
            }
        ],
        "total": {
            "grossMargin": {"amount": "480.00"},
            "grossMarginPerCustomer": {"amount": "120.00"},
        },
    }
    assert [
        (r["channel"], r["grossMargin"], r["roi"]) for r in hq["channelPerformance"]["rows"]
    ] == [
        ("MINI_PROGRAM", {"amount": "0.00"}, "-1.0000"),
        ("STORE_POS", {"amount": "60.00"}, "-0.1000"),
    ]
    assert hq["attributedSales"]["rows"] == [
        {"revenue": {"amount": "250.00"}, "grossMargin": {"amount": "150.00"}}
    ]
    # Partner A's admin asks for the same: revenue and spend, but no margin, nor the ROI
    # that would give it away (margin = spend × (1 + ROI)).
    mine = (await as_partner(app, issue_token, world, "A")(MARGINS, {"partnerId": a}))["data"]
    assert mine["customerLifetimeValue"] == {
        "rows": [
            {"revenue": {"amount": "800.00"}, "grossMargin": None, "grossMarginPerCustomer": None}
        ],
        "total": {"grossMargin": None, "grossMarginPerCustomer": None},
    }
    assert mine["channelPerformance"] == {
        "rows": [
            {
                "channel": "MINI_PROGRAM",
                "spend": {"amount": "5900.00"},
                "grossMargin": None,
                "roi": None,
            },
            {
                "channel": "STORE_POS",
                "spend": {"amount": "66.67"},
                "grossMargin": None,
                "roi": None,
            },
        ],
        "total": {"grossMargin": None, "roi": None},
    }
    assert mine["attributedSales"]["rows"] == [
        {"revenue": {"amount": "250.00"}, "grossMargin": None}
    ]


PAGE = """
query($n: Int!) { customers(first: $n) { nodes { id metrics { ordersCount rfm { segment } } } } }
"""


async def test_customer_metrics_are_one_statement_for_a_page(
    gql: Any, world: World, count_queries: Any
) -> None:
    with count_queries() as few:
        small = await gql(PAGE, {"n": 3})
    with count_queries() as many:
        large = await gql(PAGE, {"n": 50})
    assert (len(small["customers"]["nodes"]), len(large["customers"]["nodes"])) == (3, 12)
    # c1..c3 bought 4, 2 and 2 times.
    assert [n["metrics"]["ordersCount"] for n in small["customers"]["nodes"]] == [4, 2, 2]
    # The page, then the metrics of all its customers.
    assert few.count == many.count == 2


# --- who may ask -----------------------------------------------------------------------------


async def test_a_partner_sees_its_own_and_nothing_of_another(
    app: Any, issue_token: Any, world: World
) -> None:
    as_a = as_partner(app, issue_token, world, "A")
    a, b = gid("Partner", world.partners["A"]), gid("Partner", world.partners["B"])
    report = (await as_a(LTV, {"groupBy": "PARTNER", **YEAR}))["data"]["customerLifetimeValue"]
    assert [(r["key"], r["customers"]) for r in report["rows"]] == [(a, 4)]
    # B's id, or one that does not exist: the same empty report, no error.
    for other in (b, gid("Partner", 999)):
        body = await as_a(LTV, {"groupBy": "PARTNER", "partnerId": other, **YEAR})
        empty = body["data"]["customerLifetimeValue"]
        assert (empty["rows"], empty["total"]["customers"], empty["errors"]) == ([], 0, [])
    attributed = (await as_a(ATTRIBUTED, {"groupBy": "PARTNER"}))["data"]["attributedSales"]
    assert [(r["partner"]["name"], r["orders"]) for r in attributed["rows"]] == [("Partner A", 3)]
    foreign_guide = await as_a(
        ATTRIBUTED, {"groupBy": "GUIDE", "guideId": gid("StaffUser", world.guides["gB"])}
    )
    assert foreign_guide["data"]["attributedSales"]["rows"] == []
    channels = (await as_a(CHANNELS, {"byPartner": True}))["data"]["channelPerformance"]
    assert {r["partner"]["name"] for r in channels["rows"]} == {"Partner A"}
    rfm = (await as_a(RFM, {"partnerId": b}))["data"]["rfmDistribution"]
    assert rfm == {"segments": [], "errors": []}


@pytest.mark.parametrize("who", ["store staff", "member"])
async def test_store_staff_and_members_are_refused(
    app: Any, issue_token: Any, world: World, who: str
) -> None:
    principal = (
        store_staff(world.partners["A"], world.stores["a1"])
        if who == "store staff"
        else member(world.customers["c1"])
    )
    call = caller(app, token_of(issue_token, principal))
    for query, variables in (
        (LTV, {"groupBy": "PARTNER", **YEAR}),
        (REPURCHASE, {"days": 30}),
        (RETENTION, {"period": "MONTH"}),
        (RFM, {}),
        (CHANNELS, {}),
        (ATTRIBUTED, {"groupBy": "STORE"}),
    ):
        body = await call(query, variables)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# --- bad arguments ---------------------------------------------------------------------------


async def test_bad_arguments_are_coded_errors(gql: Any, world: World) -> None:
    backwards = {"groupBy": "PARTNER", "from": YEAR["to"], "to": YEAR["from"]}
    report = (await gql(LTV, backwards))["customerLifetimeValue"]
    assert (report["rows"], report["total"]) == ([], None)
    assert [(e["field"], e["code"]) for e in report["errors"]] == [
        (["acquiredTo"], "INVALID_RANGE")
    ]
    too_long = {"groupBy": "PARTNER", "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    errors = (await gql(LTV, too_long))["customerLifetimeValue"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [(["acquiredTo"], "RANGE_TOO_LONG")]
    malformed = {"groupBy": "PARTNER", "partnerId": gid("Store", 1), **YEAR}
    errors = (await gql(LTV, malformed))["customerLifetimeValue"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [(["partnerId"], "INVALID")]
    periods = (await gql(RETENTION, {"period": "WEEK", "periods": 25}))["cohortRetention"]
    assert [(e["field"], e["code"]) for e in periods["errors"]] == [(["periods"], "INVALID")]
    days = (await gql(REPURCHASE, {"days": 0}))["repurchaseRate"]
    assert [(e["field"], e["code"]) for e in days["errors"]] == [(["withinDays"], "INVALID")]
    reversed_days = await gql(
        'query { channelPerformance(from: "2026-03-01", to: "2026-02-01") '
        "{ errors { field code } } }"
    )
    assert reversed_days["channelPerformance"]["errors"] == [
        {"field": ["to"], "code": "INVALID_RANGE"}
    ]


CHANNEL_DAYS = """
query($from: Date!, $to: Date!) {
  channelPerformance(from: $from, to: $to) { rows { channel } errors { field code } }
}"""
RETENTION_TIMES = """
query($from: DateTime!, $to: DateTime!) {
  cohortRetention(period: WEEK, from: $from, to: $to) { cohorts { label } errors { field code } }
}"""


async def test_dates_outside_2000_to_2100_are_coded_errors(gql: Any, world: World) -> None:
    # Dates at the ends of the calendar used to overflow the business-day arithmetic (an
    # internal error); now every date argument lies in 2000-01-01 .. 2100-12-31.
    for days, fields in (
        (("9999-12-30", "9999-12-31"), [["from"], ["to"]]),
        (("0001-01-01", "2026-01-01"), [["from"]]),
        (("1999-12-31", "2000-01-01"), [["from"]]),
        (("2100-12-31", "2101-01-01"), [["to"]]),
    ):
        report = (await gql(CHANNEL_DAYS, {"from": days[0], "to": days[1]}))["channelPerformance"]
        assert report["errors"] == [{"field": f, "code": "INVALID_RANGE"} for f in fields], days
    for edge in (("2000-01-01", "2000-01-01"), ("2100-12-31", "2100-12-31")):
        accepted = await gql(CHANNEL_DAYS, {"from": edge[0], "to": edge[1]})
        assert accepted["channelPerformance"] == {"rows": [], "errors": []}, edge
    for times, fields in (
        (("9999-12-30T00:00:00Z", "9999-12-31T23:59:59Z"), [["from"], ["to"]]),
        (("0001-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), [["from"]]),
        # The calendar ends at midnight in Beijing on 1 January 2101; a second more is out.
        (("2100-12-27T00:00:00+08:00", "2101-01-01T00:00:01+08:00"), [["to"]]),
    ):
        report = (await gql(RETENTION_TIMES, {"from": times[0], "to": times[1]}))["cohortRetention"]
        assert report == {
            "cohorts": [],
            "errors": [{"field": f, "code": "INVALID_RANGE"} for f in fields],
        }, times
    last_week = {"from": "2100-12-27T00:00:00+08:00", "to": "2101-01-01T00:00:00+08:00"}
    assert (await gql(RETENTION_TIMES, last_week))["cohortRetention"] == {
        "cohorts": [{"label": "2100-W52"}],
        "errors": [],
    }


async def test_a_time_without_offset_is_refused_before_it_runs(gql: Any, world: World) -> None:
    body = await gql.raw(
        LTV, {"groupBy": "PARTNER", "from": "2026-01-01T00:00:00", "to": YEAR["to"]}
    )
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "offset" in body["errors"][0]["message"]


# --- statements per report -------------------------------------------------------------------


REPORT_STATEMENTS: list[tuple[str, dict[str, Any], int]] = [
    # The report; the partners behind the rows' labels and objects: one batch.
    (LTV, {"groupBy": "PARTNER", **YEAR}, 2),
    # The report; guides; their stores; their partners (labels share the guide batch);
    # the audit entry of the emails read unmasked (the HQ admin holds pii:read).
    (GROUPS, {"groupBy": "GUIDE"}, 5),
    # The report; the levels.
    (GROUPS, {"groupBy": "LEVEL"}, 2),
    (REPURCHASE, {"days": 90, "groupBy": "FIRST_CHANNEL"}, 1),
    (RETENTION, {"period": "WEEK", "periods": 24}, 1),
    (RFM, {}, 1),
    # The spend records, the new customers, the partners.
    (CHANNELS, {"byPartner": True}, 3),
    # The report; the stores; their partners.
    (ATTRIBUTED, {"groupBy": "STORE"}, 3),
]


async def test_statements_per_report(gql: Any, world: World, count_queries: Any) -> None:
    for query, variables, statements in REPORT_STATEMENTS:
        with count_queries() as counter:
            body = await gql(query, variables)
        (report,) = body.values()
        assert report.get("errors", []) == []
        assert counter.count == statements, (query, variables)
