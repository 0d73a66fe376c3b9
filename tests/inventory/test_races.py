"""Races on both engines, each change its own transaction: the outcomes are exact."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from api.inventory import movements as stock_moves
from api.inventory.models import MovementKind
from api.inventory.movements import InsufficientStock
from tests.inventory.conftest import alerts, gid, level, move, movements, stock


async def attempt(db, operation, store_id: int, sku_id: int, source_id: str) -> str:
    try:
        await move(db, operation, store_id, {sku_id: 1}, source_id)
    except InsufficientStock:
        return "short"
    return "ok"


async def test_300_reservations_of_100_units_reserve_exactly_100(db, world, published):
    await stock(db, world.a1, world.tea, 100, safety=10)
    outcomes = await asyncio.gather(
        *(attempt(db, stock_moves.reserve, world.a1, world.tea, f"o{i}") for i in range(300))
    )
    assert Counter(outcomes) == {"ok": 100, "short": 200}
    assert await level(db, world.a1, world.tea) == (100, 100, 10)
    reserves = [
        m for m in await movements(db, world.a1, world.tea) if m.kind is MovementKind.RESERVE
    ]
    assert len(reserves) == 100
    # Each movement saw the level its own UPDATE left: 1, 2, ..., 100 reserved.
    assert sorted(m.reserved_after for m in reserves) == list(range(1, 101))
    # Crossing below the safety level of 10 happened once: one alert, one event.
    (alert,) = await alerts(db)
    assert (alert.available, alert.safety_level, alert.resolved_at) == (9, 10, None)
    raised = [json.loads(message) for _, message in published]
    assert [e["alertId"] for e in raised] == [alert.id]


async def test_sales_and_reservations_racing_never_oversell(db, world):
    await stock(db, world.a1, world.tea, 100)
    tasks = [
        attempt(
            db, stock_moves.deduct if i % 2 else stock_moves.reserve, world.a1, world.tea, f"o{i}"
        )
        for i in range(300)
    ]
    outcomes = await asyncio.gather(*tasks)
    assert Counter(outcomes) == {"ok": 100, "short": 200}
    sold = sum(1 for i, o in enumerate(outcomes) if o == "ok" and i % 2)
    held = 100 - sold
    assert await level(db, world.a1, world.tea) == (100 - sold, held, 0)


async def test_20_retries_of_one_adjustment_at_once_adjust_once(gql, db, world):
    document = """mutation($input: StockAdjustInput!) { stockAdjust(input: $input) {
      movement { id } stockLevel { onHand } replayed errors { code } } }"""
    variables = {
        "input": {
            "storeId": gid("Store", world.a1),
            "skuId": gid("Sku", world.tea),
            "mode": "DELTA",
            "quantity": 5,
            "reason": "delivery",
            "idempotencyKey": "delivery-42",
        }
    }
    results = [
        r["stockAdjust"]
        for r in await asyncio.gather(*(gql(document, variables) for _ in range(20)))
    ]
    assert {tuple(r["errors"]) for r in results} == {()}
    assert len({r["movement"]["id"] for r in results}) == 1
    assert Counter(r["replayed"] for r in results) == {False: 1, True: 19}
    assert await level(db, world.a1, world.tea) == (5, 0, 0)
    assert len(await movements(db, world.a1, world.tea)) == 1


async def test_50_corrections_at_once_lose_none(gql, db, world):
    document = """mutation($input: StockAdjustInput!) { stockAdjust(input: $input) {
      errors { code } } }"""
    results = await asyncio.gather(
        *(
            gql(
                document,
                {
                    "input": {
                        "storeId": gid("Store", world.a1),
                        "skuId": gid("Sku", world.tea),
                        "mode": "DELTA",
                        "quantity": 1,
                        "reason": "found one",
                        "idempotencyKey": f"found-{i}",
                    }
                },
            )
            for i in range(50)
        )
    )
    assert all(r["stockAdjust"]["errors"] == [] for r in results)
    assert await level(db, world.a1, world.tea) == (50, 0, 0)
    assert [m.on_hand_after for m in await movements(db, world.a1, world.tea)] == list(range(1, 51))
