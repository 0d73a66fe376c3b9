"""A location is a STORE (a counter; may offer pickup) or a WAREHOUSE (stock only)."""

from __future__ import annotations

from sqlalchemy import func, select

from api.partners.models import Store
from tests.factories import STORE_CREATE, create_partner


def store_input(code: str, **fields) -> dict:
    return {
        "code": code,
        "name": f"Location {code}",
        "regionCode": "310115",
        "address": "上海市浦东新区世纪大道100号",
        **fields,
    }


async def store_create(gql, **input) -> dict:
    return (
        await gql(
            STORE_CREATE.replace("offersPickup", "offersPickup kind"),
            {"input": input},
        )
    )["storeCreate"]


async def test_a_location_is_a_store_by_default(gql):
    created = await store_create(gql, **store_input("S1", offersPickup=True))
    assert created["errors"] == []
    assert (created["store"]["kind"], created["store"]["offersPickup"]) == ("STORE", True)


async def test_a_warehouse_holds_stock_for_hq_or_a_partner(gql):
    partner = await create_partner(gql, "PA")
    hq = await store_create(gql, **store_input("WH-HQ", kind="WAREHOUSE"))
    own = await store_create(gql, **store_input("WH-PA", kind="WAREHOUSE", partnerId=partner["id"]))
    assert [r["errors"] for r in (hq, own)] == [[], []]
    assert [r["store"]["kind"] for r in (hq, own)] == ["WAREHOUSE", "WAREHOUSE"]
    assert [r["store"]["offersPickup"] for r in (hq, own)] == [False, False]
    data = await gql(
        "query($id: ID!) { store(id: $id) { kind } stores { nodes { code kind } } }",
        {"id": own["store"]["id"]},
    )
    assert data["store"] == {"kind": "WAREHOUSE"}
    assert data["stores"]["nodes"] == [
        {"code": "WH-HQ", "kind": "WAREHOUSE"},
        {"code": "WH-PA", "kind": "WAREHOUSE"},
    ]


async def test_a_warehouse_cannot_offer_pickup(gql, db):
    refused = await store_create(gql, **store_input("WH", kind="WAREHOUSE", offersPickup=True))
    assert refused["store"] is None
    assert refused["errors"] == [
        {
            "field": ["input", "offersPickup"],
            "message": "A warehouse has no counter: it cannot offer pickup.",
            "code": "INVALID",
        }
    ]
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Store)) == 0


async def test_the_pickup_refusal_comes_with_the_other_problems(gql):
    refused = await store_create(
        gql, **store_input("W H", kind="WAREHOUSE", offersPickup=True, regionCode="999999")
    )
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [
        (["input", "code"], "INVALID"),
        (["input", "regionCode"], "INVALID_REGION_CODE"),
        (["input", "offersPickup"], "INVALID"),
    ]
