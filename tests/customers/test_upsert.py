"""customerUpsert: one person across channels, found by any identity, never created twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from api.auth.principal import Role
from api.customers.errors import CustomerErrorCode
from api.customers.identities import IdentityError, normalize_identity
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.upsert import upsert_customer
from api.errors import DomainError
from tests.factories import create_customer

UPSERT = """
mutation($input: CustomerUpsertInput!) {
  customerUpsert(input: $input) {
    created
    customer {
      id name gender birthday firstChannel tags attributes contactPhone
      identities { kind value unionidHint }
      consents { purpose granted source decidedAt }
    }
    errors { field message code }
  }
}"""


async def upsert(gql, **payload):
    return (await gql(UPSERT, {"input": payload}))["customerUpsert"]


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        (IdentityKind.PHONE, "13800138000", "13800138000"),
        (IdentityKind.PHONE, "+86 138-0013-8000", "13800138000"),
        (IdentityKind.PHONE, "0086 13800138000", "13800138000"),
        (IdentityKind.PHONE, "8613800138000", "13800138000"),
        (IdentityKind.PHONE, " 138 0013 8000 ", "13800138000"),
        (IdentityKind.EMAIL, "  Wang.Li@Example.COM ", "wang.li@example.com"),
        (IdentityKind.WECHAT_UNIONID, "oUnion_ABC-123", "oUnion_ABC-123"),
        (IdentityKind.WECHAT_OPENID, "wx1234abcd:oOpen-XYZ", "wx1234abcd:oOpen-XYZ"),
        (IdentityKind.WECOM_EXTERNAL_USERID, "wmExternal123", "wmExternal123"),
        (IdentityKind.MARKETPLACE_BUYER, "Tmall:buyer-778", "tmall:buyer-778"),
        (IdentityKind.MARKETPLACE_BUYER, "PDD: 9912 ", "pdd:9912"),
        (IdentityKind.MARKETPLACE_BUYER, "other:shop#1", "other:shop#1"),
    ],
)
def test_identities_are_normalized(kind, raw, stored):
    assert normalize_identity(kind, raw) == stored


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (IdentityKind.PHONE, "23800138000"),  # not a mobile
        (IdentityKind.PHONE, "1380013800"),  # 10 digits
        (IdentityKind.PHONE, "+1 415 555 0100"),  # not mainland
        (IdentityKind.PHONE, "12800138000"),  # no 12x mobiles
        (IdentityKind.PHONE, "138****8000"),  # a masked number from a marketplace
        (IdentityKind.EMAIL, "not-an-email"),
        (IdentityKind.WECHAT_UNIONID, "has space"),
        (IdentityKind.WECHAT_OPENID, "no-appid"),
        (IdentityKind.WECHAT_OPENID, ":oOpen"),
        (IdentityKind.MARKETPLACE_BUYER, "amazon:123"),
        (IdentityKind.MARKETPLACE_BUYER, "tmall:"),
        (IdentityKind.MARKETPLACE_BUYER, "buyer-without-marketplace"),
        (IdentityKind.WECOM_EXTERNAL_USERID, "   "),
    ],
)
def test_bad_identities_are_refused(kind, raw):
    with pytest.raises(IdentityError):
        normalize_identity(kind, raw)


async def test_upsert_creates_then_finds_by_any_identity_and_attaches_new_ones(gql):
    first = await upsert(
        gql,
        identities=[{"kind": "MARKETPLACE_BUYER", "value": "tmall:buyer-1"}],
        name="王丽",
        firstChannel="marketplace",
        tags=["tmall"],
        attributes={"size": "M", "source": "tmall"},
    )
    assert first["errors"] == [] and first["created"] is True
    customer = first["customer"]
    assert customer["firstChannel"] == "marketplace"

    # The same person later scans a package-insert QR code in the mini-program.
    second = await upsert(
        gql,
        identities=[
            {"kind": "MARKETPLACE_BUYER", "value": "TMALL:buyer-1"},
            {"kind": "PHONE", "value": "+86 139 1234 5678"},
            {"kind": "WECHAT_OPENID", "value": "wxapp1:oOpen1"},
            {"kind": "WECHAT_UNIONID", "value": "oUnion1"},
        ],
        firstChannel="mini_program",
        tags=["insert_qr", "tmall"],
        attributes={"size": "L", "skin": "dry"},
    )
    assert second["errors"] == [] and second["created"] is False
    found = second["customer"]
    assert found["id"] == customer["id"]
    assert found["firstChannel"] == "marketplace"  # the first contact stays
    assert found["name"] == "王丽"  # not given: kept
    assert sorted(found["tags"]) == ["insert_qr", "tmall"]
    assert found["attributes"] == {"size": "L", "source": "tmall", "skin": "dry"}
    assert {(i["kind"], i["value"], i["unionidHint"]) for i in found["identities"]} == {
        ("MARKETPLACE_BUYER", "tmall:buyer-1", None),
        ("PHONE", "13912345678", None),
        ("WECHAT_OPENID", "wxapp1:oOpen1", "oUnion1"),
        ("WECHAT_UNIONID", "oUnion1", None),
    }

    # Any one identity, in any spelling, now finds the same customer.
    for identity in (
        {"kind": "PHONE", "value": "13912345678"},
        {"kind": "WECHAT_UNIONID", "value": "oUnion1"},
        {"kind": "WECHAT_OPENID", "value": "wxapp1:oOpen1"},
    ):
        again = await upsert(gql, identities=[identity])
        assert (again["created"], again["customer"]["id"]) == (False, customer["id"])


async def test_fill_only_never_overwrites_what_is_on_file(gql):
    await create_customer(gql, "13800000001", name="Typed by the member", gender="FEMALE")
    result = await upsert(
        gql,
        identities=[{"kind": "PHONE", "value": "13800000001"}],
        name="tmall_nick_88",
        birthday="1990-04-01",
        fillOnly=True,
    )
    customer = result["customer"]
    assert (customer["name"], customer["gender"], customer["birthday"]) == (
        "Typed by the member",
        "FEMALE",
        "1990-04-01",
    )
    overwritten = await upsert(
        gql, identities=[{"kind": "PHONE", "value": "13800000001"}], name="Corrected"
    )
    assert overwritten["customer"]["name"] == "Corrected"


async def test_consents_keep_the_latest_decision_with_time_and_source(gql):
    now = datetime.now(UTC)
    phone = [{"kind": "PHONE", "value": "13800000002"}]
    await upsert(
        gql,
        identities=phone,
        consents=[
            {
                "purpose": "MARKETING_MESSAGES",
                "granted": True,
                "source": "mini_program",
                "decidedAt": (now - timedelta(days=2)).isoformat(),
            }
        ],
    )
    withdrawn = await upsert(
        gql,
        identities=phone,
        consents=[
            {
                "purpose": "MARKETING_MESSAGES",
                "granted": False,
                "source": "store",
                "decidedAt": (now - timedelta(days=1)).isoformat(),
            },
            {"purpose": "PROFILING", "granted": True, "source": "store"},
        ],
    )
    consents = {c["purpose"]: c for c in withdrawn["customer"]["consents"]}
    assert (
        consents["MARKETING_MESSAGES"]["granted"],
        consents["MARKETING_MESSAGES"]["source"],
    ) == (
        False,
        "store",
    )
    assert consents["PROFILING"]["granted"] is True
    # A decision older than the one on file (a delayed channel feed) does not replace it.
    stale = await upsert(
        gql,
        identities=phone,
        consents=[
            {
                "purpose": "MARKETING_MESSAGES",
                "granted": True,
                "source": "tmall_feed",
                "decidedAt": (now - timedelta(days=5)).isoformat(),
            }
        ],
    )
    consents = {c["purpose"]: c for c in stale["customer"]["consents"]}
    assert consents["MARKETING_MESSAGES"]["granted"] is False


async def test_identities_of_two_customers_conflict_naming_the_field(gql):
    await create_customer(gql, "13800000003")
    await create_customer(gql, identities=[{"kind": "EMAIL", "value": "li@example.com"}])
    result = await upsert(
        gql,
        identities=[
            {"kind": "PHONE", "value": "13800000003"},
            {"kind": "EMAIL", "value": "LI@example.com"},
        ],
        name="should not be written",
    )
    assert result["customer"] is None
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("IDENTITY_CONFLICT", ["input", "identities", "1", "value"])
    ]
    # Nothing was written: both customers are as they were.
    data = await gql("{ customers { nodes { name identities { value } } } }")
    assert [n["name"] for n in data["customers"]["nodes"]] == [None, None]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"identities": []}, [("REQUIRED", ["input", "identities"])]),
        (
            {"identities": [{"kind": "PHONE", "value": "12345"}]},
            [("INVALID_IDENTITY", ["input", "identities", "0", "value"])],
        ),
        (
            {
                "identities": [
                    {"kind": "PHONE", "value": "13800000004"},
                    {"kind": "MARKETPLACE_BUYER", "value": "amazon:1"},
                    {"kind": "EMAIL", "value": "nope"},
                ]
            },
            [
                ("INVALID_IDENTITY", ["input", "identities", "1", "value"]),
                ("INVALID_IDENTITY", ["input", "identities", "2", "value"]),
            ],
        ),
        (
            {"identities": [{"kind": "PHONE", "value": "13800000004"}], "contactPhone": "110"},
            [("INVALID", ["input", "contactPhone"])],
        ),
        (
            {"identities": [{"kind": "PHONE", "value": "13800000004"}], "name": " "},
            [("INVALID", ["input", "name"])],
        ),
        (
            {"identities": [{"kind": "PHONE", "value": "13800000004"}], "tags": ["x" * 65]},
            [("INVALID", ["input", "tags", "0"])],
        ),
        (
            {"identities": [{"kind": "PHONE", "value": "13800000004"}], "attributes": [1, 2]},
            [("INVALID", ["input", "attributes"])],
        ),
        (
            {"identities": [{"kind": "PHONE", "value": "13800000004"}], "birthday": "1800-01-01"},
            [("INVALID", ["input", "birthday"])],
        ),
        (
            {
                "identities": [{"kind": "PHONE", "value": "13800000004"}],
                "consents": [{"purpose": "PROFILING", "granted": True, "source": ""}],
            },
            [("INVALID", ["input", "consents", "0", "source"])],
        ),
        (
            {
                "identities": [{"kind": "PHONE", "value": "13800000004"}],
                "firstChannel": "Bad Channel",
            },
            [("INVALID", ["input", "firstChannel"])],
        ),
    ],
)
async def test_bad_input_is_a_user_error_and_writes_nothing(gql, payload, expected):
    result = await upsert(gql, **payload)
    assert result["customer"] is None
    assert [(e["code"], e["field"]) for e in result["errors"]] == expected
    assert (await gql("{ customers { totalCount } }"))["customers"]["totalCount"] == 0


async def test_only_hq_staff_upsert(as_principal):
    integration = as_principal(Role.INTEGRATION, partner_id=1, scopes={"customers:write"})
    body = await integration.raw(
        UPSERT, {"input": {"identities": [{"kind": "PHONE", "value": "13800000005"}]}}
    )
    assert [e["code"] for e in body["data"]["customerUpsert"]["errors"]] == ["FORBIDDEN"]
    partner = as_principal(Role.PARTNER_ADMIN, partner_id=1)
    body = await partner.raw(
        UPSERT, {"input": {"identities": [{"kind": "PHONE", "value": "13800000005"}]}}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def _upsert_in_own_transaction(db, draft):
    async with db.transaction() as session:
        result = await upsert_customer(session, draft, actor="test")
        return result.customer.id, result.created


async def test_thirty_concurrent_upserts_of_one_new_phone_create_one_customer(db):
    drafts = [
        CustomerDraft(
            identities=[
                (IdentityKind.PHONE, "+86 13700001111" if i % 2 else "13700001111"),
                (IdentityKind.WECHAT_OPENID, f"wxapp:o{i}"),
            ],
            tags=[f"wave{i % 3}"],
        )
        for i in range(30)
    ]
    results = await asyncio.gather(*(_upsert_in_own_transaction(db, d) for d in drafts))
    assert len({customer_id for customer_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1
        identities = await session.scalar(select(func.count()).select_from(CustomerIdentity))
    assert identities == 31  # the phone and every app's openid: none lost


async def test_concurrent_upserts_that_cross_two_customers_conflict_instead_of_mixing(db):
    async with db.transaction() as session:
        await upsert_customer(
            session, CustomerDraft([(IdentityKind.PHONE, "13700002222")]), actor=None
        )
        await upsert_customer(
            session, CustomerDraft([(IdentityKind.EMAIL, "a@example.com")]), actor=None
        )

    async def attempt(i: int):
        draft = CustomerDraft(
            [(IdentityKind.PHONE, "13700002222"), (IdentityKind.EMAIL, "a@example.com")]
            if i % 2
            else [(IdentityKind.PHONE, "13700002222"), (IdentityKind.WECHAT_UNIONID, "u1")]
        )
        try:
            return await _upsert_in_own_transaction(db, draft)
        except DomainError as error:
            return error.problems[0].code

    outcomes = await asyncio.gather(*(attempt(i) for i in range(10)))
    assert outcomes.count(CustomerErrorCode.IDENTITY_CONFLICT) == 5
    assert {o for o in outcomes if isinstance(o, tuple)} == {(1, False)}


UPDATE = """
mutation($input: CustomerUpdateInput!) {
  customerUpdate(input: $input) {
    customer {
      name gender birthday contactPhone tags attributes
      identities { kind value }
      consents { purpose granted source }
    }
    errors { field code }
  }
}"""


async def update(gql, **payload):
    return (await gql(UPDATE, {"input": payload}))["customerUpdate"]


async def test_customer_update_changes_only_what_is_given(gql):
    customer = await create_customer(
        gql,
        "13800000061",
        name="Before",
        gender="MALE",
        tags=["a", "b"],
        attributes={"keep": 1, "drop": 2, "change": 3},
        contactPhone="13800000062",
    )
    result = await update(
        gql,
        id=customer["id"],
        name="After",
        contactPhone=None,  # null clears
        tagsAdd=["c", "a"],
        tagsRemove=["b"],
        attributesSet={"change": "x", "new": [1, 2]},
        attributesUnset=["drop"],
        consents=[{"purpose": "PROFILING", "granted": False, "source": "service_desk"}],
        identitiesAdd=[{"kind": "EMAIL", "value": "After@Example.com"}],
        identitiesRemove=[{"kind": "PHONE", "value": "+86 13800000061"}],
    )
    assert result["errors"] == []
    assert result["customer"] == {
        "name": "After",
        "gender": "MALE",  # not given: kept
        "birthday": None,
        "contactPhone": None,
        "tags": ["a", "c"],
        "attributes": {"keep": 1, "change": "x", "new": [1, 2]},
        "identities": [{"kind": "EMAIL", "value": "after@example.com"}],
        "consents": [{"purpose": "PROFILING", "granted": False, "source": "service_desk"}],
    }


async def test_customer_update_refusals(gql):
    customer = await create_customer(gql, "13800000063")
    other = await create_customer(gql, "13800000064")
    cases = [
        (
            {"identitiesAdd": [{"kind": "PHONE", "value": "13800000064"}]},
            [("IDENTITY_CONFLICT", ["input", "identitiesAdd", "0", "value"])],
        ),
        (
            {"identitiesRemove": [{"kind": "PHONE", "value": "13800000063"}]},
            [("INVALID", ["input", "identitiesRemove"])],  # the last identity stays
        ),
        (
            {"identitiesAdd": [{"kind": "EMAIL", "value": "x"}]},
            [("INVALID_IDENTITY", ["input", "identitiesAdd", "0", "value"])],
        ),
        ({"attributesSet": {"k" * 65: 1}}, [("INVALID", ["input", "attributesSet"])]),
    ]
    for payload, expected in cases:
        result = await update(gql, id=customer["id"], **payload)
        assert [(e["code"], e["field"]) for e in result["errors"]] == expected, payload
    missing = await update(gql, id="Q3VzdG9tZXI6OTk5OQ", name="x")
    assert [(e["code"], e["field"]) for e in missing["errors"]] == [("NOT_FOUND", ["input", "id"])]
    untouched = await gql(
        "query($id: ID!) { customer(id: $id) { identities { value } attributes } }",
        {"id": customer["id"]},
    )
    assert untouched["customer"] == {"identities": [{"value": "13800000063"}], "attributes": {}}
    assert other["identities"] == [{"kind": "PHONE", "value": "13800000064"}]
