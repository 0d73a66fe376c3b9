"""Reading stock: levels, the movement log and alerts, each through the caller's scope; the
member's one yes-or-no question; and statement counts that do not grow with the page."""

from __future__ import annotations

import pytest

from api.auth.principal import Role
from api.inventory import movements
from api.partners.models import StoreStatus
from tests.inventory.conftest import gid, move, new_skus, new_store, stock


@pytest.fixture
async def stocked(db, world):
    """TEA at every location (10 on hand, safety 5); a1 and b1 have 7 reserved (alerts
    open), a2 has one resolved alert; CUP at a1 only."""
    for store in (world.a1, world.a2, world.b1, world.hq, world.wh):
        await stock(db, store, world.tea, 10, safety=5)
    await stock(db, world.a1, world.cup, 2)
    for store in (world.a1, world.b1):
        await move(db, movements.reserve, store, {world.tea: 7}, f"order-{store}")
    await move(db, movements.deduct, world.a2, {world.tea: 6}, "sale-1")
    await move(db, movements.restock, world.a2, {world.tea: 6}, "refund-1", source_type="refund")
    return world


def codes(nodes) -> list[tuple]:
    return [(n["store"]["id"], n["sku"]["id"]) for n in nodes]


LEVELS = """query($f: StockLevelFilter) { stockLevels(filter: $f) { totalCount nodes {
  onHand reserved available safetyLevel belowSafety store { id } sku { id code } } } }"""


async def test_hq_sees_every_level_and_filters_them(gql, stocked):
    w = stocked
    data = (await gql(LEVELS))["stockLevels"]
    assert data["totalCount"] == 6
    a1_tea = data["nodes"][0]
    assert a1_tea == {
        "onHand": 10,
        "reserved": 7,
        "available": 3,
        "safetyLevel": 5,
        "belowSafety": True,
        "store": {"id": gid("Store", w.a1)},
        "sku": {"id": gid("Sku", w.tea), "code": "TEA-0"},
    }
    low = (await gql(LEVELS, {"f": {"belowSafety": True}}))["stockLevels"]["nodes"]
    assert codes(low) == [
        (gid("Store", w.a1), gid("Sku", w.tea)),
        (gid("Store", w.b1), gid("Sku", w.tea)),
    ]
    fine = (await gql(LEVELS, {"f": {"belowSafety": False}}))["stockLevels"]["totalCount"]
    assert fine == 4
    at_a1 = (await gql(LEVELS, {"f": {"storeIds": [gid("Store", w.a1)]}}))["stockLevels"]
    assert at_a1["totalCount"] == 2
    cups = (await gql(LEVELS, {"f": {"skuIds": [gid("Sku", w.cup)]}}))["stockLevels"]["nodes"]
    assert codes(cups) == [(gid("Store", w.a1), gid("Sku", w.cup))]


async def test_a_partner_sees_its_own_stock_and_its_staff_their_store(as_principal, stocked):
    w = stocked
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=w.partner_a)
    mine = (await admin(LEVELS))["stockLevels"]
    assert {n["store"]["id"] for n in mine["nodes"]} == {gid("Store", w.a1), gid("Store", w.a2)}
    assert mine["totalCount"] == 3
    # Filters naming another partner's (or HQ's) location find nothing.
    for store in (w.b1, w.wh):
        other = (await admin(LEVELS, {"f": {"storeIds": [gid("Store", store)]}}))["stockLevels"]
        assert other == {"totalCount": 0, "nodes": []}
    clerk = as_principal(Role.STORE_STAFF, partner_id=w.partner_a, store_id=w.a2)
    assert {n["store"]["id"] for n in (await clerk(LEVELS))["stockLevels"]["nodes"]} == {
        gid("Store", w.a2)
    }


MOVEMENTS = """query($f: StockMovementFilter) { stockMovements(filter: $f) { totalCount nodes {
  kind onHandDelta reservedDelta onHandAfter reservedAfter sourceType sourceId
  store { id } sku { code } } } }"""


async def test_the_movement_log_newest_first(gql, as_principal, stocked):
    w = stocked
    at_a2 = (await gql(MOVEMENTS, {"f": {"storeIds": [gid("Store", w.a2)]}}))["stockMovements"]
    assert [(n["kind"], n["onHandDelta"], n["onHandAfter"]) for n in at_a2["nodes"]] == [
        ("RESTOCK", 6, 10),
        ("SALE", -6, 4),
        ("ADJUST", 10, 10),
    ]
    reserves = (await gql(MOVEMENTS, {"f": {"kinds": ["RESERVE"]}}))["stockMovements"]
    assert {n["sourceId"] for n in reserves["nodes"]} == {f"order-{w.a1}", f"order-{w.b1}"}
    cups = (await gql(MOVEMENTS, {"f": {"skuIds": [gid("Sku", w.cup)]}}))["stockMovements"]
    assert cups["totalCount"] == 1
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=w.partner_b)
    theirs = (await admin(MOVEMENTS))["stockMovements"]
    assert {n["store"]["id"] for n in theirs["nodes"]} == {gid("Store", w.b1)}
    assert theirs["totalCount"] == 2
    foreign = await admin(MOVEMENTS, {"f": {"storeIds": [gid("Store", w.a1)]}})
    assert foreign["stockMovements"] == {"totalCount": 0, "nodes": []}


ALERTS = """query($f: StockAlertFilter) { stockAlerts(filter: $f) { totalCount nodes {
  id available safetyLevel open resolvedAt store { id } sku { code } } } }"""


async def test_alerts_open_by_default_resolved_on_request(gql, as_principal, stocked):
    w = stocked
    open_ = (await gql(ALERTS))["stockAlerts"]
    assert [(n["store"]["id"], n["available"], n["open"]) for n in open_["nodes"]] == [
        (gid("Store", w.b1), 3, True),
        (gid("Store", w.a1), 3, True),
    ]
    every = (await gql(ALERTS, {"f": {"includeResolved": True}}))["stockAlerts"]
    assert every["totalCount"] == 3
    resolved = every["nodes"][0]
    assert (resolved["store"]["id"], resolved["open"]) == (gid("Store", w.a2), False)
    assert resolved["resolvedAt"] is not None
    at_b1 = (await gql(ALERTS, {"f": {"storeIds": [gid("Store", w.b1)]}}))["stockAlerts"]
    assert at_b1["totalCount"] == 1
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=w.partner_a)
    mine = (await admin(ALERTS, {"f": {"includeResolved": True}}))["stockAlerts"]
    assert {n["store"]["id"] for n in mine["nodes"]} == {gid("Store", w.a1), gid("Store", w.a2)}
    assert (await admin(ALERTS, {"f": {"storeIds": [gid("Store", w.b1)]}}))["stockAlerts"][
        "totalCount"
    ] == 0


async def test_stock_nodes_stop_at_the_partner_boundary(gql, as_principal, stocked):
    w = stocked
    every = await gql(
        "{ stockLevels { nodes { id store { id } } } "
        "stockMovements(first: 100) { nodes { id store { id } } } "
        "stockAlerts(filter: {includeResolved: true}) { nodes { id store { id } } } }"
    )
    ids = {
        kind: {n["store"]["id"]: n["id"] for n in every[kind]["nodes"]}
        for kind in ("stockLevels", "stockMovements", "stockAlerts")
    }
    theirs = [ids[kind][gid("Store", w.b1)] for kind in ids]
    mine = [ids[kind][gid("Store", w.a1)] for kind in ids]
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=w.partner_a)
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    assert (await admin(query, {"ids": theirs}))["nodes"] == [None, None, None]
    assert (await admin(query, {"ids": mine}))["nodes"] == [{"id": i} for i in mine]
    member = as_principal(Role.MEMBER, customer_id=1)
    assert (await member(query, {"ids": mine}))["nodes"] == [None, None, None]


async def test_members_cannot_read_stock(as_principal, stocked):
    member = as_principal(Role.MEMBER, customer_id=1)
    for field in ("stockLevels", "stockMovements", "stockAlerts"):
        body = await member.raw(f"{{ {field} {{ nodes {{ id }} }} }}")
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # A partner's stock system (stock:write, no partners:read) reads what it writes.
    erp = as_principal(Role.INTEGRATION, partner_id=stocked.partner_a, scopes={"stock:write"})
    assert (await erp("{ stockLevels { totalCount } }"))["stockLevels"]["totalCount"] == 3


async def test_pickup_available_is_a_yes_or_no(as_principal, db, stocked):
    w = stocked
    closed = await new_store(db, w.partner_a, offers_pickup=True, status=StoreStatus.CLOSED)
    await stock(db, closed, w.tea, 10)
    asks = [(w.a1, 3), (w.a1, 4), (w.b1, 1), (w.hq, 5), (w.a2, 1), (w.wh, 1), (closed, 1)]
    fields = " ".join(
        f'q{i}: pickupAvailable(storeId: "{gid("Store", store)}", quantity: {quantity})'
        for i, (store, quantity) in enumerate(asks)
    )
    query = f'{{ sku(code: "TEA-0") {{ {fields} }} }}'
    member = as_principal(Role.MEMBER, customer_id=1)
    assert (await member(query))["sku"] == {
        "q0": True,  # 3 available at a1
        "q1": False,
        "q2": True,  # any partner's pickup store: members choose among them
        "q3": True,
        "q4": None,  # a1's sister store offers no pickup
        "q5": None,  # a warehouse has no counter
        "q6": None,  # closed
    }
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=w.partner_a)
    answers = (await admin(query))["sku"]
    assert (answers["q0"], answers["q2"], answers["q3"]) == (True, None, None)  # own stores only
    never = await new_skus(db, "NEW", 1)
    fresh = await member(
        f'{{ sku(code: "NEW-0") {{ pickupAvailable(storeId: "{gid("Store", w.a1)}") }} }}'
    )
    assert never and fresh["sku"] == {"pickupAvailable": False}
    bad = await member.raw(
        f'{{ sku(code: "TEA-0") {{ pickupAvailable(storeId: "{gid("Store", w.a1)}", '
        "quantity: 0) } }"
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def seed_levels(db, world, skus: int) -> None:
    """``skus`` SKUs counted at a1, each below its safety level (an open alert each)."""
    for sku in await new_skus(db, "BULK", skus):
        await stock(db, world.a1, sku, 5, safety=10)


@pytest.mark.parametrize("skus", [3, 30])
async def test_a_page_of_levels_is_a_fixed_number_of_statements(
    gql, db, world, count_queries, skus
):
    await seed_levels(db, world, skus)
    with count_queries() as counter:
        data = await gql(
            "{ stockLevels(first: 50) { nodes { onHand store { code partner { code } } "
            "sku { code product { code } } } } }"
        )
    assert len(data["stockLevels"]["nodes"]) == skus
    # The page; its stores; their partners; its SKUs; their products.
    assert counter.count == 5, counter.statements


@pytest.mark.parametrize("rows", [3, 30])
@pytest.mark.parametrize("field", ["stockMovements", "stockAlerts"])
async def test_a_page_of_the_log_or_alerts_is_a_fixed_number_of_statements(
    gql, db, world, count_queries, rows, field
):
    await seed_levels(db, world, rows)
    with count_queries() as counter:
        data = await gql(
            f"{{ {field}(first: 50) {{ nodes {{ store {{ code }} sku {{ code }} }} }} }}"
        )
    assert len(data[field]["nodes"]) == rows
    # The page, its stores, its SKUs.
    assert counter.count == 3, counter.statements
