"""``stockAdjust`` through the API: counts and corrections, who may adjust where, every
refusal with its code and field, and idempotency keys scoped to their owner."""

from __future__ import annotations

import pytest

from api.auth.principal import Role
from api.inventory import adjusting
from api.inventory import movements as stock_moves
from tests.inventory.conftest import alerts, gid, level, move, movements, stock

ADJUST = """
mutation($input: StockAdjustInput!) {
  stockAdjust(input: $input) {
    stockLevel { id onHand reserved available safetyLevel belowSafety store { id } sku { id } }
    movement { id kind onHandDelta reservedDelta onHandAfter reservedAfter safetyLevelSet
               reason sourceType sourceId actor }
    replayed
    errors { field message code }
  }
}"""


def adjust_input(world, **overrides) -> dict:
    values = {
        "storeId": gid("Store", world.a1),
        "skuId": gid("Sku", world.tea),
        "mode": "SET",
        "quantity": 10,
        "reason": "盘点",
        "idempotencyKey": "count-1",
    }
    values.update(overrides)
    return values


async def adjust(client, world, **overrides) -> dict:
    return (await client(ADJUST, {"input": adjust_input(world, **overrides)}))["stockAdjust"]


def problems(payload) -> list[tuple]:
    return [(tuple(e["field"] or ()), e["code"]) for e in payload["errors"]]


async def test_hq_counts_and_corrects_stock_anywhere(gql, world, db):
    counted = await adjust(gql, world, storeId=gid("Store", world.wh), safetyLevel=4)
    assert counted["errors"] == [] and counted["replayed"] is False
    assert counted["stockLevel"] == {
        "id": counted["stockLevel"]["id"],
        "onHand": 10,
        "reserved": 0,
        "available": 10,
        "safetyLevel": 4,
        "belowSafety": False,
        "store": {"id": gid("Store", world.wh)},
        "sku": {"id": gid("Sku", world.tea)},
    }
    assert counted["movement"] == {
        "id": counted["movement"]["id"],
        "kind": "ADJUST",
        "onHandDelta": 10,
        "reservedDelta": 0,
        "onHandAfter": 10,
        "reservedAfter": 0,
        "safetyLevelSet": 4,
        "reason": "盘点",
        "sourceType": "adjust.set",
        "sourceId": "hq:count-1",
        "actor": "user:1",
    }
    corrected = await adjust(
        gql,
        world,
        storeId=gid("Store", world.wh),
        mode="DELTA",
        quantity=-7,
        reason=" 破损 ",
        idempotencyKey="breakage-1",
    )
    assert (corrected["stockLevel"]["onHand"], corrected["stockLevel"]["belowSafety"]) == (3, True)
    assert corrected["movement"]["onHandDelta"] == -7
    assert corrected["movement"]["reason"] == "破损"
    assert corrected["movement"]["sourceType"] == "adjust.delta"
    (alert,) = await alerts(db)
    assert (alert.available, alert.safety_level) == (3, 4)


async def test_safety_level_alone(gql, world, db):
    await adjust(gql, world, quantity=3)
    only_safety = await adjust(
        gql, world, mode="DELTA", quantity=0, safetyLevel=5, idempotencyKey="safety-1"
    )
    assert only_safety["errors"] == []
    assert only_safety["movement"]["onHandDelta"] == 0
    assert await level(db, world.a1, world.tea) == (3, 0, 5)
    assert [a.available for a in await alerts(db)] == [3]
    lowered = await adjust(
        gql, world, mode="DELTA", quantity=0, safetyLevel=0, idempotencyKey="safety-2"
    )
    assert lowered["stockLevel"]["belowSafety"] is False
    assert [a.resolved_at is not None for a in await alerts(db)] == [True]


async def test_partners_and_their_staff_adjust_their_own_locations(as_principal, world, db):
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=world.partner_a)
    for store in (world.a1, world.a2):
        done = await adjust(admin, world, storeId=gid("Store", store), idempotencyKey=f"k{store}")
        assert done["errors"] == []
        assert done["movement"]["sourceId"] == f"partner:{world.partner_a}:k{store}"
    clerk = as_principal(Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.a1)
    done = await adjust(clerk, world, mode="DELTA", quantity=2, idempotencyKey="clerk-1")
    assert done["stockLevel"]["onHand"] == 12
    erp = as_principal(Role.INTEGRATION, partner_id=world.partner_a, scopes={"stock:write"})
    done = await adjust(erp, world, quantity=20, idempotencyKey="erp-1")
    assert done["stockLevel"]["onHand"] == 20
    assert await level(db, world.a1, world.tea) == (20, 0, 0)


async def test_another_partners_location_answers_like_a_missing_one(as_principal, world, db):
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=world.partner_a)
    foreign = await adjust(admin, world, storeId=gid("Store", world.b1))
    missing = await adjust(admin, world, storeId=gid("Store", 987654))
    hq_run = await adjust(admin, world, storeId=gid("Store", world.wh))
    assert foreign == missing == hq_run
    assert problems(foreign) == [(("input", "storeId"), "NOT_FOUND")]
    clerk = as_principal(Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.a1)
    sibling = await adjust(clerk, world, storeId=gid("Store", world.a2))
    assert sibling == missing
    assert [await level(db, s, world.tea) for s in (world.b1, world.wh, world.a2)] == [None] * 3


async def test_unknown_and_malformed_ids(gql, world):
    assert problems(await adjust(gql, world, skuId=gid("Sku", 999))) == [
        (("input", "skuId"), "NOT_FOUND")
    ]
    assert problems(await adjust(gql, world, storeId=gid("Store", 999), skuId=gid("Sku", 999))) == [
        (("input", "storeId"), "NOT_FOUND"),
        (("input", "skuId"), "NOT_FOUND"),
    ]
    assert problems(await adjust(gql, world, storeId="nope")) == [(("input", "storeId"), "INVALID")]
    assert problems(await adjust(gql, world, skuId=gid("Store", world.a1))) == [
        (("input", "skuId"), "INVALID")
    ]


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"quantity": -1}, "quantity", "INVALID"),
        ({"quantity": adjusting.MAX_QUANTITY + 1}, "quantity", "INVALID"),
        ({"mode": "DELTA", "quantity": 0}, "quantity", "INVALID"),
        ({"mode": "DELTA", "quantity": -adjusting.MAX_QUANTITY - 1}, "quantity", "INVALID"),
        ({"safetyLevel": -1}, "safetyLevel", "INVALID"),
        ({"reason": "  "}, "reason", "REQUIRED"),
        ({"reason": "r" * 201}, "reason", "INVALID"),
        ({"idempotencyKey": ""}, "idempotencyKey", "INVALID"),
        ({"idempotencyKey": "has space"}, "idempotencyKey", "INVALID"),
        ({"idempotencyKey": "键"}, "idempotencyKey", "INVALID"),
        ({"idempotencyKey": "k" * 101}, "idempotencyKey", "INVALID"),
    ],
)
async def test_bad_input_is_refused_with_its_field(gql, world, db, overrides, field, code):
    assert problems(await adjust(gql, world, **overrides)) == [(("input", field), code)]
    assert await level(db, world.a1, world.tea) is None


async def test_on_hand_never_goes_below_what_is_reserved(gql, world, db):
    await stock(db, world.a1, world.tea, 10)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 3}, "1")
    refused = await adjust(gql, world, quantity=2, idempotencyKey="low")
    assert problems(refused) == [(("input", "quantity"), "BELOW_RESERVED")]
    assert "3 units reserved" in refused["errors"][0]["message"]
    refused = await adjust(gql, world, mode="DELTA", quantity=-8, idempotencyKey="low2")
    assert problems(refused) == [(("input", "quantity"), "BELOW_RESERVED")]
    exact = await adjust(gql, world, quantity=3, idempotencyKey="exact")
    assert (exact["stockLevel"]["onHand"], exact["stockLevel"]["available"]) == (3, 0)
    nothing = await adjust(
        gql, world, storeId=gid("Store", world.a2), mode="DELTA", quantity=-1, idempotencyKey="n"
    )
    assert problems(nothing) == [(("input", "quantity"), "BELOW_RESERVED")]
    over = await adjust(
        gql, world, mode="DELTA", quantity=adjusting.MAX_QUANTITY, idempotencyKey="over"
    )
    assert problems(over) == [(("input", "quantity"), "INVALID")]
    assert await level(db, world.a1, world.tea) == (3, 3, 0)
    # The refused correction rolled back the level it had created to lock.
    assert await level(db, world.a2, world.tea) is None


async def test_a_retry_returns_the_first_adjustment(gql, world, db):
    first = await adjust(gql, world, quantity=10, idempotencyKey="same")
    await move(db, stock_moves.reserve, world.a1, {world.tea: 4}, "1")
    again = await adjust(gql, world, quantity=10, idempotencyKey="same")
    assert again["errors"] == [] and again["replayed"] is True
    assert again["movement"] == first["movement"]
    assert (again["stockLevel"]["onHand"], again["stockLevel"]["reserved"]) == (10, 4)
    assert len(await movements(db, world.a1, world.tea)) == 2  # the adjustment, the reserve


@pytest.mark.parametrize(
    "other",
    [
        lambda w: {"quantity": 11},
        lambda w: {"mode": "DELTA"},  # +10 from 0 lands where the count did; still another
        lambda w: {"reason": "another count"},
        lambda w: {"skuId": gid("Sku", w.cup)},
        lambda w: {"storeId": gid("Store", w.a2)},
    ],
)
async def test_the_same_key_for_another_adjustment_is_refused(gql, world, db, other):
    await adjust(gql, world, quantity=10, idempotencyKey="same")
    reused = await adjust(gql, world, idempotencyKey="same", **other(world))
    assert problems(reused) == [(("input", "idempotencyKey"), "IDEMPOTENCY_KEY_REUSED")]
    assert len(await movements(db, world.a1, world.tea)) == 1
    assert await level(db, world.a2, world.tea) is None


async def test_keys_are_per_partner_and_hq(as_principal, gql, world, db):
    a = as_principal(Role.PARTNER_ADMIN, partner_id=world.partner_a)
    b = as_principal(Role.PARTNER_ADMIN, partner_id=world.partner_b)
    done_a = await adjust(a, world, quantity=5, idempotencyKey="k")
    done_b = await adjust(b, world, storeId=gid("Store", world.b1), quantity=7, idempotencyKey="k")
    done_hq = await adjust(gql, world, storeId=gid("Store", world.wh), idempotencyKey="k")
    assert [p["errors"] for p in (done_a, done_b, done_hq)] == [[], [], []]
    assert [p["replayed"] for p in (done_a, done_b, done_hq)] == [False, False, False]
    assert [await level(db, s, world.tea) for s in (world.a1, world.b1, world.wh)] == [
        (5, 0, 0),
        (7, 0, 0),
        (10, 0, 0),
    ]
    # B retrying its key learns nothing of A's adjustment: it gets its own back.
    again_b = await adjust(b, world, storeId=gid("Store", world.b1), quantity=7, idempotencyKey="k")
    assert again_b["movement"] == done_b["movement"]


async def test_callers_without_stock_write_are_refused(as_principal, world):
    for role, claims in (
        (Role.MEMBER, {"customer_id": 1}),
        (Role.MARKETER, {}),
        (Role.INTEGRATION, {"partner_id": world.partner_a, "scopes": {"orders:write"}}),
    ):
        body = await as_principal(role, **claims).raw(ADJUST, {"input": adjust_input(world)})
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert body["data"] is None


async def test_a_retry_naming_another_safety_level_is_another_request(gql, world, db):
    first = await adjust(gql, world, quantity=10, safetyLevel=3, idempotencyKey="same")
    again = await adjust(gql, world, quantity=10, safetyLevel=3, idempotencyKey="same")
    assert again["replayed"] is True and again["movement"] == first["movement"]
    assert first["movement"]["safetyLevelSet"] == 3
    for other in (8, None):
        reused = await adjust(gql, world, quantity=10, safetyLevel=other, idempotencyKey="same")
        assert [e["code"] for e in reused["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await level(db, world.a1, world.tea) == (10, 0, 3)
