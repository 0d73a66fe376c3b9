"""Partner and store master data: what HQ can create and change, and what it is refused."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from api.auth.principal import Principal, Role
from api.partners import service
from api.partners.models import Partner, PartnerType
from tests.factories import PARTNER_CREATE, STORE_CREATE, create_partner, create_store

UPDATE = """
mutation($input: PartnerUpdateInput!) {
  partnerUpdate(input: $input) {
    partner { id name status tier territories parent { code } contact { name phone email }
              contractStartsOn contractEndsOn }
    errors { field message code }
  }
}"""


async def create_errors(gql, **payload) -> list[dict]:
    base = {"code": "NEW", "name": "New partner", "type": "AGENT"}
    result = (await gql(PARTNER_CREATE, {"input": {**base, **payload}}))["partnerCreate"]
    assert result["partner"] is None
    return result["errors"]


async def update(gql, partner_id: str, **changes) -> dict:
    return (await gql(UPDATE, {"input": {"id": partner_id, **changes}}))["partnerUpdate"]


async def partner_count(db) -> int:
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(Partner))


async def test_create_a_second_level_agent_under_a_distributor(gql):
    distributor = await create_partner(
        gql, "SH-DIST", type="DISTRIBUTOR", tier="A", status="ACTIVE", territories=["310000"]
    )
    agent = await create_partner(
        gql,
        "SH-PD",
        name="  浦东代理  ",
        parentId=distributor["id"],
        territories=["310115", "310104", "310115"],
        contact={"name": "王经理", "phone": "13800138000", "email": "wang@example.com"},
        contractStartsOn="2026-01-01",
        contractEndsOn="2027-12-31",
    )
    assert agent["name"] == "浦东代理"
    assert agent["status"] == "PROSPECT"  # the lifecycle starts at prospect by default
    assert agent["territories"] == ["310104", "310115"]
    assert agent["parent"] == {"id": distributor["id"]}
    data = await gql(
        """query($id: ID!) { partner(id: $id) { code contact { name phone email }
           contractStartsOn contractEndsOn parent { code children { nodes { code } } } } }""",
        {"id": agent["id"]},
    )
    assert data["partner"] == {
        "code": "SH-PD",
        "contact": {"name": "王经理", "phone": "13800138000", "email": "wang@example.com"},
        "contractStartsOn": "2026-01-01",
        "contractEndsOn": "2027-12-31",
        "parent": {"code": "SH-DIST", "children": {"nodes": [{"code": "SH-PD"}]}},
    }


async def test_every_invalid_field_is_reported_at_once_and_nothing_is_written(gql, db):
    errors = await create_errors(
        gql,
        code="bad code!",
        name="   ",
        territories=["310115", "999999", "31011"],
        contact={"phone": "call me", "email": "nobody"},
        contractStartsOn="2027-01-01",
        contractEndsOn="2026-01-01",
    )
    assert {(tuple(e["field"]), e["code"]) for e in errors} == {
        (("input", "name"), "REQUIRED"),
        (("input", "code"), "INVALID"),
        (("input", "territories", "1"), "INVALID_REGION_CODE"),
        (("input", "territories", "2"), "INVALID_REGION_CODE"),
        (("input", "contactPhone"), "INVALID"),
        (("input", "contactEmail"), "INVALID"),
        (("input", "contractEndsOn"), "INVALID"),
    }
    assert await partner_count(db) == 0


async def test_duplicate_code(gql):
    await create_partner(gql, "TAKEN")
    errors = await create_errors(gql, code="TAKEN")
    assert errors == [
        {
            "field": ["input", "code"],
            "message": "The code 'TAKEN' is already taken.",
            "code": "DUPLICATE_CODE",
        }
    ]


async def test_concurrent_creates_with_one_code_make_one_partner(gql, db):
    results = await asyncio.gather(
        *(
            gql(PARTNER_CREATE, {"input": {"code": "RACE", "name": f"n{i}", "type": "AGENT"}})
            for i in range(8)
        )
    )
    payloads = [r["partnerCreate"] for r in results]
    assert sum(p["partner"] is not None for p in payloads) == 1
    losers = [p["errors"] for p in payloads if p["partner"] is None]
    assert all(e[0]["code"] == "DUPLICATE_CODE" for e in losers)
    assert await partner_count(db) == 1


async def test_unknown_and_malformed_parent(gql):
    store = await create_store(gql, "S1", None)
    assert (await create_errors(gql, parentId="UGFydG5lcjo5OTk"))[0]["code"] == "UNKNOWN_PARENT"
    malformed = await create_errors(gql, parentId="garbage")
    assert malformed[0]["field"] == ["input", "parentId"]
    assert malformed[0]["code"] == "INVALID"
    wrong_type = await create_errors(gql, parentId=store["id"])
    assert wrong_type[0]["code"] == "INVALID"
    assert "Expected a Partner ID" in wrong_type[0]["message"]


async def test_a_parent_chain_cannot_loop(gql):
    a = await create_partner(gql, "PA", type="DISTRIBUTOR")
    b = await create_partner(gql, "PB", parentId=a["id"])
    c = await create_partner(gql, "PC", parentId=b["id"])
    for parent in (c, a):  # a descendant, or itself
        result = await update(gql, a["id"], parentId=parent["id"])
        assert result["errors"][0]["code"] == "PARENT_CYCLE"
        assert result["errors"][0]["field"] == ["input", "parentId"]
    moved = await update(gql, c["id"], parentId=a["id"])  # re-parenting sideways is fine
    assert moved["errors"] == [] and moved["partner"]["parent"] == {"code": "PA"}


async def test_update_changes_only_the_given_fields_and_null_clears(gql):
    partner = await create_partner(
        gql, "P1", tier="B", territories=["310115"], contact={"name": "Li", "phone": "13800000000"}
    )
    result = await update(gql, partner["id"], name="Renamed", tier=None)
    assert result["errors"] == []
    assert result["partner"]["name"] == "Renamed"
    assert result["partner"]["tier"] is None
    assert result["partner"]["territories"] == ["310115"]
    assert result["partner"]["contact"] == {"name": "Li", "phone": "13800000000", "email": None}
    result = await update(gql, partner["id"], territories=["330102"], contact=None)
    assert result["partner"]["territories"] == ["330102"]
    assert result["partner"]["contact"] == {"name": None, "phone": None, "email": None}


async def test_update_refuses_nulls_for_required_fields(gql):
    partner = await create_partner(gql, "P1")
    result = await update(gql, partner["id"], name=None)
    assert result["errors"][0]["code"] == "REQUIRED"
    assert result["errors"][0]["field"] == ["input", "name"]


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (["ACTIVE", "PROBATION", "ACTIVE", "TERMINATED"], "ACTIVE"),
        (["TERMINATED"], "PROSPECT"),
        ([], "PROBATION"),
    ],
)
async def test_lifecycle_transitions(gql, path, refused):
    partner = await create_partner(gql, "P1")
    for status in path:
        assert (await update(gql, partner["id"], status=status))["errors"] == []
    result = await update(gql, partner["id"], status=refused)
    assert result["errors"][0]["code"] == "INVALID_STATUS_TRANSITION"


async def test_update_unknown_partner(gql):
    result = await update(gql, "UGFydG5lcjo5OTk", name="x")
    assert result == {
        "partner": None,
        "errors": [{"field": ["input", "id"], "message": "No such partner.", "code": "NOT_FOUND"}],
    }


async def test_store_create_validation(gql):
    partner = await create_partner(gql, "P1")
    await create_store(gql, "S1", partner["id"])
    result = (
        await gql(
            STORE_CREATE,
            {
                "input": {
                    "code": "S1",
                    "name": "",
                    "regionCode": "99",
                    "address": "x",
                    "partnerId": "UGFydG5lcjo5OTk",
                }
            },
        )
    )["storeCreate"]
    assert {(e["field"][-1], e["code"]) for e in result["errors"]} == {
        ("code", "DUPLICATE_CODE"),
        ("name", "REQUIRED"),
        ("regionCode", "INVALID_REGION_CODE"),
        ("partnerId", "NOT_FOUND"),
    }


async def test_hq_locations_have_no_partner(gql):
    warehouse = await create_store(gql, "W1", None, name="华东总仓")
    assert warehouse["partner"] is None


async def test_partner_filters(gql):
    dist = await create_partner(
        gql, "D1", type="DISTRIBUTOR", tier="A", status="ACTIVE", territories=["310000"]
    )
    await create_partner(gql, "A1", tier="B", parentId=dist["id"], territories=["310115"])
    await create_partner(gql, "M1", name="天猫旗舰店", type="MARKETPLACE_SHOP", tier="A")
    await create_partner(gql, "Z1", type="DISTRIBUTOR", territories=["330000"])

    async def find(filter_: dict) -> list[str]:
        data = await gql(
            "query($f: PartnerFilter) { partners(filter: $f) { nodes { code } } }", {"f": filter_}
        )
        return [n["code"] for n in data["partners"]["nodes"]]

    assert await find({"types": ["DISTRIBUTOR"]}) == ["D1", "Z1"]
    assert await find({"tiers": ["A"]}) == ["D1", "M1"]
    assert await find({"statuses": ["ACTIVE"]}) == ["D1"]
    assert await find({"regionCode": "310115"}) == ["D1", "A1"]  # province covers district
    assert await find({"regionCode": "330000"}) == ["Z1"]
    assert await find({"parentId": dist["id"]}) == ["A1"]
    assert await find({"search": "天猫"}) == ["M1"]
    assert await find({"search": "z1"}) == ["Z1"]
    assert await find({"types": ["DISTRIBUTOR"], "tiers": ["A"]}) == ["D1"]


async def test_store_filters(gql):
    a = await create_partner(gql, "PA")
    b = await create_partner(gql, "PB")
    await create_store(gql, "S1", a["id"], regionCode="310115", offersPickup=True)
    await create_store(gql, "S2", a["id"], regionCode="310104")
    await create_store(gql, "S3", b["id"], regionCode="330102", offersPickup=True)

    async def find(filter_: dict) -> list[str]:
        data = await gql(
            "query($f: StoreFilter) { stores(filter: $f) { nodes { code } } }", {"f": filter_}
        )
        return [n["code"] for n in data["stores"]["nodes"]]

    assert await find({"partnerIds": [a["id"]]}) == ["S1", "S2"]
    assert await find({"regionCode": "310000"}) == ["S1", "S2"]  # the whole province
    assert await find({"regionCode": "310104"}) == ["S2"]
    assert await find({"offersPickup": True}) == ["S1", "S3"]
    assert await find({"statuses": ["CLOSED"]}) == []


async def test_a_partner_principal_sees_only_its_own_partner_and_stores(gql, db):
    a = await create_partner(gql, "PA")
    b = await create_partner(gql, "PB")
    await create_store(gql, "SA", a["id"])
    await create_store(gql, "SB", b["id"])
    async with db.read() as session:
        pks = list(await session.scalars(select(Partner.id).order_by(Partner.id)))
        principal = Principal(subject="u1", role=Role.PARTNER_ADMIN, partner_id=pks[0])
        seen = await session.scalars(service.partners_query(principal))
        assert [p.code for p in seen] == ["PA"]
        stores = await session.scalars(service.stores_query(principal))
        assert [s.code for s in stores] == ["SA"]
        assert await service.partners_by_id(session, principal, [pks[1]]) == {}
        nobody = Principal(subject="anon", role=None)
        assert list(await session.scalars(service.partners_query(nobody))) == []


async def test_only_hq_manages_master_data(db):
    principal = Principal(subject="u1", role=Role.PARTNER_ADMIN, partner_id=1)
    async with db.transaction() as session:
        with pytest.raises(service.DomainError) as refused:
            await service.create_partner(
                session, principal, service.PartnerDraft("X1", "x", PartnerType.AGENT)
            )
    assert refused.value.problems[0].code is service.PartnerErrorCode.FORBIDDEN
