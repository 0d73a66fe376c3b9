"""Members: joining (recruited by a store and guide for life) and member levels."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api import cli
from api.auth.principal import Principal, Role
from api.customers import membership
from api.customers.level_review import review_levels
from api.customers.levels import all_levels
from api.customers.models import Customer, IdentityKind, MemberLevelChange
from api.customers.profile import CustomerDraft
from api.customers.qualification import evaluate_level, record_spend
from api.db import utcnow
from api.errors import DomainError
from api.loyalty import earning as loyalty_earning
from api.loyalty import reversals as loyalty_reversals
from api.loyalty import spending as loyalty_spending
from tests.customers.conftest import MEMBER_JOIN, add_staff, create_level, gid, join, pk
from tests.factories import create_customer
from tests.wiring import CUSTOMERS, POINTS_POLICY

HQ = Principal(subject="user:1", role=Role.HQ_ADMIN)
HISTORY = """query($id: ID!) { customer(id: $id) {
  membership { level { code } manualLevel { code } periodEndsAt graceEndsAt }
  levelHistory { totalCount nodes { reason actor fromLevel { code } toLevel { code } } }
} }"""


async def join_raw(client, **payload):
    return (await client(MEMBER_JOIN, {"input": payload}))["memberJoin"]


async def test_a_clerk_enrols_a_walk_in_by_phone_for_their_store_as_guide(
    gql, db, as_principal, network
):
    await create_level(gql, "silver", 0, "0")
    clerk_id = await add_staff(
        db, "clerk@a.example.com", Role.STORE_STAFF, pk(network["A"]["id"]), pk(network["SA"]["id"])
    )
    clerk = as_principal(
        Role.STORE_STAFF,
        partner_id=pk(network["A"]["id"]),
        store_id=pk(network["SA"]["id"]),
        subject=f"user:{clerk_id}",
    )
    result = await join_raw(
        clerk,
        identities=[{"kind": "PHONE", "value": "+86 139 0000 0001"}],
        name="Walk In",
        consents=[{"purpose": "MARKETING_MESSAGES", "granted": True, "source": "store"}],
    )
    assert result["errors"] == []
    membership = result["customer"]["membership"]
    assert membership["recruitedStore"] == {"code": "SA"}
    assert membership["recruitedPartner"] == {"code": "PA"}
    assert membership["recruitedGuideId"] == gid("StaffUser", clerk_id)
    assert membership["level"] == {"code": "silver"}
    assert membership["periodEndsAt"] is None  # the lowest level is never reviewed
    # The clerk now sees the member they recruited, and its history.
    seen = await clerk(HISTORY, {"id": result["customer"]["id"]})
    assert seen["customer"]["levelHistory"]["nodes"] == [
        {
            "reason": "join",
            "actor": f"user:{clerk_id}",
            "fromLevel": None,
            "toLevel": {"code": "silver"},
        }
    ]
    first = await gql("{ customers { nodes { firstChannel } } }")
    assert first["customers"]["nodes"] == [{"firstChannel": "store"}]


async def test_who_may_recruit_where(gql, db, as_principal, network):
    other_guide = await add_staff(
        db, "g@b.example.com", Role.STORE_STAFF, pk(network["B"]["id"]), pk(network["SB"]["id"])
    )
    partner_a = as_principal(Role.PARTNER_ADMIN, partner_id=pk(network["A"]["id"]))
    phone = [{"kind": "PHONE", "value": "13900000002"}]
    cases = [
        ({"identities": phone}, ("REQUIRED", ["input", "storeId"])),
        (
            {"identities": phone, "storeId": network["SB"]["id"]},
            ("UNKNOWN_STORE", ["input", "storeId"]),
        ),
        (
            {
                "identities": phone,
                "storeId": network["SA"]["id"],
                "guideId": gid("StaffUser", other_guide),
            },
            ("UNKNOWN_GUIDE", ["input", "guideId"]),
        ),
        ({"storeId": network["SA"]["id"]}, ("REQUIRED", ["input", "customerId"])),
    ]
    for payload, expected in cases:
        result = await join_raw(partner_a, **payload)
        assert [(e["code"], e["field"]) for e in result["errors"]] == [expected], payload
    # A store clerk cannot recruit for another store.
    clerk = as_principal(
        Role.STORE_STAFF, partner_id=pk(network["A"]["id"]), store_id=pk(network["SA"]["id"])
    )
    result = await join_raw(clerk, identities=phone, storeId=network["SA2"]["id"])
    assert [e["code"] for e in result["errors"]] == ["UNKNOWN_STORE"]
    # Nothing was created by the refusals.
    assert (await gql("{ customers { totalCount } }"))["customers"]["totalCount"] == 0

    ok = await join_raw(partner_a, identities=phone, storeId=network["SA2"]["id"])
    assert ok["errors"] == [] and ok["customer"]["membership"]["recruitedStore"] == {"code": "SA2"}
    assert ok["customer"]["membership"]["recruitedGuideId"] is None


async def test_already_a_member_elsewhere_is_refused_without_saying_where(
    gql, as_principal, network
):
    member = await create_customer(gql, "13900000003", name="Taken")
    await join(gql, customerId=member["id"], storeId=network["SB"]["id"])
    partner_a = as_principal(Role.PARTNER_ADMIN, partner_id=pk(network["A"]["id"]))
    result = await join_raw(
        partner_a,
        identities=[{"kind": "PHONE", "value": "13900000003"}],
        name="Renamed",
        consents=[{"purpose": "PROFILING", "granted": True, "source": "store"}],
        storeId=network["SA"]["id"],
    )
    assert result == {
        "customer": None,
        "errors": [
            {
                "code": "ALREADY_MEMBER",
                "field": ["input", "identities"],
                "message": "This customer is a member already.",
            }
        ],
    }
    # A partner may not bring a second identity along (it would be attached to the member).
    sneaky = await join_raw(
        partner_a,
        identities=[
            {"kind": "PHONE", "value": "13900000003"},
            {"kind": "WECHAT_UNIONID", "value": "oSneaky"},
        ],
        storeId=network["SA"]["id"],
    )
    assert [(e["code"], e["field"]) for e in sneaky["errors"]] == [
        ("INVALID", ["input", "identities"])
    ]
    # Nothing changed on the member: no identity attached, no rename, same store.
    data = await gql(
        "query($id: ID!) { customer(id: $id) { name identities { kind } consents { purpose } "
        "membership { recruitedStore { code } } } }",
        {"id": member["id"]},
    )
    assert data["customer"] == {
        "name": "Taken",
        "identities": [{"kind": "PHONE"}],
        "consents": [],
        "membership": {"recruitedStore": {"code": "SB"}},
    }
    again = await join_raw(gql, customerId=member["id"], storeId=network["SB"]["id"])
    assert [e["code"] for e in again["errors"]] == ["ALREADY_MEMBER"]


async def _member(db, phone: str, store_pk: int, now) -> int:
    async with db.transaction() as session:
        customer = await membership.join(
            session,
            HQ,
            membership.JoinRequest(
                draft=CustomerDraft([(IdentityKind.PHONE, phone)]), store_id=store_pk
            ),
            wiring=CUSTOMERS,
            now=now,
        )
        return customer.id


async def _state(db, customer_id: int) -> tuple[str | None, object, object, list[str]]:
    async with db.read() as session:
        customer = await session.get(Customer, customer_id)
        by_id = {lv.id: lv.code for lv in await all_levels(session)}
        history = list(
            await session.scalars(
                select(MemberLevelChange.reason)
                .where(MemberLevelChange.customer_id == customer_id)
                .order_by(MemberLevelChange.id)
            )
        )
    return (
        by_id.get(customer.level_id),
        customer.level_period_ends_at,
        customer.level_grace_ends_at,
        history,
    )


@pytest.fixture
async def programme(gql, network):
    """silver (entry), gold (¥1000 in 365 days, 30 days of grace), platinum (¥5000)."""
    await create_level(gql, "silver", 0, "0")
    await create_level(gql, "gold", 1, "1000", windowDays=365, graceDays=30)
    await create_level(gql, "platinum", 2, "5000", windowDays=365, graceDays=30)
    return network


async def test_spend_upgrades_at_once_and_period_end_grace_then_downgrade(db, programme):
    t0 = utcnow()
    member = await _member(db, "13900000004", pk(programme["SA"]["id"]), t0)
    async with db.transaction() as session:
        assert await record_spend(
            session, member, Decimal("600"), source_type="order", source_id="o1", at=t0, now=t0
        )
        assert await record_spend(
            session, member, Decimal("600"), source_type="order", source_id="o2", at=t0, now=t0
        )
        # A retried order counts once.
        assert not await record_spend(
            session, member, Decimal("600"), source_type="order", source_id="o2", at=t0, now=t0
        )
    level, period, grace, history = await _state(db, member)
    assert (level, grace, history) == ("gold", None, ["join", "upgrade"])
    assert period == t0 + timedelta(days=365)

    # Nothing is due before the period ends.
    async with db.transaction() as session:
        assert (await review_levels(session, t0 + timedelta(days=364))).reviewed == 0
    # The spend has left the window at period end: grace until period end + 30 days.
    async with db.transaction() as session:
        summary = await review_levels(session, t0 + timedelta(days=366))
    assert (summary.reviewed, summary.entered_grace) == (1, 1)
    level, period, grace, _ = await _state(db, member)
    assert (level, grace) == ("gold", t0 + timedelta(days=395))
    async with db.transaction() as session:
        assert (await review_levels(session, t0 + timedelta(days=390))).reviewed == 0
    # Still not qualifying when grace ends: down to the best level they qualify for.
    async with db.transaction() as session:
        summary = await review_levels(session, t0 + timedelta(days=396))
    assert (summary.reviewed, summary.downgraded) == (1, 1)
    level, period, grace, history = await _state(db, member)
    assert (level, period, grace) == ("silver", None, None)
    assert history == ["join", "upgrade", "downgrade"]


async def test_qualifying_again_in_grace_keeps_the_level_for_a_new_period(db, programme):
    t0 = utcnow()
    member = await _member(db, "13900000005", pk(programme["SA"]["id"]), t0)
    async with db.transaction() as session:
        await record_spend(
            session, member, Decimal("1000"), source_type="order", source_id="a", at=t0, now=t0
        )
        await review_levels(session, t0 + timedelta(days=366))
    assert (await _state(db, member))[2] is not None  # in grace
    t1 = t0 + timedelta(days=370)
    async with db.transaction() as session:
        await record_spend(
            session, member, Decimal("1000"), source_type="order", source_id="b", at=t1, now=t1
        )
    level, period, grace, history = await _state(db, member)
    assert (level, period, grace) == ("gold", t1 + timedelta(days=365), None)
    assert history == ["join", "upgrade"]
    # Spending on within the period: at its end they still qualify and are renewed, not
    # reviewed again until the next period ends.
    async with db.transaction() as session:
        t2 = t1 + timedelta(days=100)
        await record_spend(
            session, member, Decimal("1000"), source_type="order", source_id="c", at=t2, now=t2
        )
        summary = await review_levels(session, t1 + timedelta(days=365))
    assert (summary.reviewed, summary.renewed) == (1, 1)
    assert (await _state(db, member))[1] == t1 + timedelta(days=730)


async def test_a_manual_level_is_a_floor(gql, db, programme):
    t0 = utcnow()
    member = await _member(db, "13900000006", pk(programme["SA"]["id"]), t0)
    levels_by_code = {
        lv["code"]: lv["id"] for lv in (await gql("{ memberLevels { id code } }"))["memberLevels"]
    }
    set_level = (
        "mutation($c: ID!, $l: ID) { memberLevelSet(input: {customerId: $c, levelId: $l}) "
        "{ customer { membership { level { code } manualLevel { code } } } "
        "errors { field code } } }"
    )
    lifted = (await gql(set_level, {"c": gid("Customer", member), "l": levels_by_code["gold"]}))[
        "memberLevelSet"
    ]
    assert lifted["customer"]["membership"] == {
        "level": {"code": "gold"},
        "manualLevel": {"code": "gold"},
    }
    # Spend reaching platinum upgrades past the floor...
    async with db.transaction() as session:
        await record_spend(
            session, member, Decimal("5000"), source_type="order", source_id="big", at=t0, now=t0
        )
    assert (await _state(db, member))[0] == "platinum"
    # ...and when it lapses, the member drops to the floor, not below.
    async with db.transaction() as session:
        await review_levels(session, t0 + timedelta(days=366))
        await review_levels(session, t0 + timedelta(days=400))
    level, _, grace, history = await _state(db, member)
    assert (level, grace) == ("gold", None)
    assert history == ["join", "manual", "upgrade", "downgrade"]
    # At gold's period end, the floor holds: renewed rather than graced.
    async with db.transaction() as session:
        summary = await review_levels(session, t0 + timedelta(days=400 + 366))
    assert (summary.renewed, summary.entered_grace) == (1, 0)

    cleared = (await gql(set_level, {"c": gid("Customer", member), "l": None}))["memberLevelSet"]
    assert cleared["customer"]["membership"]["manualLevel"] is None
    errors = (await gql(set_level, {"c": gid("Customer", member), "l": gid("MemberLevel", 999)}))[
        "memberLevelSet"
    ]["errors"]
    assert errors == [{"field": ["input", "levelId"], "code": "UNKNOWN_LEVEL"}]
    outsider = await create_customer(gql, "13900000007")
    errors = (await gql(set_level, {"c": outsider["id"], "l": None}))["memberLevelSet"]["errors"]
    assert errors == [{"field": ["input", "customerId"], "code": "NOT_A_MEMBER"}]


async def test_points_levels_count_points_earned_in_the_window(gql, db, network):
    await create_level(gql, "fan", 0, "0", metric="POINTS")
    await create_level(gql, "star", 1, "500", metric="POINTS", windowDays=90)
    t0 = utcnow()
    member = await _member(db, "13900000008", pk(network["SA"]["id"]), t0)
    async with db.transaction() as session:
        await loyalty_earning.earn(
            session,
            member,
            300,
            source_type="order",
            source_id="p1",
            reason="order",
            actor=None,
            now=t0,
            policy=POINTS_POLICY,
        )
        await evaluate_level(session, member, t0)
    assert (await _state(db, member))[0] == "fan"
    async with db.transaction() as session:
        await loyalty_earning.earn(
            session,
            member,
            250,
            source_type="order",
            source_id="p2",
            reason="order",
            actor=None,
            now=t0,
            pending=True,  # pending points count as earned
            policy=POINTS_POLICY,
        )
        await evaluate_level(session, member, t0)
    assert (await _state(db, member))[0] == "star"


async def test_points_levels_count_earnings_in_full_and_refunds_against_them(gql, db, network):
    """A refund after the points were spent leaves debt; the next earning settles it first
    and credits less, but the member earned all of it, and the refunded order counts for
    nothing."""
    await create_level(gql, "fan", 0, "0", metric="POINTS")
    await create_level(gql, "star", 1, "500", metric="POINTS", windowDays=90)
    t0 = utcnow()
    member = await _member(db, "13900000009", pk(network["SA"]["id"]), t0)
    earning = dict(reason="order", actor=None, now=t0, pending=False, policy=POINTS_POLICY)
    async with db.transaction() as session:
        await loyalty_earning.earn(
            session, member, 100, source_type="order", source_id="d1", **earning
        )
        await loyalty_spending.redeem(
            session,
            member,
            100,
            source_type="gift",
            source_id="g1",
            reason="gift",
            actor=None,
            now=t0,
        )
        await loyalty_reversals.reverse(
            session, source_type="order", source_id="d1", reason="refund", actor=None, now=t0
        )
    async with db.transaction() as session:
        entry = await loyalty_earning.earn(
            session, member, 450, source_type="order", source_id="d2", **earning
        )
    assert (entry.amount, entry.debt_delta) == (350, -100)  # 100 of it paid the debt
    # Earned in the window: 100 - 100 refunded + 450 = 450 < 500.
    assert (await _state(db, member))[0] == "fan"
    async with db.transaction() as session:
        await loyalty_earning.earn(
            session, member, 50, source_type="order", source_id="d3", **earning
        )
    assert (await _state(db, member))[0] == "star"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"code": "silver"}, [("DUPLICATE_CODE", ["input", "code"])]),
        ({"rank": 0}, [("DUPLICATE_RANK", ["input", "rank"])]),
        ({"threshold": "-1"}, [("INVALID", ["input", "threshold"])]),
        ({"threshold": "0.001"}, [("INVALID", ["input", "threshold"])]),
        (
            {"windowDays": 0, "graceDays": -1},
            [("INVALID", ["input", "windowDays"]), ("INVALID", ["input", "graceDays"])],
        ),
        ({"code": "bad code"}, [("INVALID", ["input", "code"])]),
    ],
)
async def test_level_definitions_are_validated(gql, payload, expected):
    await create_level(gql, "silver", 0, "0")
    document = (
        "mutation($input: MemberLevelCreateInput!) { memberLevelCreate(input: $input) "
        "{ memberLevel { id } errors { field code } } }"
    )
    base = {"code": "gold", "name": "Gold", "rank": 1, "metric": "SPEND", "threshold": "1000"}
    result = (await gql(document, {"input": {**base, **payload}}))["memberLevelCreate"]
    assert result["memberLevel"] is None
    assert [(e["code"], e["field"]) for e in result["errors"]] == expected
    listed = await gql("{ memberLevels { code rank threshold metric windowDays graceDays } }")
    assert listed["memberLevels"] == [
        {
            "code": "silver",
            "rank": 0,
            "threshold": "0.00",
            "metric": "SPEND",
            "windowDays": 365,
            "graceDays": 30,
        }
    ]


async def test_level_rules_can_be_retuned(gql):
    level = await create_level(gql, "gold", 1, "1000")
    result = await gql(
        'mutation($id: ID!) { memberLevelUpdate(input: {id: $id, threshold: "800", '
        "graceDays: 60}) { memberLevel { threshold graceDays windowDays } errors { code } } }",
        {"id": level},
    )
    assert result["memberLevelUpdate"] == {
        "memberLevel": {"threshold": "800.00", "graceDays": 60, "windowDays": 365},
        "errors": [],
    }


@pytest.fixture
async def lapsed_member(db, programme):
    """A gold member whose period ended a day ago, with nothing spent since."""
    t0 = utcnow() - timedelta(days=366)
    member = await _member(db, "13900000009", pk(programme["SA"]["id"]), t0)
    async with db.transaction() as session:
        await record_spend(
            session, member, Decimal("2000"), source_type="order", source_id="old", at=t0, now=t0
        )
    return member


def test_review_levels_command(lapsed_member, settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli.app, ["members", "review-levels", "--batch", "1"])
    assert result.exit_code == 0, result.output
    assert "Reviewed 1 members" in result.output
    assert "1 entered grace" in result.output and "0 downgraded" in result.output
    # Run again much later: grace is over.
    later = (utcnow() + timedelta(days=60)).isoformat()
    result = CliRunner().invoke(cli.app, ["members", "review-levels", "--now", later])
    assert result.exit_code == 0, result.output
    assert "1 downgraded" in result.output
    bad = CliRunner().invoke(cli.app, ["members", "review-levels", "--now", "yesterday"])
    assert bad.exit_code == 2


async def test_concurrent_enrolments_of_one_walk_in_make_one_member(db, network):
    stores = [pk(network[s]["id"]) for s in ("SA", "SA2", "SB")]

    async def enrol(i: int) -> str:
        request = membership.JoinRequest(
            draft=CustomerDraft([(IdentityKind.PHONE, "13900000010")]),
            store_id=stores[i % 3],
        )
        try:
            async with db.transaction() as session:
                await membership.join(session, HQ, request, wiring=CUSTOMERS)
            return "joined"
        except DomainError as error:
            return error.problems[0].code.name

    outcomes = await asyncio.gather(*(enrol(i) for i in range(12)))
    assert sorted(set(outcomes)) == ["ALREADY_MEMBER", "joined"]
    assert outcomes.count("joined") == 1
    async with db.read() as session:
        members = list(await session.scalars(select(Customer)))
    assert len(members) == 1 and members[0].member_since is not None
