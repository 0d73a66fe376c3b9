"""Channel violations: the territory rule, idempotent recording, and ``channelViolations`` /
``ChannelViolation`` for HQ only."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from api.auth.principal import Role
from api.catalog.models import SalesChannel
from api.conflicts import service
from api.conflicts.models import ChannelViolation, ViolationKind
from api.orders.models import Fulfillment
from api.partners.models import PartnerTerritory, Store
from tests.orders.conftest import (
    HQ,
    NOW,
    caller,
    gid,
    integration,
    line,
    member,
    partner_admin,
    place,
    store_staff,
    token_of,
)

COUNTER = {"channel": SalesChannel.STORE_POS, "fulfillment": Fulfillment.IN_STORE}


@pytest.mark.parametrize(
    ("territories", "region", "outside"),
    [
        (["310000"], "310115", False),  # the province covers its districts
        (["310100"], "310115", False),  # ... and so does the city
        (["310115"], "310115", False),
        (["310115"], "310101", True),  # a district covers only itself
        (["310100"], "320105", True),
        (["110000", "440300"], "440305", False),  # any one of them
        ([], "440305", False),  # no protected territory: it sells anywhere
    ],
)
async def test_the_territory_rule(db, shop, territories, region, outside):
    async with db.transaction() as session:
        await session.execute(
            PartnerTerritory.__table__.delete().where(PartnerTerritory.partner_id == shop.partner_a)
        )
        session.add_all(
            PartnerTerritory(partner_id=shop.partner_a, region_code=t) for t in territories
        )
        (await session.get_one(Store, shop.a1)).region_code = region
    async with db.read() as session:
        assert await service.is_outside_territory(session, shop.partner_a, region) is outside
        # The same rule over columns, as a redemption's store lookup uses it.
        by_column = await session.scalar(
            select(service.outside_territory(Store.partner_id, Store.region_code)).where(
                Store.id == shop.a1
            )
        )
        assert bool(by_column) is outside
        hq_store = await session.scalar(
            select(service.outside_territory(Store.partner_id, Store.region_code)).where(
                Store.id == shop.hq
            )
        )
        assert not hq_store


async def test_a_detection_is_recorded_once(db, shop):
    for _ in range(2):
        async with db.transaction() as session:
            await service.record_violation(
                session,
                kind=ViolationKind.PRICE_BELOW_FLOOR,
                source_key="import:tmall:T-1:line:1:price_below_floor",
                detail="sold below the floor",
                now=NOW,
                partner_id=shop.partner_a,
                expected_amount=Decimal("85.00"),
                actual_amount=Decimal("70.00"),
            )
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ChannelViolation)) == 1


@pytest.fixture
async def recorded(db, shop):
    """Partner A under the floor on Tmall (o1), partner A at its Shenzhen store (o2, out of
    territory), partner B's exclusive SKU at its counter (o3)."""
    erp = integration(shop.partner_a)
    o1 = await place(
        db, erp, channel=SalesChannel.TMALL, store_id=shop.a1, lines=[line(price="70.00")]
    )
    o2 = await place(db, partner_admin(shop.partner_a), **COUNTER, store_id=shop.a2)
    o3 = await place(db, store_staff(shop.partner_b, shop.b1), **COUNTER, lines=[line("NET-1")])
    return [r.order for r in (o1, o2, o3)]


LIST = """query($f: ChannelViolationFilter) { channelViolations(filter: $f) {
  totalCount nodes { id kind detail channel regionCode detectedAt
    expectedAmount { amount currency } actualAmount { amount currency }
    partner { code } store { name } order { id } sku { code } coupon { id } }
} }"""


async def test_hq_reads_every_violation_with_filters(app, issue_token, shop, recorded):
    o1, o2, o3 = recorded
    call = caller(app, token_of(issue_token, HQ))

    async def listed(**f) -> list[tuple[str, str]]:
        body = await call(LIST, {"f": f})
        nodes = body["data"]["channelViolations"]["nodes"]
        return [(n["kind"], n["order"]["id"]) for n in nodes]

    every = await listed()
    assert every == [
        ("PRICE_BELOW_FLOOR", gid("Order", o1.id)),
        ("CROSS_REGION_SALE", gid("Order", o2.id)),
        ("EXCLUSIVE_SKU", gid("Order", o3.id)),
    ]
    assert await listed(kinds=["CROSS_REGION_SALE", "EXCLUSIVE_SKU"]) == every[1:]
    assert await listed(partnerId=gid("Partner", shop.partner_b)) == every[2:]
    assert await listed(storeId=gid("Store", shop.a2)) == every[1:2]
    later = (NOW + timedelta(seconds=1)).isoformat()
    assert await listed(to=later) == every and await listed(**{"from": later}) == []
    price = (await call(LIST, {"f": {"kinds": ["PRICE_BELOW_FLOOR"]}}))["data"]
    node = price["channelViolations"]["nodes"][0]
    assert (node["expectedAmount"], node["actualAmount"]) == (
        {"amount": "85.00", "currency": "CNY"},
        {"amount": "70.00", "currency": "CNY"},
    )
    assert (node["channel"], node["partner"], node["store"], node["sku"], node["coupon"]) == (
        "TMALL",
        {"code": "pa"},
        {"name": "Store a1"},
        {"code": "TEA-1"},
        None,
    )
    seen = await call("query($id: ID!) { node(id: $id) { id } }", {"id": node["id"]})
    assert seen["data"]["node"] == {"id": node["id"]}


async def test_no_one_but_hq_reads_violations(app, issue_token, shop, recorded):
    async with app.state.db.read() as session:
        some = await session.scalar(select(ChannelViolation.id).limit(1))
    for principal in (
        partner_admin(shop.partner_a),
        store_staff(shop.partner_a, shop.a2),
        integration(shop.partner_a),
        member(shop.ann),
    ):
        call = caller(app, token_of(issue_token, principal))
        body = await call("{ channelViolations { nodes { id } } }")
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", principal.subject
        node = await call(
            "query($id: ID!) { node(id: $id) { id } }", {"id": gid("ChannelViolation", some)}
        )
        assert node["data"] == {"node": None}
    # Marketing holds no orders:read: refused by the scope.
    marketer = caller(app, issue_token(Role.MARKETER))
    body = await marketer("{ channelViolations { nodes { id } } }")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
