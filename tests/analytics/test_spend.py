"""Channel spend (``channelSpendRecord``, ``channelSpends``): what CAC and ROI divide by.

HQ records it, once per idempotency key (a retry returns the first record; the same key for
a different request is refused); a partner reads the spend recorded for it and nothing else.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from api.analytics.spend import MAX_SPEND, SpendDraft, record_channel_spend
from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.catalog.models import SalesChannel
from api.db import Database, utcnow
from api.errors import DomainError
from api.partners import service as partners
from api.partners.models import PartnerType
from tests.orders.conftest import HQ, caller, gid, partner_admin, store_staff, token_of

MARKETER = Principal("user:2", Role.MARKETER, scopes=ROLE_SCOPES[Role.MARKETER])
DRAFT = SpendDraft(
    channel=SalesChannel.MINI_PROGRAM,
    period_start=date(2026, 1, 1),
    period_end=date(2026, 1, 31),
    amount=Decimal("1200.00"),
    idempotency_key="jan-mp",
)


@pytest.fixture
async def two_partners(db: Database) -> tuple[int, int]:
    async with db.transaction() as session:
        ids = []
        for code in ("pa", "pb"):
            draft = partners.PartnerDraft(code=code, name=code.upper(), type=PartnerType.AGENT)
            ids.append((await partners.create_partner(session, HQ, draft)).id)
    return ids[0], ids[1]


async def record(db: Database, draft: SpendDraft, principal: Any = HQ) -> Any:
    async with db.transaction() as session:
        return await record_channel_spend(session, principal, draft, now=utcnow())


async def refused(db: Database, draft: SpendDraft, principal: Any = HQ) -> list[Any]:
    with pytest.raises(DomainError) as raised:
        await record(db, draft, principal)
    return [(p.code.name, p.field) for p in raised.value.problems]


# --- recording -------------------------------------------------------------------------------


async def test_a_retry_returns_the_first_record(db: Database) -> None:
    first = await record(db, DRAFT)
    assert first.created
    assert (first.spend.channel, first.spend.amount, first.spend.recorded_by) == (
        "mini_program",
        Decimal("1200.00"),
        "user:1",
    )
    again = await record(db, DRAFT)
    assert (again.created, again.spend.id) == (False, first.spend.id)
    # Every HQ role records in HQ's one key space: the marketer's retry is the same record.
    by_marketer = await record(db, DRAFT, MARKETER)
    assert (by_marketer.created, by_marketer.spend.id) == (False, first.spend.id)


async def test_the_same_key_for_another_request_is_refused(db: Database) -> None:
    await record(db, DRAFT)
    for changed in (
        replace(DRAFT, amount=Decimal("1200.01")),
        replace(DRAFT, channel=SalesChannel.STORE_POS),
        replace(DRAFT, period_end=date(2026, 1, 30)),
        replace(DRAFT, note="another"),
    ):
        assert await refused(db, changed) == [("IDEMPOTENCY_KEY_REUSED", ("idempotencyKey",))]
    # The same request, written differently (1200 vs 1200.00), is the same request.
    assert not (await record(db, replace(DRAFT, amount=Decimal("1200")))).created


BAD_SPEND: list[tuple[dict[str, Any], list[tuple[str, tuple[str, ...]]]]] = [
    ({"amount": Decimal("0")}, [("AMOUNT_OUT_OF_RANGE", ("amount",))]),
    ({"amount": Decimal("-5.00")}, [("AMOUNT_OUT_OF_RANGE", ("amount",))]),
    ({"amount": Decimal("100000000.01")}, [("AMOUNT_OUT_OF_RANGE", ("amount",))]),
    ({"amount": Decimal("10.005")}, [("INVALID", ("amount",))]),
    ({"amount": Decimal("NaN")}, [("INVALID", ("amount",))]),
    ({"amount": Decimal("Infinity")}, [("INVALID", ("amount",))]),
    # Too large to quantize to fen (the decimal context overflows): out of range, not a crash.
    ({"amount": Decimal("1E+30")}, [("AMOUNT_OUT_OF_RANGE", ("amount",))]),
    ({"amount": Decimal("1E-30")}, [("INVALID", ("amount",))]),
    # Days run from 2000 to 2100: a year after 9999-06-01 is no date at all.
    (
        {"period_start": date(9999, 6, 1), "period_end": date(9999, 6, 30)},
        [("INVALID_RANGE", ("periodStart",)), ("INVALID_RANGE", ("periodEnd",))],
    ),
    ({"period_start": date(1999, 12, 31)}, [("INVALID_RANGE", ("periodStart",))]),
    (
        {"period_start": date(2100, 12, 1), "period_end": date(2101, 1, 1)},
        [("INVALID_RANGE", ("periodEnd",))],
    ),
    ({"period_end": date(2025, 12, 31)}, [("INVALID_RANGE", ("periodEnd",))]),
    # A year is 1 January to 31 December: 1 January 2027 is a day too many.
    ({"period_end": date(2027, 1, 1)}, [("RANGE_TOO_LONG", ("periodEnd",))]),
    ({"idempotency_key": "  "}, [("REQUIRED", ("idempotencyKey",))]),
    ({"idempotency_key": "k" * 101}, [("INVALID", ("idempotencyKey",))]),
    ({"note": "n" * 201}, [("INVALID", ("note",))]),
    ({"currency": "RMB1"}, [("INVALID", ("currency",))]),
    ({"partner_id": 999}, [("NOT_FOUND", ("partnerId",))]),
    (
        {"amount": Decimal("0"), "period_end": date(2025, 1, 1)},
        [("AMOUNT_OUT_OF_RANGE", ("amount",)), ("INVALID_RANGE", ("periodEnd",))],
    ),
]


async def test_bad_spend(db: Database) -> None:
    for changes, expected in BAD_SPEND:
        assert await refused(db, replace(DRAFT, **changes)) == expected, changes


async def test_the_largest_spend_over_a_whole_year(db: Database) -> None:
    # 2028 is a leap year: 1 January to 31 December, 366 days, is one year.
    leap = replace(
        DRAFT,
        period_start=date(2028, 1, 1),
        period_end=date(2028, 12, 31),
        amount=MAX_SPEND,
        idempotency_key="2028",
    )
    assert (await record(db, leap)).created
    # From 29 February, a year runs to 28 February.
    from_leap_day = replace(
        DRAFT, period_start=date(2028, 2, 29), period_end=date(2029, 2, 28), idempotency_key="x"
    )
    assert (await record(db, from_leap_day)).created
    too_long = replace(from_leap_day, period_end=date(2029, 3, 1), idempotency_key="y")
    assert await refused(db, too_long) == [("RANGE_TOO_LONG", ("periodEnd",))]
    # The first and the last day there may be spend on.
    for start, end in (
        (date(2000, 1, 1), date(2000, 1, 31)),
        (date(2100, 12, 1), date(2100, 12, 31)),
    ):
        edge = replace(DRAFT, period_start=start, period_end=end, idempotency_key=str(start))
        assert (await record(db, edge)).created


async def test_only_hq_records_spend(db: Database, two_partners: tuple[int, int]) -> None:
    admin = partner_admin(two_partners[0])
    assert await refused(db, DRAFT, replace(admin, scopes=admin.scopes | {"spend:write"})) == [
        ("FORBIDDEN", None)
    ]


async def test_concurrent_retries_make_one_record(db: Database) -> None:
    results = await asyncio.gather(*(record(db, DRAFT) for _ in range(4)))
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert len({r.spend.id for r in results}) == 1


async def test_concurrent_different_requests_with_one_key(db: Database) -> None:
    other = replace(DRAFT, amount=Decimal("99.00"))
    outcomes = await asyncio.gather(record(db, DRAFT), record(db, other), return_exceptions=True)
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(created) == 1 and created[0].created
    assert [p.code.name for p in failed[0].problems] == ["IDEMPOTENCY_KEY_REUSED"]


# --- over GraphQL ----------------------------------------------------------------------------

RECORD = """
mutation($input: ChannelSpendRecordInput!) {
  channelSpendRecord(input: $input) {
    spend { id channel periodStart periodEnd amount { amount currency } note recordedBy
            partner { id name } }
    created
    errors { field message code }
  }
}"""

SPENDS = """
query($filter: ChannelSpendFilter, $first: Int) {
  channelSpends(filter: $filter, first: $first) {
    totalCount
    nodes { id channel amount { amount } partner { name } }
  }
}"""

NODE = "query($id: ID!) { node(id: $id) { ... on ChannelSpend { id amount { amount } } } }"


def spend_input(**fields: Any) -> dict[str, Any]:
    return {
        "channel": "MINI_PROGRAM",
        "periodStart": "2026-01-01",
        "periodEnd": "2026-01-31",
        "amount": "1200.00",
        "idempotencyKey": "jan-mp",
    } | fields


async def test_record_over_graphql(gql: Any, two_partners: tuple[int, int]) -> None:
    a = gid("Partner", two_partners[0])
    payload = (await gql(RECORD, {"input": spend_input(partnerId=a, note=" WeCom ads ")}))[
        "channelSpendRecord"
    ]
    assert payload["errors"] == [] and payload["created"]
    assert payload["spend"]["channel"] == "MINI_PROGRAM"
    assert payload["spend"]["amount"] == {"amount": "1200.00", "currency": "CNY"}
    assert payload["spend"]["note"] == "WeCom ads"
    assert payload["spend"]["partner"] == {"id": a, "name": "PA"}
    assert payload["spend"]["recordedBy"] == "user:1"
    again = (await gql(RECORD, {"input": spend_input(partnerId=a, note="WeCom ads")}))[
        "channelSpendRecord"
    ]
    assert (again["created"], again["spend"]["id"]) == (False, payload["spend"]["id"])


BAD_INPUT: list[tuple[dict[str, Any], list[tuple[list[str], str]]]] = [
    ({"amount": "0"}, [(["input", "amount"], "AMOUNT_OUT_OF_RANGE")]),
    ({"periodEnd": "2025-12-01"}, [(["input", "periodEnd"], "INVALID_RANGE")]),
    ({"partnerId": "bm9wZQ"}, [(["input", "partnerId"], "INVALID")]),
    ({"partnerId": gid("Store", 1)}, [(["input", "partnerId"], "INVALID")]),
    ({"partnerId": gid("Partner", 999)}, [(["input", "partnerId"], "NOT_FOUND")]),
    # Once internal errors: a decimal too large to quantize, and a year after 9999-06-01.
    ({"amount": "1E+30"}, [(["input", "amount"], "AMOUNT_OUT_OF_RANGE")]),
    ({"amount": "NaN"}, [(["input", "amount"], "INVALID")]),
    ({"amount": "-Infinity"}, [(["input", "amount"], "INVALID")]),
    (
        {"periodStart": "9999-06-01", "periodEnd": "9999-06-30"},
        [(["input", "periodStart"], "INVALID_RANGE"), (["input", "periodEnd"], "INVALID_RANGE")],
    ),
    ({"periodStart": "9999-06-01"}, [(["input", "periodStart"], "INVALID_RANGE")]),
]


async def test_bad_input_over_graphql(gql: Any, db: Database) -> None:
    for fields, expected in BAD_INPUT:
        payload = (await gql(RECORD, {"input": spend_input(**fields)}))["channelSpendRecord"]
        assert [(e["field"], e["code"]) for e in payload["errors"]] == expected, fields
        assert payload["spend"] is None


async def test_partners_and_stores_cannot_record(
    app: Any, issue_token: Any, two_partners: tuple[int, int]
) -> None:
    for principal in (partner_admin(two_partners[0]), store_staff(two_partners[0], 1)):
        call = caller(app, token_of(issue_token, principal))
        body = await call(RECORD, {"input": spend_input()})
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Even a partner-level token holding spend:write (no real one can) is refused, before
    # its input is looked at.
    admin = partner_admin(two_partners[0])
    with_scope = caller(
        app, token_of(issue_token, replace(admin, scopes=admin.scopes | {"spend:write"}))
    )
    payload = (await with_scope(RECORD, {"input": spend_input(partnerId="bm9wZQ")}))["data"][
        "channelSpendRecord"
    ]
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(None, "FORBIDDEN")]


async def test_partners_read_their_own_spend(
    app: Any, gql: Any, issue_token: Any, db: Database, two_partners: tuple[int, int]
) -> None:
    a, b = (gid("Partner", p) for p in two_partners)
    ids = {}
    for key, partner, channel in (
        ("a-mp", a, "MINI_PROGRAM"),
        ("b-pos", b, "STORE_POS"),
        ("hq-mp", None, "MINI_PROGRAM"),
    ):
        payload = (
            await gql(
                RECORD,
                {"input": spend_input(idempotencyKey=key, partnerId=partner, channel=channel)},
            )
        )["channelSpendRecord"]
        ids[key] = payload["spend"]["id"]
    everything = (await gql(SPENDS, {}))["channelSpends"]
    assert everything["totalCount"] == 3
    assert [n["id"] for n in everything["nodes"]] == [ids["a-mp"], ids["b-pos"], ids["hq-mp"]]
    mp = (await gql(SPENDS, {"filter": {"channels": ["MINI_PROGRAM"]}}))["channelSpends"]
    assert [n["id"] for n in mp["nodes"]] == [ids["a-mp"], ids["hq-mp"]]
    february = (await gql(SPENDS, {"filter": {"from": "2026-02-01"}}))["channelSpends"]
    assert february["nodes"] == []  # every record ends on 31 January

    as_a = caller(app, token_of(issue_token, partner_admin(two_partners[0])))
    mine = (await as_a(SPENDS, {}))["data"]["channelSpends"]
    assert (mine["totalCount"], [n["id"] for n in mine["nodes"]]) == (1, [ids["a-mp"]])
    # B's id as a filter finds nothing, like an id that does not exist.
    theirs = (await as_a(SPENDS, {"filter": {"partnerId": b}}))["data"]["channelSpends"]
    assert theirs == {"totalCount": 0, "nodes": []}
    # node: its own record; B's and HQ's answer null, as missing ones do.
    assert (await as_a(NODE, {"id": ids["a-mp"]}))["data"]["node"]["id"] == ids["a-mp"]
    for foreign in (ids["b-pos"], ids["hq-mp"], gid("ChannelSpend", 999)):
        assert (await as_a(NODE, {"id": foreign}))["data"]["node"] is None
    # Store staff (no analytics:read) read no spend, even their own partner's.
    staff = caller(app, token_of(issue_token, store_staff(two_partners[0], 1)))
    assert (await staff(NODE, {"id": ids["a-mp"]}))["data"]["node"] is None
    refused = await staff(SPENDS, {})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_spend_list_statements(
    gql: Any, db: Database, count_queries: Any, two_partners: tuple[int, int]
) -> None:
    for n in range(12):
        partner = gid("Partner", two_partners[n % 2])
        await gql(RECORD, {"input": spend_input(idempotencyKey=f"k{n}", partnerId=partner)})
    with count_queries() as few:
        small = await gql(SPENDS, {"first": 2})
    with count_queries() as many:
        large = await gql(SPENDS, {"first": 12})
    assert (len(small["channelSpends"]["nodes"]), len(large["channelSpends"]["nodes"])) == (2, 12)
    # The page, its partners (one batch), the count.
    assert few.count == many.count == 3
