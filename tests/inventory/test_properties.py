"""Property: whatever happens to a location's stock, in whatever order, the books balance.

Hypothesis draws a sequence of reserve / release / commit (pickup) / deduct (sale) / restock
(refund) / adjust (SET or DELTA, maybe with a safety level) over two SKUs at one location,
runs it against the database next to a plain model, and after every step checks that:

* each change succeeds exactly when the model says it may (enough available; on hand not
  below reserved), and the level equals the model's;
* on hand ≥ reserved ≥ 0;
* the movement log sums to the level (Σ on-hand deltas, Σ reserved deltas) and its last
  row's "after" is the level;
* an alert is open exactly when available stock is below the safety level, one at most.

Releases and commits take back a whole earlier reservation, as orders do. Each example uses
a fresh location in the same database.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.db import Database
from api.errors import DomainError
from api.inventory import adjusting, movements
from api.inventory.adjusting import AdjustDraft, AdjustMode, StockErrorCode
from api.inventory.models import StockAlert, StockMovement
from api.inventory.movements import InsufficientStock
from tests.inventory.conftest import HQ, T0, World, level, move, new_store

WHICH = st.sampled_from([0, 1])  # which of the two SKUs
UNITS = st.integers(1, 8)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), WHICH, UNITS),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("commit"), st.integers(0, 20)),
        st.tuples(st.just("deduct"), WHICH, UNITS),
        st.tuples(st.just("restock"), WHICH, UNITS),
        st.tuples(
            st.just("adjust"),
            WHICH,
            st.sampled_from(list(AdjustMode)),
            st.integers(-12, 20),
            st.none() | st.integers(0, 10),
        ),
    ),
    min_size=1,
    max_size=20,
)

ORDER_SIDE = {
    "reserve": movements.reserve,
    "release": movements.release_reservation,
    "commit": movements.commit_reservation,
    "deduct": movements.deduct,
    "restock": movements.restock,
}


@dataclass
class Model:
    db: Database
    store: int
    skus: tuple[int, int]
    on_hand: list[int] = field(default_factory=lambda: [0, 0])
    reserved: list[int] = field(default_factory=lambda: [0, 0])
    safety: list[int] = field(default_factory=lambda: [0, 0])
    held: list[tuple[str, int, int]] = field(default_factory=list)  # (source, which, units)
    serial: itertools.count = field(default_factory=itertools.count)

    def available(self, which: int) -> int:
        return self.on_hand[which] - self.reserved[which]


async def order_side(model: Model, name: str, which: int, units: int, source: str) -> bool:
    """Run one order-side change; True if it went through."""
    try:
        await move(model.db, ORDER_SIDE[name], model.store, {model.skus[which]: units}, source)
    except InsufficientStock as short:
        assert (short.requested, short.available) == (units, model.available(which))
        return False
    return True


async def adjust(model: Model, which: int, mode: AdjustMode, units: int, safety: int | None):
    target = units if mode is AdjustMode.SET else model.on_hand[which] + units
    valid = (units >= 0) if mode is AdjustMode.SET else (units != 0 or safety is not None)
    try:
        async with model.db.transaction() as session:
            await adjusting.adjust(
                session,
                HQ,
                AdjustDraft(
                    store_id=model.store,
                    sku_id=model.skus[which],
                    mode=mode,
                    quantity=units,
                    reason="count",
                    idempotency_key=f"k{model.store}-{next(model.serial)}",
                    safety_level=safety,
                ),
                now=T0,
            )
    except DomainError as error:
        code = error.problems[0].code
        if not valid:
            assert code is StockErrorCode.INVALID
        else:
            assert code is StockErrorCode.BELOW_RESERVED and target < model.reserved[which]
        return
    assert valid and target >= model.reserved[which]
    model.on_hand[which] = target
    if safety is not None:
        model.safety[which] = safety


async def step(model: Model, op: tuple) -> None:
    name = op[0]
    source = f"s{next(model.serial)}"
    if name in ("reserve", "deduct"):
        _, which, units = op
        enough = model.available(which) >= units
        assert await order_side(model, name, which, units, source) is enough
        if enough and name == "reserve":
            model.reserved[which] += units
            model.held.append((source, which, units))
        elif enough:
            model.on_hand[which] -= units
    elif name in ("release", "commit"):
        if not model.held:
            return
        held_source, which, units = model.held.pop(op[1] % len(model.held))
        assert await order_side(model, name, which, units, held_source)
        model.reserved[which] -= units
        if name == "commit":
            model.on_hand[which] -= units
    elif name == "restock":
        _, which, units = op
        assert await order_side(model, name, which, units, source)
        model.on_hand[which] += units
    else:
        _, which, mode, units, safety = op
        await adjust(model, which, mode, units, safety)


async def check(model: Model) -> None:
    for which, sku in enumerate(model.skus):
        found = await level(model.db, model.store, sku)
        expected = (model.on_hand[which], model.reserved[which], model.safety[which])
        assert (found or (0, 0, 0)) == expected
        assert model.on_hand[which] >= model.reserved[which] >= 0
        async with model.db.read() as session:
            on_hand, reserved, last = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(StockMovement.on_hand_delta), 0),
                        func.coalesce(func.sum(StockMovement.reserved_delta), 0),
                        func.max(StockMovement.id),
                    ).where(StockMovement.store_id == model.store, StockMovement.sku_id == sku)
                )
            ).one()
            assert (on_hand, reserved) == expected[:2]
            if last is not None:
                after = await session.get(StockMovement, last)
                assert (after.on_hand_after, after.reserved_after) == expected[:2]
            open_alerts = await session.scalar(
                select(func.count()).where(
                    StockAlert.store_id == model.store,
                    StockAlert.sku_id == sku,
                    StockAlert.resolved_at.is_(None),
                )
            )
        assert open_alerts == int(model.available(which) < model.safety[which])


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_stock_books_balance_after_any_sequence(db, world: World, ops):
    model = Model(db, await new_store(db, world.partner_a), (world.tea, world.cup))
    for op in ops:
        await step(model, op)
        await check(model)
