"""Recording one touchpoint (``record_touchpoint``, ``touchpointRecord``): the customer it is
of, who may record what, idempotency by event id, and every refusal."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

from api.auth.principal import Principal, Role
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.errors import DomainError
from api.growth.models import TouchpointStep
from api.growth.recording import CustomerRef
from tests.growth.conftest import HOUR, PHONE, all_touches, record
from tests.orders.conftest import (
    HQ,
    NOW,
    caller,
    gid,
    integration,
    member,
    partner_admin,
    refusal,
    store_staff,
    token_of,
)

GROWTH = frozenset({"growth:write", "analytics:read"})
ANN_PHONE = "13812341234"


def partner(partner_id: int) -> Principal:
    """A partner's system with the growth scopes."""
    return Principal(
        f"client:erp-{partner_id}", Role.INTEGRATION, partner_id=partner_id, scopes=GROWTH
    )


def by_phone(phone: str) -> CustomerRef:
    return CustomerRef(identities=[(IdentityKind.PHONE, phone)])


async def identities_of(db, customer_id: int) -> set[tuple[IdentityKind, str]]:
    async with db.read() as session:
        rows = await session.execute(
            select(CustomerIdentity.kind, CustomerIdentity.value).where(
                CustomerIdentity.customer_id == customer_id
            )
        )
        return {(kind, value) for kind, value in rows}


# --- what is recorded ----------------------------------------------------------------------


async def test_a_qr_scan_is_recorded_for_the_person_its_identities_name(db, shop):
    result = await record(db, HQ, customer=by_phone(ANN_PHONE), store_id=shop.a1)

    assert result.created
    touch = result.touchpoint
    assert (touch.customer_id, touch.step, touch.campaign_id) == (
        shop.ann,
        TouchpointStep.QR_SCAN,
        "card-1",
    )
    assert (touch.recorded_scope, touch.event_id, touch.recorded_by) == ("hq", "e1", "user:1")
    # The store's partner is the partner the touch counts for.
    assert (touch.store_id, touch.partner_id, touch.source_channel) == (
        shop.a1,
        shop.partner_a,
        "tmall",
    )
    assert touch.occurred_at == NOW - HOUR
    assert [t.id for t in await all_touches(db)] == [touch.id]


async def test_identities_nobody_holds_make_a_new_customer(db, shop):
    result = await record(db, HQ)

    async with db.read() as session:
        customer = await session.get_one(Customer, result.touchpoint.customer_id)
    assert customer.id not in (shop.ann, shop.bob, shop.cat)
    assert customer.first_channel == "tmall"
    assert await identities_of(db, customer.id) == {(IdentityKind.PHONE, PHONE)}


async def test_a_customer_is_named_by_id(db, shop):
    result = await record(db, HQ, customer=CustomerRef(id=shop.bob))
    assert result.touchpoint.customer_id == shop.bob


async def test_hq_names_a_partner_without_a_store(db, shop):
    result = await record(db, HQ, partner_id=shop.partner_b)
    assert (result.touchpoint.partner_id, result.touchpoint.store_id) == (shop.partner_b, None)
    assert await refusal(record(db, HQ, event_id="e2", partner_id=99_999)) == [
        ("NOT_FOUND", ("partnerId",))
    ]
    # With a store, the partner must be the store's.
    assert await refusal(
        record(db, HQ, event_id="e3", store_id=shop.a1, partner_id=shop.partner_b)
    ) == [("INVALID", ("partnerId",))]


async def test_a_guide_is_an_active_staff_user_of_the_store(db, shop, guides):
    result = await record(db, HQ, store_id=shop.a1, guide_id=guides.a1)
    assert result.touchpoint.guide_id == guides.a1

    for event, store, guide in (("e2", shop.a1, guides.b1), ("e3", shop.a1, guides.gone)):
        assert await refusal(record(db, HQ, event_id=event, store_id=store, guide_id=guide)) == [
            ("NOT_FOUND", ("guideId",))
        ]
    assert await refusal(record(db, HQ, event_id="e4", guide_id=guides.a1)) == [
        ("REQUIRED", ("storeId",))
    ]


async def test_hq_may_backfill_the_steps_qudao_records_itself(db, shop):
    result = await record(
        db, HQ, step=TouchpointStep.FIRST_ORDER, campaign_id=None, source_channel="store_pos"
    )
    assert result.touchpoint.step is TouchpointStep.FIRST_ORDER


# --- idempotency ---------------------------------------------------------------------------


async def test_a_retry_returns_the_first_touchpoint(db, shop):
    first = await record(db, HQ)
    # The same instant written in Beijing time, the channel in capitals: the same event.
    beijing = (NOW - HOUR).astimezone(timezone(timedelta(hours=8)))
    again = await record(db, HQ, occurred_at=beijing, source_channel=" TMALL ")

    assert (again.created, again.touchpoint.id) == (False, first.touchpoint.id)
    assert len(await all_touches(db)) == 1


async def test_a_retry_by_identities_finds_the_customer_the_first_one_created(db, shop):
    first = await record(db, partner(shop.partner_a))
    again = await record(db, partner(shop.partner_a))
    assert (again.created, again.touchpoint.id) == (False, first.touchpoint.id)


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": NOW - 2 * HOUR},
        {"campaign_id": "card-2"},
        {"step": TouchpointStep.WECOM_ADDED},
        {"source_channel": "jd"},
        {"customer": by_phone(ANN_PHONE)},
        {"customer": by_phone("13900000002")},  # nobody yet: not the first one's customer
    ],
)
async def test_the_same_event_id_for_another_touch_is_refused(db, shop, change):
    await record(db, HQ)
    assert await refusal(record(db, HQ, **change)) == [("EVENT_ID_REUSED", ("eventId",))]
    assert len(await all_touches(db)) == 1
    # Nothing was made for the refused touch's identities either.
    async with db.read() as session:
        assert (
            await session.scalar(
                select(CustomerIdentity.id).where(CustomerIdentity.value == "13900000002")
            )
            is None
        )


async def test_event_ids_are_each_recorders_own(db, shop):
    for principal in (HQ, partner(shop.partner_a), partner(shop.partner_b)):
        assert (await record(db, principal)).created
    assert await record(db, store_staff(shop.partner_a, shop.a1), step=TouchpointStep.WECOM_ADDED)
    scopes = sorted(t.recorded_scope for t in await all_touches(db))
    assert scopes == [
        "hq",
        f"partner:{shop.partner_a}",
        f"partner:{shop.partner_b}",
        f"store:{shop.a1}",
    ]


# --- partners and stores -------------------------------------------------------------------


async def test_a_partner_records_at_its_stores_with_its_guides(db, shop, guides):
    result = await record(db, partner(shop.partner_a), store_id=shop.a2, guide_id=None)
    assert (result.touchpoint.partner_id, result.touchpoint.store_id) == (shop.partner_a, shop.a2)
    result = await record(db, partner(shop.partner_a), event_id="e2")
    assert (result.touchpoint.partner_id, result.touchpoint.store_id) == (shop.partner_a, None)
    result = await record(db, partner(shop.partner_a), event_id="e3", store_id=shop.a1)
    assert result.touchpoint.recorded_by == f"client:erp-{shop.partner_a}"


async def problems(call) -> list[tuple[str, str, tuple[str, ...] | None]]:
    try:
        await call
    except DomainError as error:
        return [(p.code.name, p.message, p.field) for p in error.problems]
    return []


@pytest.mark.parametrize(
    ("foreign", "missing"),
    [
        ({"store_id": "b1"}, {"store_id": 99_999}),
        ({"store_id": "hq"}, {"store_id": 99_999}),
        ({"partner_id": "partner_b"}, {"partner_id": 99_999}),
        ({"store_id": "a1", "guide_id": "guide_b1"}, {"store_id": "a1", "guide_id": 99_999}),
        ({"customer": "bob"}, {"customer": 99_999}),
        ({"customer": "cat"}, {"customer": 99_999}),
    ],
)
async def test_another_partners_things_answer_like_missing_ones(db, shop, guides, foreign, missing):
    """A partner's store, staff, partner id or customer named by another partner: refused
    with exactly the words a missing one gets."""
    named = {
        "b1": shop.b1,
        "hq": shop.hq,
        "a1": shop.a1,
        "partner_b": shop.partner_b,
        "guide_b1": guides.b1,
        "bob": shop.bob,
        "cat": shop.cat,
    }

    def overrides(fields: dict) -> dict:
        values = {k: named.get(v, v) for k, v in fields.items()}
        if "customer" in values:
            values["customer"] = CustomerRef(id=values["customer"])
        return values

    a = partner(shop.partner_a)
    refused = await problems(record(db, a, **overrides(foreign)))
    assert refused and refused[0][0] == "NOT_FOUND"
    assert refused == await problems(record(db, a, **overrides(missing)))
    assert await all_touches(db) == []


@pytest.mark.parametrize(
    "step",
    [TouchpointStep.MEMBER_REGISTERED, TouchpointStep.FIRST_ORDER, TouchpointStep.REPURCHASE],
)
async def test_only_hq_records_the_steps_qudao_records_itself(db, shop, step):
    for principal in (partner(shop.partner_a), store_staff(shop.partner_a, shop.a1)):
        assert await refusal(record(db, principal, step=step)) == [("FORBIDDEN", ("step",))]


async def test_a_partner_names_its_own_members_by_id(db, shop):
    result = await record(db, partner(shop.partner_a), customer=CustomerRef(id=shop.ann))
    assert result.touchpoint.customer_id == shop.ann


async def test_a_partner_never_attaches_an_identity_to_a_customer_on_file(db, shop):
    """ann's phone with a WeCom id nobody holds: the touch is ann's, and the WeCom id stays
    unattached (else a partner could add its own login to anyone's account). HQ attaches."""
    wecom = (IdentityKind.WECOM_EXTERNAL_USERID, "wm_new_1")
    both = CustomerRef(identities=[(IdentityKind.PHONE, ANN_PHONE), wecom])
    result = await record(db, partner(shop.partner_a), customer=both)
    assert result.touchpoint.customer_id == shop.ann
    assert wecom not in await identities_of(db, shop.ann)

    result = await record(db, HQ, customer=both)
    assert result.touchpoint.customer_id == shop.ann
    assert wecom in await identities_of(db, shop.ann)


async def test_identities_of_two_customers_are_refused(db, shop):
    async with db.transaction() as session:
        session.add(
            CustomerIdentity(
                customer_id=shop.bob, kind=IdentityKind.WECOM_EXTERNAL_USERID, value="wm_bob"
            )
        )
    two = CustomerRef(
        identities=[(IdentityKind.PHONE, ANN_PHONE), (IdentityKind.WECOM_EXTERNAL_USERID, "wm_bob")]
    )
    for principal in (HQ, partner(shop.partner_a)):
        assert await refusal(record(db, principal, customer=two)) == [
            ("INVALID", ("customer", "identities", "1", "value"))
        ]


async def test_store_staff_record_at_their_store(db, shop):
    staff = store_staff(shop.partner_a, shop.a1)
    result = await record(db, staff, step=TouchpointStep.WECOM_ADDED)
    assert (result.touchpoint.store_id, result.touchpoint.partner_id) == (shop.a1, shop.partner_a)
    assert await refusal(record(db, staff, event_id="e2", store_id=shop.a2)) == [
        ("NOT_FOUND", ("storeId",))
    ]
    # Staff of HQ's own store record touches that belong to no partner.
    result = await record(db, store_staff(None, shop.hq), event_id="e3")
    assert (result.touchpoint.store_id, result.touchpoint.partner_id) == (shop.hq, None)


async def test_members_and_unscoped_callers_record_nothing(db, shop):
    for principal in (
        member(shop.ann),
        Principal("client:x", Role.INTEGRATION, scopes=GROWTH),
    ):
        assert await refusal(record(db, principal)) == [("FORBIDDEN", None)]


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({"event_id": "  "}, ("INVALID", ("eventId",))),
        ({"event_id": "x" * 101}, ("INVALID", ("eventId",))),
        ({"occurred_at": NOW + timedelta(minutes=10)}, ("INVALID", ("occurredAt",))),
        ({"occurred_at": NOW - timedelta(days=5 * 366)}, ("INVALID", ("occurredAt",))),
        ({"occurred_at": (NOW - HOUR).replace(tzinfo=None)}, ("INVALID", ("occurredAt",))),
        ({"source_channel": "天猫"}, ("INVALID", ("sourceChannel",))),
        ({"source_channel": "x" * 33}, ("INVALID", ("sourceChannel",))),
        ({"campaign_id": None}, ("REQUIRED", ("campaignId",))),
        ({"campaign_id": "c" * 65}, ("INVALID", ("campaignId",))),
        ({"campaign_id": "a\nb"}, ("INVALID", ("campaignId",))),
        ({"customer": CustomerRef()}, ("REQUIRED", ("customer",))),
        (
            {"customer": CustomerRef(id=1, identities=[(IdentityKind.PHONE, PHONE)])},
            ("REQUIRED", ("customer",)),
        ),
        (
            {"customer": by_phone("12345")},
            ("INVALID", ("customer", "identities", "0", "value")),
        ),
        ({"customer": CustomerRef(id=99_999)}, ("NOT_FOUND", ("customer", "id"))),
        ({"store_id": 99_999}, ("NOT_FOUND", ("storeId",))),
    ],
)
async def test_a_touch_of_the_wrong_shape_is_refused(db, shop, overrides, refused):
    assert await refusal(record(db, HQ, **overrides)) == [refused]
    assert await all_touches(db) == []


async def test_a_touch_within_the_clock_skew_is_accepted(db, shop):
    assert (await record(db, HQ, occurred_at=NOW + timedelta(minutes=4))).created


# --- over GraphQL --------------------------------------------------------------------------

RECORD = """mutation($input: TouchpointRecordInput!) { touchpointRecord(input: $input) {
  touchpoint { id step eventId recordedScope sourceChannel campaignId guideId occurredAt
    customer { id } store { id } partner { id } order { id } }
  created errors { code field message }
} }"""


def record_input(**fields) -> dict:
    return {
        "input": {
            "eventId": "qr-1",
            "step": "QR_SCAN",
            "customer": {"identities": [{"kind": "PHONE", "value": ANN_PHONE}]},
            "occurredAt": (NOW - HOUR).isoformat(),
            "sourceChannel": "tmall",
            "campaignId": "card-1",
            **fields,
        }
    }


async def test_touchpoint_record_over_graphql(gql, shop, guides):
    variables = record_input(storeId=gid("Store", shop.a1), guideId=gid("StaffUser", guides.a1))
    payload = (await gql(RECORD, variables))["touchpointRecord"]
    assert payload["errors"] == [] and payload["created"]
    touch = payload["touchpoint"]
    assert touch["step"] == "QR_SCAN" and touch["recordedScope"] == "hq"
    assert touch["customer"] == {"id": gid("Customer", shop.ann)}
    assert touch["store"] == {"id": gid("Store", shop.a1)}
    assert touch["partner"] == {"id": gid("Partner", shop.partner_a)}
    assert touch["guideId"] == gid("StaffUser", guides.a1) and touch["order"] is None

    again = (await gql(RECORD, variables))["touchpointRecord"]
    assert again["touchpoint"]["id"] == touch["id"] and again["created"] is False


async def test_touchpoint_record_errors_name_input_fields(gql, shop):
    payload = (await gql(RECORD, record_input(storeId="bm9wZQ")))["touchpointRecord"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID", ["input", "storeId"])
    ]
    future = (NOW + timedelta(days=1)).isoformat()
    payload = (await gql(RECORD, record_input(occurredAt=future)))["touchpointRecord"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID", ["input", "occurredAt"])
    ]
    naive = (await gql.raw(RECORD, record_input(occurredAt="2026-01-01T10:00:00")))["errors"]
    assert "UTC offset" in naive[0]["message"]


async def test_the_touchpoints_customer_is_null_when_the_partner_may_not_see_them(
    app, shop, issue_token
):
    """A partner records a touch of a new person (nobody's member yet, so not the partner's
    to see) and one of ann (recruited at its store a1): only ann shows."""
    call = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    stranger = record_input(customer={"identities": [{"kind": "PHONE", "value": PHONE}]})
    payload = (await call(RECORD, stranger))["data"]["touchpointRecord"]
    assert payload["errors"] == [] and payload["touchpoint"]["customer"] is None
    payload = (await call(RECORD, record_input(eventId="qr-2")))["data"]["touchpointRecord"]
    assert payload["touchpoint"]["customer"] == {"id": gid("Customer", shop.ann)}


async def test_a_partners_system_needs_the_growth_scope(app, shop, issue_token):
    call = caller(app, token_of(issue_token, integration(shop.partner_a)))
    body = await call(RECORD, record_input())
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_members_may_not_record(app, shop, issue_token):
    call = caller(app, token_of(issue_token, member(shop.ann)))
    body = await call(RECORD, record_input())
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] is None
