"""``stockAlerts(storeId)`` over a real websocket: who hears of an alert, and what it carries."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import func, select

from api import events
from api.auth.principal import Role
from api.cache import RedisCache
from api.db import Database, count_statements, utcnow
from api.events import stock_alerts_channel
from api.graphql.ids import encode_id
from api.inventory import adjusting
from api.inventory.models import StockAlert
from api.seed import SEEDER
from tests.subscriptions.conftest import STOCK_ADJUST, ok, pk, watched_cache

STOCK_ALERTS = """subscription($store: ID!) {
  stockAlerts(storeId: $store) { id available safetyLevel open store { code } sku { code } }
}"""


async def adjust(server, shop, token, store, quantity, key):
    """A DELTA stock adjustment over HTTP."""
    values = {
        "storeId": store,
        "skuId": shop.sku,
        "mode": "DELTA",
        "quantity": quantity,
        "reason": "breakage",
        "idempotencyKey": key,
    }
    return await ok(server, token, STOCK_ADJUST, values)


async def test_an_alert_raised_by_stock_adjust_reaches_who_may_see_the_store(server, shop):
    tokens = {
        "hq": shop.hq(server),
        "marketer": server.token(Role.MARKETER),  # HQ: reads every partner's data
        "partner A": shop.admin(server, shop.partner_a),
        "a1 staff": shop.staff(server, shop.partner_a, shop.a1),
    }
    async with contextlib.AsyncExitStack() as stack:
        following = {}
        for who, token in tokens.items():
            ws = await stack.enter_async_context(server.signed_in(token))
            following[who] = (ws, await ws.subscribe(STOCK_ALERTS, {"store": shop.a1}))
        await server.cache.until_subscribers(stock_alerts_channel(pk(shop.a1)), len(tokens))
        # 10 on hand, safety level 3: taking 8 away leaves 2 available, below the level.
        await adjust(server, shop, tokens["a1 staff"], shop.a1, -8, "k1")
        received = {who: await ws.next(operation) for who, (ws, operation) in following.items()}
    alert = received["hq"]["stockAlerts"]
    assert alert == {
        "id": alert["id"],
        "available": 2,
        "safetyLevel": 3,
        "open": True,
        "store": {"code": "A1"},
        "sku": {"code": "TEA-1"},
    }
    assert all(message == {"stockAlerts": alert} for message in received.values())


async def test_only_the_stores_subscribers_hear_of_its_alert(server, shop):
    async with (
        server.signed_in(shop.admin(server, shop.partner_b)) as b,
        server.signed_in(shop.staff(server, shop.partner_a, shop.a2)) as a2_staff,
    ):
        b_op = await b.subscribe(STOCK_ALERTS, {"store": shop.b1})
        a2_op = await a2_staff.subscribe(STOCK_ALERTS, {"store": shop.a2})
        await server.cache.until_subscribers(stock_alerts_channel(pk(shop.b1)))
        await server.cache.until_subscribers(stock_alerts_channel(pk(shop.a2)))
        await adjust(server, shop, shop.hq(server), shop.a1, -8, "k1")  # an alert at a1 (2 left)
        await adjust(server, shop, shop.hq(server), shop.a2, -9, "k2")  # one at a2 (1 left)
        await adjust(server, shop, shop.hq(server), shop.b1, -10, "k3")  # one at b1 (0 left)
        # Each one's first message is its own store's later alert: a1's, published before,
        # did not reach them (a channel delivers in order).
        assert (await a2_staff.next(a2_op))["stockAlerts"]["available"] == 1
        assert (await b.next(b_op))["stockAlerts"]["available"] == 0


@pytest.mark.parametrize("who", ["partner B", "a2 staff"])
async def test_a_store_one_may_not_see_is_refused_like_a_missing_one(server, shop, who):
    token = (
        shop.admin(server, shop.partner_b)
        if who == "partner B"
        else shop.staff(server, shop.partner_a, shop.a2)  # staff see their own store only
    )
    async with server.signed_in(token) as ws:
        foreign = await ws.error(await ws.subscribe(STOCK_ALERTS, {"store": shop.a1}))
        missing_id = encode_id("Store", 987654)
        missing = await ws.error(await ws.subscribe(STOCK_ALERTS, {"store": missing_id}))
    assert foreign == missing
    assert [(e["message"], e["extensions"]) for e in foreign] == [
        ("No Store with this ID to follow.", {"code": "NOT_FOUND"})
    ]
    assert server.cache.subscribers[stock_alerts_channel(pk(shop.a1))] == 0


async def test_members_may_not_follow_stock(server, shop):
    async with server.signed_in(shop.member(server, shop.ann)) as ws:
        (error,) = await ws.error(await ws.subscribe(STOCK_ALERTS, {"store": shop.a1}))
    assert error["extensions"] == {"code": "FORBIDDEN"}
    assert error["message"] == "This needs the partners:read or stock:write scope."


async def test_a_rolled_back_adjustment_publishes_no_alert(server, shop, db):
    async with server.signed_in(shop.staff(server, shop.partner_a, shop.a1)) as ws:
        operation = await ws.subscribe(STOCK_ALERTS, {"store": shop.a1})
        await server.cache.until_subscribers(stock_alerts_channel(pk(shop.a1)))
        draft = adjusting.AdjustDraft(
            store_id=pk(shop.a1),
            sku_id=pk(shop.sku),
            mode=adjusting.AdjustMode.DELTA,
            quantity=-8,
            reason="breakage",
            idempotency_key="rolled-back",
        )

        class Abandoned(Exception):
            pass

        with pytest.raises(Abandoned):
            async with db.transaction() as session:
                await adjusting.adjust(session, SEEDER, draft, now=utcnow())  # raises an alert
                assert await session.scalar(select(func.count()).select_from(StockAlert)) == 1
                raise Abandoned  # ... in a transaction that then does not commit
        async with db.read() as session:
            assert await session.scalar(select(func.count()).select_from(StockAlert)) == 0
        await adjust(server, shop, shop.hq(server), shop.a1, -9, "committed")
        # The first message is the committed alert (1 left), not the abandoned one (2 left).
        assert (await ws.next(operation))["stockAlerts"]["available"] == 1


async def test_statements_per_alert_message(server, shop, db):
    """Each message reads the alert through the scope, then its store and SKU through
    loaders: the same few statements for every message."""
    async with server.signed_in(shop.staff(server, shop.partner_a, shop.a1)) as ws:
        operation = await ws.subscribe(STOCK_ALERTS, {"store": shop.a1})
        await server.cache.until_subscribers(stock_alerts_channel(pk(shop.a1)))
        await adjust(server, shop, shop.hq(server), shop.a1, -8, "raise")
        alert = (await ws.next(operation))["stockAlerts"]
        counts = []
        for _ in range(3):
            # The alert's event again, from a transaction that runs no statement itself.
            with count_statements(db) as counter:
                async with db.transaction() as session:
                    events.emit(
                        session, stock_alerts_channel(pk(shop.a1)), {"alertId": pk(alert["id"])}
                    )
                assert (await ws.next(operation))["stockAlerts"] == alert
            counts.append(counter.count)
    assert counts == [3, 3, 3]


async def test_an_adjustment_in_one_process_alerts_the_subscribers_of_another(
    server, shop, settings, make_server
):
    """With Redis, every API process hears every process's commits."""
    if not isinstance(server.cache, RedisCache):
        pytest.skip("processes share events through Redis; one process has nothing to share")
    # A second API process: its own database engine, Redis client, publisher and server.
    other_db = Database(settings.database_url)
    try:
        async with (
            watched_cache("redis", server.cache.prefix) as other_cache,
            make_server(cache=other_cache, db=other_db) as other,
            server.signed_in(shop.staff(server, shop.partner_a, shop.a1)) as ws,
        ):
            operation = await ws.subscribe(STOCK_ALERTS, {"store": shop.a1})
            await server.cache.until_subscribers(stock_alerts_channel(pk(shop.a1)))
            await adjust(other, shop, shop.hq(other), shop.a1, -8, "elsewhere")
            assert (await ws.next(operation))["stockAlerts"]["available"] == 2
    finally:
        await other_db.dispose()
