"""The changes orders make to stock (reserve, release, commit, deduct, restock): the levels
and movements they leave, what they refuse, how few statements they take, and the low-stock
alerts they raise and resolve."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api import events
from api.inventory import movements as stock_moves
from api.inventory.models import MovementKind, StockMovement
from api.inventory.movements import InsufficientStock, ReservationMismatch
from tests.inventory.conftest import (
    MINUTE,
    T0,
    alerts,
    level,
    move,
    movements,
    stock,
)


def summary(rows) -> list[tuple]:
    return [
        (m.kind, m.on_hand_delta, m.reserved_delta, m.on_hand_after, m.reserved_after, m.source_id)
        for m in rows
    ]


async def test_a_pickup_reserves_then_sells(db, world):
    await stock(db, world.a1, world.tea, 10)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 3}, "7")
    assert await level(db, world.a1, world.tea) == (10, 3, 0)
    await move(db, stock_moves.commit_reservation, world.a1, {world.tea: 3}, "7")
    assert await level(db, world.a1, world.tea) == (7, 0, 0)
    rows = await movements(db, world.a1, world.tea)
    assert summary(rows)[1:] == [
        (MovementKind.RESERVE, 0, 3, 10, 3, "7"),
        (MovementKind.SALE, -3, -3, 7, 0, "7"),
    ]
    assert (rows[1].source_type, rows[1].reason, rows[1].actor) == ("order", "reserve 7", "test")
    assert rows[1].created_at == T0


async def test_a_cancelled_pickup_releases_and_a_counter_sale_deducts(db, world):
    await stock(db, world.a1, world.tea, 10)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 4}, "1")
    await move(db, stock_moves.release_reservation, world.a1, {world.tea: 4}, "1")
    await move(db, stock_moves.deduct, world.a1, {world.tea: 10}, "2")
    assert await level(db, world.a1, world.tea) == (0, 0, 0)
    assert summary(await movements(db, world.a1, world.tea))[1:] == [
        (MovementKind.RESERVE, 0, 4, 10, 4, "1"),
        (MovementKind.RELEASE, 0, -4, 10, 0, "1"),
        (MovementKind.SALE, -10, 0, 0, 0, "2"),
    ]


async def test_a_refund_restocks_even_where_the_sku_was_never_stocked(db, world):
    await move(db, stock_moves.restock, world.b1, {world.cup: 2}, "r1", source_type="refund")
    assert await level(db, world.b1, world.cup) == (2, 0, 0)
    await move(db, stock_moves.restock, world.b1, {world.cup: 1}, "r2", source_type="refund")
    assert summary(await movements(db, world.b1, world.cup)) == [
        (MovementKind.RESTOCK, 2, 0, 2, 0, "r1"),
        (MovementKind.RESTOCK, 1, 0, 3, 0, "r2"),
    ]


async def test_short_stock_is_refused_and_changes_nothing(db, world):
    await stock(db, world.a1, world.tea, 5)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 2}, "1")
    with pytest.raises(InsufficientStock) as short:
        await move(db, stock_moves.reserve, world.a1, {world.tea: 4}, "2")
    assert (short.value.sku_id, short.value.requested, short.value.available) == (world.tea, 4, 3)
    with pytest.raises(InsufficientStock) as short:
        await move(db, stock_moves.deduct, world.a1, {world.tea: 4}, "3")
    assert short.value.available == 3  # reserved units are not for sale
    # Never stocked here: nothing on hand.
    with pytest.raises(InsufficientStock) as never:
        await move(db, stock_moves.reserve, world.a2, {world.tea: 1}, "4")
    assert (never.value.requested, never.value.available) == (1, 0)
    assert await level(db, world.a1, world.tea) == (5, 2, 0)
    assert len(await movements(db, world.a1, world.tea)) == 2


async def test_one_short_sku_refuses_the_whole_change(db, world):
    await stock(db, world.a1, world.tea, 5)
    await stock(db, world.a1, world.pot, 1)
    with pytest.raises(InsufficientStock) as short:
        await move(db, stock_moves.reserve, world.a1, {world.pot: 2, world.tea: 1}, "1")
    assert short.value.sku_id == world.pot
    assert await level(db, world.a1, world.tea) == (5, 0, 0)  # rolled back with the rest
    assert len(await movements(db, world.a1, world.tea)) == 1


async def test_skus_are_changed_in_ascending_id_order(db, world, count_queries):
    for sku in (world.tea, world.cup, world.pot):
        await stock(db, world.a1, sku, 5)
    with count_queries() as counter:
        await move(
            db, stock_moves.reserve, world.a1, {world.pot: 1, world.tea: 1, world.cup: 1}, "1"
        )
    # One guarded UPDATE per SKU, then one INSERT of all the movements.
    assert counter.count == 4, counter.statements
    assert all(s.lstrip().upper().startswith("UPDATE") for s in counter.statements[:3])
    async with db.read() as session:
        rows = list(
            await session.scalars(
                select(StockMovement.sku_id)
                .where(StockMovement.kind == MovementKind.RESERVE)
                .order_by(StockMovement.id)
            )
        )
    assert rows == sorted([world.tea, world.cup, world.pot])


async def test_reserving_one_sku_is_two_statements(db, world, count_queries):
    await stock(db, world.a1, world.tea, 10, safety=2)
    with count_queries() as counter:
        await move(db, stock_moves.reserve, world.a1, {world.tea: 1}, "1")
    # The guarded UPDATE ... RETURNING, the movement INSERT.
    assert counter.count == 2, counter.statements
    # Crossing below the safety level adds the alert's INSERT.
    with count_queries() as counter:
        await move(db, stock_moves.reserve, world.a1, {world.tea: 8}, "2")
    assert counter.count == 3, counter.statements


async def test_releasing_or_selling_more_than_is_reserved_is_a_bug(db, world):
    await stock(db, world.a1, world.tea, 10)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 2}, "1")
    with pytest.raises(ReservationMismatch):
        await move(db, stock_moves.release_reservation, world.a1, {world.tea: 3}, "1")
    with pytest.raises(ReservationMismatch):
        await move(db, stock_moves.commit_reservation, world.a1, {world.tea: 3}, "1")
    with pytest.raises(ReservationMismatch):
        await move(db, stock_moves.release_reservation, world.a2, {world.tea: 1}, "9")
    assert await level(db, world.a1, world.tea) == (10, 2, 0)


async def test_a_change_from_the_same_source_lands_once(db, world):
    await stock(db, world.a1, world.tea, 10)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 2}, "1")
    with pytest.raises(IntegrityError):
        await move(db, stock_moves.reserve, world.a1, {world.tea: 2}, "1")
    assert await level(db, world.a1, world.tea) == (10, 2, 0)


@pytest.mark.parametrize("quantity", [0, -1, True, 1.5])
async def test_quantities_are_positive_ints(db, world, quantity):
    with pytest.raises(ValueError):
        await move(db, stock_moves.restock, world.a1, {world.tea: quantity}, "1")


async def test_nothing_to_change_changes_nothing(db, world, count_queries):
    with count_queries() as counter:
        await move(db, stock_moves.reserve, world.a1, {}, "1")
    assert counter.count == 0


# --- alerts -----------------------------------------------------------------------------------


def alert_events(published) -> list[dict]:
    return [json.loads(message) for channel, message in published if channel.startswith("stock")]


async def test_an_alert_is_raised_once_when_crossing_and_resolved_when_back(db, world, published):
    await stock(db, world.a1, world.tea, 10, safety=5)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 5}, "1")  # available 5: not below
    assert await alerts(db) == []
    await move(db, stock_moves.reserve, world.a1, {world.tea: 1}, "2", now=T0 + MINUTE)  # 4 < 5
    await move(db, stock_moves.deduct, world.a1, {world.tea: 2}, "3")  # 2: still the same alert
    (alert,) = await alerts(db)
    assert (alert.store_id, alert.sku_id, alert.available, alert.safety_level) == (
        world.a1,
        world.tea,
        4,
        5,
    )
    assert (alert.raised_at, alert.resolved_at) == (T0 + MINUTE, None)
    assert alert_events(published) == [
        {
            "alertId": alert.id,
            "storeId": world.a1,
            "skuId": world.tea,
            "available": 4,
            "safetyLevel": 5,
        }
    ]
    assert published[-1][0] == events.stock_alerts_channel(world.a1)
    # Back to 5 available (a cancelled pickup gives 3 back): resolved.
    await move(
        db, stock_moves.release_reservation, world.a1, {world.tea: 3}, "2", now=T0 + 2 * MINUTE
    )
    (alert,) = await alerts(db)
    assert alert.resolved_at == T0 + 2 * MINUTE
    # Below again: a new alert, and a new event.
    await move(db, stock_moves.reserve, world.a1, {world.tea: 1}, "4")
    assert [a.resolved_at is None for a in await alerts(db)] == [False, True]
    assert len(alert_events(published)) == 2


async def test_a_commit_moves_no_available_stock_and_raises_nothing(db, world, published):
    await stock(db, world.a1, world.tea, 6, safety=5)
    await move(db, stock_moves.reserve, world.a1, {world.tea: 1}, "1")  # 5 available
    await move(db, stock_moves.commit_reservation, world.a1, {world.tea: 1}, "1")
    assert await level(db, world.a1, world.tea) == (5, 0, 5)
    assert await alerts(db) == [] and alert_events(published) == []


async def test_a_restock_resolves_an_alert(db, world):
    await stock(db, world.a1, world.tea, 3, safety=5)  # the count itself crosses below
    (alert,) = await alerts(db)
    assert (alert.available, alert.resolved_at) == (3, None)
    await move(db, stock_moves.restock, world.a1, {world.tea: 2}, "r1", source_type="refund")
    (alert,) = await alerts(db)
    assert alert.resolved_at == T0


async def test_a_rolled_back_change_raises_no_alert(db, world, published):
    await stock(db, world.a1, world.tea, 10, safety=5)
    await stock(db, world.a1, world.pot, 1)
    with pytest.raises(InsufficientStock):
        # The tea would cross below safety, but the pot is short: all of it rolls back.
        await move(db, stock_moves.reserve, world.a1, {world.tea: 8, world.pot: 5}, "1")
    assert await alerts(db) == [] and alert_events(published) == []
