"""Enrolling a walk-in at the counter (memberJoin by partners, stores and integrations).

Outside HQ a member is enrolled by exactly one phone number and no identity is ever added to
a customer on file: otherwise a clerk could enrol a stranger's phone together with their own,
log in with a code sent to their own phone, and hold the stranger's account (review finding 1).
What a store learns about a phone is only whether it is a member's, the same answer whichever
store recruited them (finding 3).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from api.app import create_app
from api.auth.principal import Principal, Role
from api.cache import InProcessCache
from api.customers import membership
from api.customers.errors import CustomerErrorCode
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.customers.profile import CustomerDraft
from api.errors import DomainError
from tests.customers.conftest import MEMBER_JOIN, add_staff, create_level, gid, join, pk
from tests.factories import create_customer
from tests.wiring import CUSTOMERS

VICTIM_PHONE = "13912340001"
CLERK_PHONE = "13912349999"
ONE_PHONE = (
    "Enrol by one phone number; WeChat and other identities come from the member's own login."
)
PROFILE = """query($id: ID!) { customer(id: $id) {
  id name identities { kind value } consents { purpose granted }
  membership { recruitedStore { code } }
} }"""


async def join_raw(client: Any, **payload: Any) -> dict[str, Any]:
    return (await client(MEMBER_JOIN, {"input": payload}))["memberJoin"]


@pytest.fixture
async def counter(gql, db, as_principal, network) -> dict[str, Any]:
    """Store SA's clerk (a staff user, so they are the implied guide), partner A's admin and
    integration, and a victim HQ has on file (phone and WeChat) who never joined."""
    await create_level(gql, "silver", 0, "0")
    partner_a = pk(network["A"]["id"])
    clerk_id = await add_staff(
        db, "clerk@a.example.com", Role.STORE_STAFF, partner_a, pk(network["SA"]["id"])
    )
    victim = await create_customer(
        gql,
        VICTIM_PHONE,
        identities=[{"kind": "WECHAT_UNIONID", "value": "oVictimUnion"}],
        name="Victim",
        consents=[{"purpose": "MARKETING_MESSAGES", "granted": False, "source": "tmall"}],
    )
    return {
        **network,
        "victim": victim,
        "clerk_id": clerk_id,
        "clerk": as_principal(
            Role.STORE_STAFF,
            partner_id=partner_a,
            store_id=pk(network["SA"]["id"]),
            subject=f"user:{clerk_id}",
        ),
        "partner_admin": as_principal(Role.PARTNER_ADMIN, partner_id=partner_a),
        "integration": as_principal(
            Role.INTEGRATION, partner_id=partner_a, scopes={"members:write", "customers:read"}
        ),
    }


async def test_a_clerk_cannot_take_over_a_customer_by_enrolling_their_phone_with_their_own(
    gql, db, settings, counter
):
    victim_phone = {"kind": "PHONE", "value": VICTIM_PHONE}
    clerk_phone = {"kind": "PHONE", "value": CLERK_PHONE}
    refused = [{"code": "INVALID", "field": ["input", "identities"], "message": ONE_PHONE}]
    for identities in (
        [victim_phone, clerk_phone],
        [clerk_phone, victim_phone],
        [victim_phone, {"kind": "WECHAT_UNIONID", "value": "oClerkUnion"}],
        [{"kind": "WECHAT_OPENID", "value": "wxapp:oClerkOpenid"}],
        [{"kind": "EMAIL", "value": "clerk@example.com"}],
        [],
    ):
        for caller in ("clerk", "partner_admin", "integration"):
            result = await join_raw(
                counter[caller], identities=identities, storeId=counter["SA"]["id"]
            )
            assert result == {"customer": None, "errors": refused}, (caller, identities)

    # The victim is as HQ had them: no identity attached, not a member.
    before = {
        "id": counter["victim"]["id"],
        "name": "Victim",
        "identities": [
            {"kind": "PHONE", "value": VICTIM_PHONE},
            {"kind": "WECHAT_UNIONID", "value": "oVictimUnion"},
        ],
        "consents": [{"purpose": "MARKETING_MESSAGES", "granted": False}],
        "membership": None,
    }
    assert (await gql(PROFILE, {"id": counter["victim"]["id"]}))["customer"] == before
    # The clerk's phone belongs to nobody, so logging in with a code texted to it makes a
    # new customer of the clerk, never the victim.
    texting = create_app(replace(settings, sms_sender="log"), db=db, cache=InProcessCache())
    members = texting.state.oauth.members
    issued = await members.codes.issue(CLERK_PHONE, "mini-program")
    login = await members.phone_login(
        "mini-program", CLERK_PHONE, issued.code, address="203.0.113.7"
    )
    assert login.customer_id != pk(counter["victim"]["id"])
    clerk_customer = await gql(PROFILE, {"id": gid("Customer", login.customer_id)})
    assert clerk_customer["customer"]["identities"] == [{"kind": "PHONE", "value": CLERK_PHONE}]
    assert (await gql(PROFILE, {"id": counter["victim"]["id"]}))["customer"] == before


async def test_an_invalid_phone_at_the_counter_names_the_value(counter):
    result = await join_raw(
        counter["clerk"], identities=[{"kind": "PHONE", "value": "12345"}], name="x"
    )
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("INVALID_IDENTITY", ["input", "identities", "0", "value"])
    ]


async def test_a_customer_on_file_enrolled_at_the_counter_becomes_the_stores_member(gql, counter):
    clerk = counter["clerk"]
    victim_id = counter["victim"]["id"]
    # Before: HQ's customer, not the store's to see.
    assert (await clerk(PROFILE, {"id": victim_id}))["customer"] is None
    result = await join_raw(
        clerk,
        identities=[{"kind": "PHONE", "value": "+86 139-1234-0001"}],
        name="Typed At The Counter",
        consents=[{"purpose": "PROFILING", "granted": True, "source": "store"}],
    )
    assert result["errors"] == []
    assert result["customer"]["id"] == victim_id  # the same person, not a second customer
    membership = result["customer"]["membership"]
    assert membership["recruitedStore"] == {"code": "SA"}
    assert membership["recruitedPartner"] == {"code": "PA"}
    assert membership["recruitedGuideId"] == gid("StaffUser", counter["clerk_id"])
    assert membership["level"] == {"code": "silver"}
    # The store now sees its member; the name on file was kept (the counter only fills
    # blanks), the identities are the ones HQ had, the consent given at the counter is new.
    seen = (await gql(PROFILE, {"id": victim_id}))["customer"]
    assert seen["name"] == "Victim"
    assert seen["identities"] == [
        {"kind": "PHONE", "value": VICTIM_PHONE},
        {"kind": "WECHAT_UNIONID", "value": "oVictimUnion"},
    ]
    assert seen["consents"] == [
        {"purpose": "MARKETING_MESSAGES", "granted": False},
        {"purpose": "PROFILING", "granted": True},
    ]
    assert (await clerk(PROFILE, {"id": victim_id}))["customer"]["id"] == victim_id
    assert (await gql("{ customers { totalCount } }"))["customers"]["totalCount"] == 1


async def test_a_new_phone_at_the_counter_creates_the_customer_with_it(gql, counter):
    result = await join_raw(
        counter["partner_admin"],
        identities=[{"kind": "PHONE", "value": "13912340002"}],
        name="Walk In",
        storeId=counter["SA2"]["id"],
    )
    assert result["errors"] == []
    created = (await gql(PROFILE, {"id": result["customer"]["id"]}))["customer"]
    assert created["name"] == "Walk In"
    assert created["identities"] == [{"kind": "PHONE", "value": "13912340002"}]
    assert created["membership"] == {"recruitedStore": {"code": "SA2"}}


async def test_already_member_answers_the_same_whichever_store_recruited_them(gql, counter):
    """Own store, a sister store of the partner, another partner's store, HQ's store: one
    answer, with nothing written."""
    members = {}
    for index, store in enumerate(("SA", "SA2", "SB", "SH")):
        phone = f"1391234010{index}"
        customer = await create_customer(gql, phone, name=f"member of {store}")
        await join(gql, customerId=customer["id"], storeId=counter[store]["id"])
        members[store] = (phone, customer["id"])
    for caller in ("clerk", "partner_admin", "integration"):
        answers = []
        for phone, _ in members.values():
            answers.append(
                await counter[caller].raw(
                    MEMBER_JOIN,
                    {
                        "input": {
                            "identities": [{"kind": "PHONE", "value": phone}],
                            "name": "Someone Else",
                            "consents": [
                                {"purpose": "PROFILING", "granted": True, "source": "store"}
                            ],
                            "storeId": counter["SA"]["id"],
                        }
                    },
                )
            )
        assert all(answer == answers[0] for answer in answers), caller
        assert "errors" not in answers[0]
        assert answers[0]["data"] == {
            "memberJoin": {
                "customer": None,
                "errors": [
                    {
                        "field": ["input", "identities"],
                        "message": "This customer is a member already.",
                        "code": "ALREADY_MEMBER",
                    }
                ],
            }
        }
    for store, (_, customer_id) in members.items():
        after = (await gql(PROFILE, {"id": customer_id}))["customer"]
        assert after["name"] == f"member of {store}"
        assert after["consents"] == []
        assert after["membership"] == {"recruitedStore": {"code": store}}


async def test_hq_still_enrols_by_several_identities_and_attaches_the_new_ones(gql, counter):
    result = await join_raw(
        gql,
        identities=[
            {"kind": "PHONE", "value": VICTIM_PHONE},
            {"kind": "EMAIL", "value": "victim@example.com"},
        ],
        storeId=counter["SH"]["id"],
    )
    assert result["errors"] == []
    assert result["customer"]["id"] == counter["victim"]["id"]
    kinds = (await gql(PROFILE, {"id": counter["victim"]["id"]}))["customer"]["identities"]
    assert {"kind": "EMAIL", "value": "victim@example.com"} in kinds


async def test_concurrent_counter_enrolments_of_one_phone_across_partners_make_one_member(
    db, network
):
    """Clerks of three stores of two partners enrol the same walk-in at once."""
    clerks = [
        Principal(
            subject=f"user:{900 + i}",
            role=Role.STORE_STAFF,
            partner_id=pk(network[partner]["id"]),
            store_id=pk(network[store]["id"]),
        )
        for i, (partner, store) in enumerate((("A", "SA"), ("A", "SA2"), ("B", "SB")))
    ]

    async def enrol(i: int) -> str:
        request = membership.JoinRequest(
            draft=CustomerDraft([(IdentityKind.PHONE, "13912340200")], name=f"n{i}")
        )
        try:
            async with db.transaction() as session:
                await membership.join(session, clerks[i % 3], request, wiring=CUSTOMERS)
            return "joined"
        except DomainError as error:
            return error.problems[0].code.name

    outcomes = await asyncio.gather(*(enrol(i) for i in range(15)))
    assert sorted(outcomes) == ["ALREADY_MEMBER"] * 14 + ["joined"]
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1
        assert await session.scalar(select(func.count()).select_from(CustomerIdentity)) == 1


async def test_the_service_refuses_a_counter_draft_carrying_more_than_a_phone(db, network):
    clerk = Principal(
        subject="user:7",
        role=Role.STORE_STAFF,
        partner_id=pk(network["A"]["id"]),
        store_id=pk(network["SA"]["id"]),
    )
    draft = CustomerDraft([(IdentityKind.PHONE, "13912340300")], unionid_hint="oHint", tags=["vip"])
    with pytest.raises(DomainError) as refused:
        async with db.transaction() as session:
            await membership.join(
                session, clerk, membership.JoinRequest(draft=draft), wiring=CUSTOMERS
            )
    assert [p.code for p in refused.value.problems] == [CustomerErrorCode.FORBIDDEN]


async def test_master_data_writes_stay_hq_only_even_with_the_scope(gql, as_principal, network):
    """customers:write is HQ's; a non-HQ token that somehow holds it is still refused by the
    service, so identities can never be attached (or probed) outside HQ."""
    target = await create_customer(gql, "13912340400", name="Target")
    integration = as_principal(
        Role.INTEGRATION, partner_id=pk(network["A"]["id"]), scopes={"customers:write"}
    )
    update = await integration(
        "mutation($id: ID!) { customerUpdate(input: {id: $id, identitiesAdd: "
        '[{kind: PHONE, value: "13912349999"}]}) { customer { id } errors { code } } }',
        {"id": target["id"]},
    )
    assert update["customerUpdate"] == {"customer": None, "errors": [{"code": "FORBIDDEN"}]}
    upsert = await integration(
        "mutation { customerUpsert(input: {identities: ["
        '{kind: PHONE, value: "13912340400"}, {kind: PHONE, value: "13912349999"}]}) '
        "{ customer { id } errors { code } } }"
    )
    assert upsert["customerUpsert"] == {"customer": None, "errors": [{"code": "FORBIDDEN"}]}
    other = await create_customer(gql, "13912340401", name="Other")
    merge = await integration(
        "mutation($t: ID!, $s: ID!) { customersMerge(input: {targetId: $t, sourceIds: [$s]}) "
        "{ customer { id } errors { code } } }",
        {"t": target["id"], "s": other["id"]},
    )
    assert [e["code"] for e in merge["customersMerge"]["errors"]] == ["FORBIDDEN"]
    identities = (await gql(PROFILE, {"id": target["id"]}))["customer"]["identities"]
    assert identities == [{"kind": "PHONE", "value": "13912340400"}]
