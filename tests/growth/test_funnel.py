"""The conversion funnel (api/growth/funnel.py) over a hand-computed data set, on both engines.

The data set: ten customers c1..c10, touches at hours after BASE (Monday 2 March 2026, 00:00
UTC); the window is [BASE, BASE + 336h), two weeks. MP = MARKETPLACE_PURCHASE, QR = QR_SCAN,
MR = MEMBER_REGISTERED, FO = FIRST_ORDER. Partner A's store a1/a2, partner B's b1.

    c1   MP 0 tmall A    QR 2 A card-A    MR 10 A a1    FO 34 A a1
    c2   MP 24 tmall A   QR 28 A card-A   MR 32 A a2
    c3   MP 48 jd B      QR 54 B card-B                 FO 60 B b1   (no MR: FO cannot count)
    c4   MP 72 tmall A   QR 70 A card-A                              (QR before MP: no)
    c5   MP 96 jd B
    c6   MP 168 tmall A  QR 169 A card-A  MR 170 A a1   FO 171 B b1  (FO at partner B's store)
    c7   MP 192 tmall A  QR 200 A card-B  MR 200 A a1   FO 199, 230 A a1  (MR at the QR's
                                                        very hour counts; FO 199 is before MR)
    c8   MP -24 tmall A  MP 100 tmall A   QR 101 A card-A            (entered before the window)
    c9   MP 336 tmall A                                              (the window's end: out)
    c10  MP 10 jd B      MP 20 tmall A    QR 15 B card-B             (entry: the first MP, jd)

The whole funnel [MP, QR, MR, FO] for HQ:

* cohort: c1 c2 c3 c4 c5 c6 c7 c10 = 8;
* QR at or after the entry: c1 (+2h) c2 (+4) c3 (+6) c6 (+1) c7 (+8) c10 (15 - 10 = +5) = 6;
* MR at or after the QR: c1 (+8) c2 (+4) c6 (+1) c7 (+0) = 4;
* FO at or after the MR: c1 (+24) c6 (+1) c7 (230 - 200 = +30) = 3.

Rates from the previous step: 6/8 = 0.7500, 4/6 = 0.6667, 3/4 = 0.7500; from the first:
0.7500, 0.5000, 0.3750. Medians: QR of 1 2 4 5 6 8 = (4 + 5) / 2 = 4.50 hours, MR of
0 1 4 8 = 2.50, FO of 1 24 30 = 24.00.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from api.analytics.business_calendar import BUSINESS_TZ as CST
from api.analytics.business_calendar import Period, period_index, period_start
from api.auth.principal import Principal, Role
from api.customers.models import Customer
from api.errors import DomainError
from api.growth import funnel
from api.growth.funnel import FunnelGroupBy, FunnelQuery, conversion_funnel
from api.growth.models import Touchpoint, TouchpointStep
from tests.growth.conftest import BASE, HOUR, add_touches
from tests.orders.conftest import HQ, caller, gid, partner_admin, store_staff, token_of

MP = TouchpointStep.MARKETPLACE_PURCHASE
QR = TouchpointStep.QR_SCAN
MR = TouchpointStep.MEMBER_REGISTERED
FO = TouchpointStep.FIRST_ORDER
FOUR = (MP, QR, MR, FO)
END = BASE + 336 * HOUR


def partner(partner_id: int) -> Principal:
    return Principal(
        f"admin:{partner_id}",
        Role.PARTNER_ADMIN,
        partner_id=partner_id,
        scopes=frozenset({"analytics:read"}),
    )


async def customers(db, count: int) -> list[int]:
    async with db.transaction() as session:
        return list(
            await session.scalars(
                insert(Customer).returning(Customer.id, sort_by_parameter_order=True),
                [{"name": f"c{i + 1}"} for i in range(count)],
            )
        )


@pytest.fixture
async def data(db, shop) -> dict[str, int]:
    """The data set of the module docstring; returns c1..c10 → customer id."""
    ids = await customers(db, 10)
    c = {f"c{i + 1}": cid for i, cid in enumerate(ids)}
    a, b = shop.partner_a, shop.partner_b

    def t(who: str, step: TouchpointStep, hour: float, partner_id: int, **more: Any) -> dict:
        return {
            "customer_id": c[who],
            "step": step,
            "at": BASE + hour * HOUR,
            "partner_id": partner_id,
            **more,
        }

    tmall, jd = {"source_channel": "tmall"}, {"source_channel": "jd"}
    await add_touches(
        db,
        [
            t("c1", MP, 0, a, **tmall),
            t("c1", QR, 2, a, campaign_id="card-A"),
            t("c1", MR, 10, a, store_id=shop.a1),
            t("c1", FO, 34, a, store_id=shop.a1),
            t("c2", MP, 24, a, **tmall),
            t("c2", QR, 28, a, campaign_id="card-A"),
            t("c2", MR, 32, a, store_id=shop.a2),
            t("c3", MP, 48, b, **jd),
            t("c3", QR, 54, b, campaign_id="card-B"),
            t("c3", FO, 60, b, store_id=shop.b1),
            t("c4", MP, 72, a, **tmall),
            t("c4", QR, 70, a, campaign_id="card-A"),
            t("c5", MP, 96, b, **jd),
            t("c6", MP, 168, a, **tmall),
            t("c6", QR, 169, a, campaign_id="card-A"),
            t("c6", MR, 170, a, store_id=shop.a1),
            t("c6", FO, 171, b, store_id=shop.b1),
            t("c7", MP, 192, a, **tmall),
            t("c7", QR, 200, a, campaign_id="card-B"),
            t("c7", MR, 200, a, store_id=shop.a1),
            t("c7", FO, 199, a, store_id=shop.a1),
            t("c7", FO, 230, a, store_id=shop.a1),
            t("c8", MP, -24, a, **tmall),
            t("c8", MP, 100, a, **tmall),
            t("c8", QR, 101, a, campaign_id="card-A"),
            t("c9", MP, 336, a, **tmall),
            t("c10", MP, 10, b, **jd),
            t("c10", MP, 20, a, **tmall),
            t("c10", QR, 15, b, campaign_id="card-B"),
        ],
    )
    return c


async def run(db, principal: Principal = HQ, **fields: Any) -> funnel.FunnelResult:
    query = FunnelQuery(start=fields.pop("start", BASE), end=fields.pop("end", END), **fields)
    async with db.read() as session:
        return await conversion_funnel(session, principal, query)


def table(group: funnel.FunnelGroup) -> list[tuple]:
    """(customers, from previous, from first, median hours) per step, as strings."""

    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return [
        (
            s.customers,
            text(s.conversion_from_previous),
            text(s.conversion_from_first),
            text(s.median_hours_from_previous),
        )
        for s in group.steps
    ]


WHOLE = [
    (8, None, "1.0000", None),
    (6, "0.7500", "0.7500", "4.50"),
    (4, "0.6667", "0.5000", "2.50"),
    (3, "0.7500", "0.3750", "24.00"),
]


async def test_the_hand_computed_funnel(db, data):
    result = await run(db, steps=FOUR)
    (group,) = result.groups
    assert group.key is None and not result.truncated
    assert [s.step for s in group.steps] == list(FOUR)
    assert table(group) == WHOLE


async def test_by_source_channel_of_the_entry_touch(db, data):
    """tmall: c1 c2 c4 c6 c7 → QR c1 c2 c6 c7 (+2 +4 +1 +8: median 3) → MR the same four
    (+8 +4 +1 +0: 2.5) → FO c1 c6 c7 (+24 +1 +30: 24). jd: c3 c5 c10 → QR c3 c10 (+6 +5:
    5.5) → nobody registered, so FO's base is 0."""
    result = await run(db, steps=FOUR, group_by=FunnelGroupBy.SOURCE_CHANNEL)
    assert [(g.key, table(g)) for g in result.groups] == [
        (
            "tmall",
            [
                (5, None, "1.0000", None),
                (4, "0.8000", "0.8000", "3.00"),
                (4, "1.0000", "0.8000", "2.50"),
                (3, "0.7500", "0.6000", "24.00"),
            ],
        ),
        (
            "jd",
            [
                (3, None, "1.0000", None),
                (2, "0.6667", "0.6667", "5.50"),
                (0, "0.0000", "0.0000", None),
                (0, None, "0.0000", None),
            ],
        ),
    ]


async def test_by_partner_of_the_entry_touch(db, data, shop):
    """Every tmall entry is partner A's and every jd one B's (c10 entered by jd): as above."""
    result = await run(db, steps=FOUR, group_by=FunnelGroupBy.PARTNER)
    assert [(g.key, g.steps[0].customers, g.steps[3].customers) for g in result.groups] == [
        (shop.partner_a, 5, 3),
        (shop.partner_b, 3, 0),
    ]


async def test_cohorts_by_week_and_month(db, data):
    """Week of 2 March: c1 c2 c3 c4 c5 c10 → QR c1 c2 c3 c10 (+2 +4 +6 +5: 4.5) → MR c1 c2
    (+8 +4: 6) → FO c1 (+24). Week of 9 March: c6 c7 → QR (+1 +8: 4.5) → MR (+1 +0: 0.5) →
    FO (+1 +30: 15.5). One month: the whole funnel."""
    result = await run(db, steps=FOUR, group_by=FunnelGroupBy.COHORT_WEEK)
    assert [(g.key, table(g)) for g in result.groups] == [
        (
            datetime(2026, 3, 2).date(),
            [
                (6, None, "1.0000", None),
                (4, "0.6667", "0.6667", "4.50"),
                (2, "0.5000", "0.3333", "6.00"),
                (1, "0.5000", "0.1667", "24.00"),
            ],
        ),
        (
            datetime(2026, 3, 9).date(),
            [
                (2, None, "1.0000", None),
                (2, "1.0000", "1.0000", "4.50"),
                (2, "1.0000", "1.0000", "0.50"),
                (2, "1.0000", "1.0000", "15.50"),
            ],
        ),
    ]
    (month,) = (await run(db, steps=FOUR, group_by=FunnelGroupBy.COHORT_MONTH)).groups
    assert (month.key, table(month)) == (datetime(2026, 3, 1).date(), WHOLE)


async def test_weeks_start_on_monday_and_months_on_the_first_in_the_business_calendar(db, shop):
    """Cohorts are weeks and months at UTC+8, as in the reports
    (api/analytics/business_calendar.py): each entry falls in the period ``period_index``
    puts it in, not its UTC one."""
    ids = await customers(db, 5)
    times = [
        datetime(2026, 3, 8, 23, 59, 59, tzinfo=CST),  # Sunday: the week of 2 March
        datetime(2026, 3, 9, tzinfo=CST),  # Monday (Sunday in UTC): the week of 9 March
        datetime(2026, 2, 28, 23, 59, 59, tzinfo=CST),  # Saturday: February, week of 23 Feb
        datetime(2026, 3, 1, tzinfo=CST),  # Sunday (February in UTC): March, week of 23 Feb
        datetime(2026, 3, 1, 7, tzinfo=CST),  # 23:00 UTC on 28 February: March too
    ]
    await add_touches(
        db, [{"customer_id": c, "step": MP, "at": t} for c, t in zip(ids, times, strict=True)]
    )
    window = {"start": datetime(2026, 2, 1, tzinfo=UTC), "end": datetime(2026, 4, 1, tzinfo=UTC)}
    weeks = await run(db, steps=(MP, QR), group_by=FunnelGroupBy.COHORT_WEEK, **window)
    assert [(g.key.isoformat(), g.steps[0].customers) for g in weeks.groups] == [
        ("2026-02-23", 3),
        ("2026-03-02", 1),
        ("2026-03-09", 1),
    ]
    months = await run(db, steps=(MP, QR), group_by=FunnelGroupBy.COHORT_MONTH, **window)
    assert [(g.key.isoformat(), g.steps[0].customers) for g in months.groups] == [
        ("2026-02-01", 1),
        ("2026-03-01", 4),
    ]
    for period, result in ((Period.WEEK, weeks), (Period.MONTH, months)):
        reported = Counter(period_start(period_index(t, period), period) for t in times)
        assert {g.key: g.steps[0].customers for g in result.groups} == reported


async def test_a_step_before_its_predecessor_does_not_count(db, shop):
    """x scans before buying, y after: only y converts; z's scan at the purchase's very
    instant counts."""
    x, y, z = await customers(db, 3)
    await add_touches(
        db,
        [
            {"customer_id": x, "step": QR, "at": BASE + HOUR},
            {"customer_id": x, "step": MP, "at": BASE + 2 * HOUR},
            {"customer_id": y, "step": MP, "at": BASE + HOUR},
            {"customer_id": y, "step": QR, "at": BASE + 3 * HOUR},
            {"customer_id": z, "step": MP, "at": BASE + HOUR},
            {"customer_id": z, "step": QR, "at": BASE + HOUR},
        ],
    )
    (group,) = (await run(db, steps=(MP, QR))).groups
    assert table(group) == [(3, None, "1.0000", None), (2, "0.6667", "0.6667", "1.00")]
    # Reversed, x is the one who converts (y and z scanned before or at their purchase).
    (group,) = (await run(db, steps=(QR, MP))).groups
    assert [s.customers for s in group.steps] == [3, 2]


async def test_filters_choose_the_entry_touches(db, data, shop):
    # jd: c3 c5 c10, exactly the jd group.
    (group,) = (await run(db, steps=FOUR, source_channel="jd")).groups
    assert [s.customers for s in group.steps] == [3, 2, 0, 0]

    # Partner A's entries: c1 c2 c4 c6 c7 and c10 (its tmall purchase at 20h, after its QR at
    # 15h, so no QR). Later steps are anyone's: c6's first order at B's store counts.
    (group,) = (await run(db, steps=FOUR, partner_id=shop.partner_a)).groups
    assert table(group) == [
        (6, None, "1.0000", None),
        (4, "0.6667", "0.6667", "3.00"),
        (4, "1.0000", "0.6667", "2.50"),
        (3, "0.7500", "0.5000", "24.00"),
    ]

    # Scans of QR campaign card-A: c1 (2h) c2 (28h) c4 (70h) c6 (169h) c8 (101h; its earlier
    # entry was a purchase, not a scan) → MR c1 (+8) c2 (+4) c6 (+1): median 4 → FO c1 (+24)
    # c6 (+1): median 12.5.
    (group,) = (await run(db, steps=(QR, MR, FO), campaign_id="card-A")).groups
    assert table(group) == [
        (5, None, "1.0000", None),
        (3, "0.6000", "0.6000", "4.00"),
        (2, "0.6667", "0.4000", "12.50"),
    ]

    # Registrations at store a1: c1 c6 c7 → FO c1 (+24) c6 (+1) c7 (+30).
    (group,) = (await run(db, steps=(MR, FO), store_id=shop.a1)).groups
    assert table(group) == [(3, None, "1.0000", None), (3, "1.0000", "1.0000", "24.00")]


async def test_the_window_is_half_open(db, data):
    """c9 bought at the window's end: out of it, and in the next one."""
    (group,) = (await run(db, steps=(MP, QR), start=END, end=END + HOUR)).groups
    assert group.steps[0].customers == 1


async def test_a_partner_sees_only_its_own_touches(db, data, shop):
    """Partner A's funnel: entries c1 c2 c4 c6 c7 c10 (its 20h purchase) → QR c1 c2 c6 c7
    (c10's scan was B's) → MR the same → FO c1 (+24) c7 (+30): c6's order was at B's store."""
    (group,) = (await run(db, partner(shop.partner_a), steps=FOUR)).groups
    assert table(group) == [
        (6, None, "1.0000", None),
        (4, "0.6667", "0.6667", "3.00"),
        (4, "1.0000", "0.6667", "2.50"),
        (2, "0.5000", "0.3333", "27.00"),
    ]
    own = await run(db, partner(shop.partner_a), steps=FOUR, partner_id=shop.partner_a)
    assert table(own.groups[0]) == table(group)
    # Another partner's id finds what a missing one finds: nothing.
    other = await run(db, partner(shop.partner_a), steps=FOUR, partner_id=shop.partner_b)
    missing = await run(db, partner(shop.partner_a), steps=FOUR, partner_id=99_999)
    assert other == missing
    assert [s.customers for s in other.groups[0].steps] == [0, 0, 0, 0]
    grouped = await run(db, partner(shop.partner_a), steps=FOUR, group_by=FunnelGroupBy.PARTNER)
    assert [g.key for g in grouped.groups] == [shop.partner_a]


async def test_store_staff_see_their_stores_touches(db, data, shop):
    staff = store_staff(shop.partner_a, shop.a1)
    (group,) = (await run(db, staff, steps=(MR, FO))).groups
    # a1's registrations c1 c6 c7; first orders at a1: c1 and c7 (c6's was at b1).
    assert [s.customers for s in group.steps] == [3, 2]


async def test_an_empty_cohort(db, shop):
    (group,) = (await run(db, steps=FOUR)).groups
    assert (
        table(group) == [(0, None, None, None), (0, None, None, None)] + [(0, None, None, None)] * 2
    )
    assert (await run(db, steps=FOUR, group_by=FunnelGroupBy.STORE)).groups == []


async def test_the_largest_groups_are_kept(db, data, monkeypatch):
    monkeypatch.setattr(funnel, "MAX_GROUPS", 1)
    result = await run(db, steps=FOUR, group_by=FunnelGroupBy.SOURCE_CHANNEL)
    assert [g.key for g in result.groups] == ["tmall"] and result.truncated


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"steps": (MP,)}, [("INVALID", ("steps",))]),
        ({"steps": (MP, QR, MP)}, [("INVALID", ("steps", "2"))]),
        ({"steps": ()}, [("INVALID", ("steps",))]),
        ({"end": BASE}, [("INVALID", ("to",))]),
        ({"end": BASE - HOUR}, [("INVALID", ("to",))]),
        ({"end": BASE + timedelta(days=2 * 366 + 1)}, [("INVALID", ("to",))]),
        ({"start": BASE.replace(tzinfo=None)}, [("INVALID", ("from",))]),
    ],
)
async def test_a_query_of_the_wrong_shape_is_refused(db, shop, fields, refused):
    try:
        await run(db, **fields)
    except DomainError as error:
        assert [(p.code.name, p.field) for p in error.problems] == refused
    else:
        raise AssertionError("accepted")


async def test_one_statement_computes_the_funnel(db, data, count_queries):
    """PostgreSQL: counts and medians in one statement. SQLite: one more for the medians."""
    with count_queries() as counter:
        await run(db, steps=FOUR, group_by=FunnelGroupBy.SOURCE_CHANNEL)
    assert counter.count == (2 if db.is_sqlite else 1), counter.statements


def test_the_statement_is_one_select_and_parameterised():
    query = FunnelQuery(
        start=BASE,
        end=END,
        steps=FOUR,
        source_channel="x'; DROP TABLE touchpoint; --",
        group_by=FunnelGroupBy.CAMPAIGN,
    )
    for dialect in ("postgresql", "sqlite"):
        stmt = funnel.funnel_statement(query, dialect=dialect)
        sql = str(stmt.compile(dialect=_dialect(dialect)))
        assert "DROP TABLE" not in sql
        assert sql.lstrip().upper().startswith("WITH")


def _dialect(name: str) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.dialect() if name == "postgresql" else sqlite.dialect()


# --- over GraphQL --------------------------------------------------------------------------

FUNNEL = """query($from: DateTime!, $to: DateTime!, $steps: [TouchpointStep!],
  $groupBy: FunnelGroupBy, $partnerId: ID) {
  conversionFunnel(from: $from, to: $to, steps: $steps, groupBy: $groupBy,
    partnerId: $partnerId) {
    groups { key cohortStart partner { id } store { id }
      steps { step customers conversionFromPrevious conversionFromFirst
        medianHoursFromPrevious } }
    truncated errors { code field message }
  }
}"""


def variables(**fields: Any) -> dict:
    return {"from": BASE.isoformat(), "to": END.isoformat(), **fields}


async def test_conversion_funnel_over_graphql(gql, data, shop):
    body = await gql(FUNNEL, variables(groupBy="PARTNER"))
    result = body["conversionFunnel"]
    assert result["errors"] == [] and result["truncated"] is False
    tmall, jd = result["groups"]
    assert (tmall["key"], jd["key"]) == (
        gid("Partner", shop.partner_a),
        gid("Partner", shop.partner_b),
    )
    assert tmall["partner"] == {"id": gid("Partner", shop.partner_a)}
    assert [s["step"] for s in tmall["steps"]] == [s.name for s in TouchpointStep]
    assert tmall["steps"][1] == {
        "step": "QR_SCAN",
        "customers": 4,
        "conversionFromPrevious": "0.8000",
        "conversionFromFirst": "0.8000",
        "medianHoursFromPrevious": "3.00",
    }
    weeks = await gql(
        FUNNEL, variables(groupBy="COHORT_WEEK", steps=["MARKETPLACE_PURCHASE", "QR_SCAN"])
    )
    assert [(g["key"], g["cohortStart"]) for g in weeks["conversionFunnel"]["groups"]] == [
        ("2026-03-02", "2026-03-02"),
        ("2026-03-09", "2026-03-09"),
    ]


async def test_conversion_funnel_errors_name_the_arguments(gql, shop):
    body = await gql(FUNNEL, variables(steps=["QR_SCAN", "QR_SCAN"], to=BASE.isoformat()))
    result = body["conversionFunnel"]
    assert result["groups"] == []
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("INVALID", ["steps", "1"]),
        ("INVALID", ["to"]),
    ]
    body = await gql(FUNNEL, variables(partnerId="nope"))
    assert [(e["code"], e["field"]) for e in body["conversionFunnel"]["errors"]] == [
        ("INVALID", ["partnerId"])
    ]


async def test_a_partners_funnel_over_graphql(app, data, shop, issue_token):
    call = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    steps = ["MARKETPLACE_PURCHASE", "QR_SCAN", "MEMBER_REGISTERED", "FIRST_ORDER"]
    body = await call(FUNNEL, variables(steps=steps))
    (group,) = body["data"]["conversionFunnel"]["groups"]
    assert [s["customers"] for s in group["steps"]] == [6, 4, 4, 2]
    other = await call(FUNNEL, variables(steps=steps, partnerId=gid("Partner", shop.partner_b)))
    missing = await call(FUNNEL, variables(steps=steps, partnerId=gid("Partner", 99_999)))
    assert other == missing


async def test_store_staff_and_members_may_not_read_funnels(app, shop, issue_token):
    for principal in (store_staff(shop.partner_a, shop.a1),):
        body = await caller(app, token_of(issue_token, principal))(FUNNEL, variables())
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await caller(app, issue_token(Role.MEMBER, customer_id=shop.ann))(FUNNEL, variables())
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# --- against a reference -------------------------------------------------------------------


def reference(touches: list[dict], query: FunnelQuery, partner_id: int | None) -> list[int]:
    """The module docstring's definition, spelled out in Python: customers per step."""
    seen = [t for t in touches if partner_id is None or t["partner_id"] == partner_id]
    counts = [0] * len(query.steps)
    for customer in {t["customer_id"] for t in seen}:
        own = sorted(
            (t for t in seen if t["customer_id"] == customer), key=lambda t: (t["at"], t["id"])
        )
        entries = [
            t
            for t in own
            if t["step"] is query.steps[0]
            and (query.partner_id is None or t["partner_id"] == query.partner_id)
        ]
        if not entries or not BASE <= entries[0]["at"] < query.end:
            continue
        reached = entries[0]["at"]
        counts[0] += 1
        for index, step in enumerate(query.steps[1:], start=1):
            later = [t["at"] for t in own if t["step"] is step and t["at"] >= reached]
            if not later:
                break
            reached = min(later)
            counts[index] += 1
    return counts


touch_strategy = st.lists(
    st.tuples(
        st.integers(0, 5),  # customer
        st.sampled_from((MP, QR, MR)),
        st.integers(-3, 12),  # hour
        st.sampled_from(("a", "b")),  # partner
    ),
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    touches=touch_strategy,
    steps=st.permutations((MP, QR, MR)).map(tuple),
    length=st.integers(2, 3),
    viewer=st.sampled_from((None, "a", "b")),
    entry_partner=st.sampled_from((None, "a", "b")),
)
async def test_the_funnel_matches_its_definition(
    db, shop, touches, steps, length, viewer, entry_partner
):
    partners = {"a": shop.partner_a, "b": shop.partner_b, None: None}
    async with db.transaction() as session:
        await session.execute(delete(Touchpoint))
    ids = await customers(db, 6)
    rows = [
        {
            "id": number + 1,
            "customer_id": ids[who],
            "step": step,
            "at": BASE + hour * HOUR,
            "partner_id": partners[owner],
        }
        for number, (who, step, hour, owner) in enumerate(touches)
    ]
    if rows:
        await add_touches(db, [{k: v for k, v in r.items() if k != "id"} for r in rows])
    query = FunnelQuery(
        start=BASE,
        end=BASE + 8 * HOUR,
        steps=steps[:length],
        partner_id=partners[entry_partner],
    )
    principal = HQ if viewer is None else partner(partners[viewer])
    async with db.read() as session:
        (group,) = (await conversion_funnel(session, principal, query)).groups
    assert [s.customers for s in group.steps] == reference(
        rows, query, partners[viewer] if viewer else None
    )
