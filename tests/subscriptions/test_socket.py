"""The websocket transport itself, over a real socket: who may connect, how long a connection
lives, what each message may carry, and that only committed events are published.

These tests follow a store through a test-only subscription, so they pin the machinery
(api/graphql/subscriptions.py) whatever the domains subscribe to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
import strawberry
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import WebSocketRoute
from strawberry.tools import merge_types
from websockets.exceptions import InvalidStatus

import api.graphql.schema
import api.graphql.subscriptions
from api import events
from api.auth.principal import Role
from api.db import Database, count_statements
from api.graphql.context import Info
from api.graphql.ids import decode_id_of, encode_id
from api.graphql.subscriptions import NotFound, follow, operation_context
from api.partners import service as partners
from api.partners.models import Partner, PartnerType
from api.partners.schema import Store
from api.seed import SEEDER
from api.settings import Settings
from tests.subscriptions.conftest import Server, Socket

STORE_CHANGES = "subscription($id: ID!) { storeChanges(storeId: $id) { code name } }"
WITH_PARTNER = "subscription($id: ID!) { storeChanges(storeId: $id) { code partner { name } } }"


def channel(store_pk: int) -> str:
    return f"test-store-changes:{store_pk}"


@strawberry.type
class StoreChanges:
    @strawberry.subscription
    async def store_changes(
        self, info: Info, store_id: strawberry.ID
    ) -> AsyncGenerator[Store, None]:
        context = operation_context(info)
        pk = decode_id_of(store_id, "Store")
        async with context.db.read() as session:
            if not await partners.stores_by_id(session, context.principal, [pk]):
                raise NotFound("Store")

        async def read(session: AsyncSession, payload: dict[str, Any]) -> Store | None:
            if payload.get("boom"):
                raise RuntimeError("a bug with a secret in its message")
            found = await partners.stores_by_id(session, context.principal, [pk])
            return Store.from_row(found[pk]) if pk in found else None

        return follow(context, channel(pk), read)


@pytest.fixture(autouse=True)
def store_changes_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built in these tests serve the test-only subscription."""
    monkeypatch.setattr(
        api.graphql.schema, "Subscription", merge_types("Subscription", (StoreChanges,))
    )


@dataclass
class World:
    partner_a: int
    partner_b: int
    store_a: int
    store_b: int

    @property
    def store_a_id(self) -> str:
        return encode_id("Store", self.store_a)

    @property
    def store_b_id(self) -> str:
        return encode_id("Store", self.store_b)


@pytest_asyncio.fixture
async def world(db: Database) -> World:
    async with db.transaction() as session:
        a = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PA", "Partner A", PartnerType.DISTRIBUTOR)
        )
        b = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PB", "Partner B", PartnerType.DISTRIBUTOR)
        )
        store_a = await partners.create_store(
            session, SEEDER, partners.StoreDraft("SA", "Store A", "310115", "addr", a.id)
        )
        store_b = await partners.create_store(
            session, SEEDER, partners.StoreDraft("SB", "Store B", "310115", "addr", b.id)
        )
    return World(a.id, b.id, store_a.id, store_b.id)


async def touch(db: Database, store_pk: int, **payload: Any) -> None:
    """A committed transaction that emits a change of the store."""
    async with db.transaction() as session:
        events.emit(session, channel(store_pk), {"storeId": store_pk, **payload})


def partner_admin(server: Server, world: World, **kwargs: Any) -> str:
    return server.token(
        Role.PARTNER_ADMIN, partner_id=world.partner_a, subject="user:boss-a", **kwargs
    )


@dataclass
class Following:
    ws: Socket
    operation: str
    token: str


@pytest_asyncio.fixture
async def following(server: Server, world: World) -> AsyncIterator[Following]:
    """Partner A's admin, following store A."""
    token = partner_admin(server, world)
    async with server.signed_in(token) as ws:
        operation = await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a))
        yield Following(ws, operation, token)


# --- connecting ---------------------------------------------------------------------------


async def test_a_committed_event_reaches_the_subscriber(server, world, db, following):
    ws, operation = following.ws, following.operation
    await touch(db, world.store_a)
    assert await ws.next(operation) == {"storeChanges": {"code": "SA", "name": "Store A"}}
    await touch(db, world.store_a)
    assert await ws.next(operation) == {"storeChanges": {"code": "SA", "name": "Store A"}}
    # The client ends the subscription: the server leaves the channel.
    await ws.send({"id": operation, "type": "complete"})
    await server.cache.until_subscribers(channel(world.store_a), 0)


async def test_the_token_may_come_in_the_handshake_header(server, world, db):
    headers = {"Authorization": f"Bearer {partner_admin(server, world)}"}
    async with server.socket(headers=headers) as ws:
        await ws.init()
        assert await ws.receive() == {"type": "connection_ack"}
        operation = await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a))
        await touch(db, world.store_a)
        assert (await ws.next(operation))["storeChanges"]["code"] == "SA"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": 42},
        "expired",
        "revoked",
        "foreign",
    ],
    ids=["missing", "garbage", "not-bearer", "not-a-string", "expired", "revoked", "foreign"],
)
async def test_a_connection_without_a_valid_token_is_refused(server, world, payload):
    if payload == "expired":
        token = server.token(Role.HQ_ADMIN, ttl=-10)
        payload = {"Authorization": f"Bearer {token}"}
    elif payload == "revoked":
        token = server.token(Role.HQ_ADMIN)
        await server.revoke(token)
        payload = {"authorization": f"Bearer {token}"}  # the key in any case
    elif payload == "foreign":  # signed by another issuer's keys
        other = Settings(issuer="https://elsewhere.example.com")
        token = Server(server.address, None, other, server.cache).token(Role.HQ_ADMIN)
        payload = {"Authorization": f"Bearer {token}"}
    async with server.socket() as ws:
        await ws.init(payload)
        assert await ws.closed() == (4403, "Forbidden")


async def test_a_bad_token_in_the_header_refuses_the_handshake(server):
    with pytest.raises(InvalidStatus) as refused:
        async with server.socket(headers={"Authorization": "Bearer not-a-token"}):
            pass
    assert refused.value.response.status_code == 403


async def test_nothing_runs_before_connection_init(server, world):
    async with server.socket() as ws:
        await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        assert await ws.closed() == (4401, "Unauthorized")
    assert server.cache.subscribers[channel(world.store_a)] == 0


async def test_only_graphql_transport_ws_is_spoken(server):
    # Not the legacy graphql-ws protocol: the contract names graphql-transport-ws.
    async with server.socket(subprotocol="graphql-ws") as ws:
        assert await ws.closed() == (4406, "Subprotocol not acceptable")


async def test_a_connection_must_sign_in_soon(server):
    (view,) = [r.app for r in server.app.routes if isinstance(r, WebSocketRoute)]
    view.connection_init_wait_timeout = timedelta(seconds=0.2)
    async with server.socket() as ws:
        assert await ws.closed() == (4408, "Connection initialisation timeout")


# --- a connection does not outlive its token ------------------------------------------------


async def test_an_expired_token_ends_the_subscription(server, world, db):
    async with server.signed_in(partner_admin(server, world, ttl=3)) as ws:
        operation = await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a))
        await touch(db, world.store_a)
        assert (await ws.next(operation))["storeChanges"]["code"] == "SA"
        code, reason = await ws.closed()
    assert (code, reason) == (4403, "Forbidden: token expired")
    await server.cache.until_subscribers(channel(world.store_a), 0)


async def test_a_revoked_token_ends_the_subscription_before_the_next_message(
    server, world, db, following
):
    ws = following.ws
    # The idle timer would take TOKEN_CHECK_SECONDS: the message itself triggers the check.
    await server.revoke(following.token)
    await touch(db, world.store_a)
    assert await ws.closed() == (4403, "Forbidden: token revoked")
    await server.cache.until_subscribers(channel(world.store_a), 0)


async def test_a_revoked_token_ends_an_idle_subscription(server, world, monkeypatch):
    monkeypatch.setattr(api.graphql.subscriptions, "TOKEN_CHECK_SECONDS", 0.2)
    token = partner_admin(server, world)
    async with server.signed_in(token) as ws:
        await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a))
        await ws.nothing()  # the timer checks, the token holds: the connection stays
        await server.revoke(token)
        assert await ws.closed(within=1.0) == (4403, "Forbidden: token revoked")
    await server.cache.until_subscribers(channel(world.store_a), 0)


async def test_every_subscribe_checks_the_token_again(server, world):
    token = partner_admin(server, world)
    async with server.signed_in(token) as ws:
        await server.revoke(token)
        await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        assert await ws.closed() == (4403, "Forbidden: token revoked")
    assert server.cache.subscribers[channel(world.store_a)] == 0


async def test_the_timer_sleeps_between_checks(server, world, monkeypatch):
    """The idle check is a timer, not a loop: an hour-long token costs a handful of
    deny-list reads a minute, and none at all in between."""
    monkeypatch.setattr(api.graphql.subscriptions, "TOKEN_CHECK_SECONDS", 0.25)
    checks = 0
    authenticate = api.graphql.subscriptions.authenticate_bearer

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal checks
        checks += 1
        return await authenticate(*args, **kwargs)

    monkeypatch.setattr(api.graphql.subscriptions, "authenticate_bearer", counted)
    async with server.signed_in(partner_admin(server, world, ttl=3600)):
        checks = 0
        await asyncio.sleep(1.1)
    assert 3 <= checks <= 5  # one every 0.25 s


# --- what a subscription may follow and carry ----------------------------------------------


async def test_another_partners_store_is_refused_like_a_missing_one(server, world):
    async with server.signed_in(partner_admin(server, world)) as ws:
        foreign = await ws.subscribe(STORE_CHANGES, {"id": world.store_b_id})
        foreign_error = await ws.error(foreign)
        missing = await ws.subscribe(STORE_CHANGES, {"id": encode_id("Store", 987654)})
        missing_error = await ws.error(missing)
    assert foreign_error == missing_error
    assert foreign_error == [
        {
            "message": "No Store with this ID to follow.",
            "locations": [{"line": 1, "column": 26}],
            "path": ["storeChanges"],
            "extensions": {"code": "NOT_FOUND"},
        }
    ]
    assert server.cache.subscribers[channel(world.store_b)] == 0


async def test_each_message_is_read_again_through_the_scope(server, world, db):
    """What the message carries is read when it is sent, through the subscriber's scope
    and with fresh loaders: never a cached or a foreign row."""
    async with server.signed_in(partner_admin(server, world)) as ws:
        operation = await ws.subscribe(WITH_PARTNER, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a))
        await touch(db, world.store_a)
        first = await ws.next(operation)
        async with db.transaction() as session:
            await session.execute(
                update(Partner).where(Partner.id == world.partner_a).values(name="Renamed A")
            )
        await touch(db, world.store_a)
        second = await ws.next(operation)
    assert first == {"storeChanges": {"code": "SA", "partner": {"name": "Partner A"}}}
    assert second == {"storeChanges": {"code": "SA", "partner": {"name": "Renamed A"}}}


async def test_statements_per_message_do_not_grow_with_the_messages(server, world, db):
    async with server.signed_in(partner_admin(server, world)) as ws:
        operation = await ws.subscribe(WITH_PARTNER, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a))
        counts = []
        for _ in range(3):
            with count_statements(db) as counter:
                await touch(db, world.store_a)
                await ws.next(operation)
            counts.append(counter.count)
    # Each message: the store through the scope, its partner through a loader (the emitting
    # transaction itself runs no statement).
    assert counts == [2, 2, 2]


async def test_a_bug_ends_the_subscription_masked_and_logged(server, world, db, following, caplog):
    ws, operation = following.ws, following.operation
    await touch(db, world.store_a, boom=True)
    message = await ws.receive()
    assert message["type"] == "next" and message["payload"]["data"] is None
    assert message["payload"]["errors"] == [
        {"message": "Internal server error.", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
    ]
    assert await ws.receive() == {"id": operation, "type": "complete"}
    assert "a bug with a secret" in caplog.text  # in the server's log, not the client's
    await server.cache.until_subscribers(channel(world.store_a), 0)


async def test_subscriptions_only_over_the_websocket(server, world):
    token = partner_admin(server, world)
    async with server.signed_in(token) as ws:
        query = await ws.subscribe("{ __typename }")
        (error,) = await ws.error(query)
        mutation = await ws.subscribe("mutation { __typename }")
        (mutation_error,) = await ws.error(mutation)
    assert error == {
        "message": "queries are not allowed",
        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
    }
    assert mutation_error == {
        "message": "mutations are not allowed",
        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
    }
    # And no subscription over HTTP, by POST or GET; queries over GET work as before.
    async with server.http(token) as http:
        body = {"query": STORE_CHANGES, "variables": {"id": world.store_a_id}}
        assert (await http.post("/graphql", json=body)).status_code == 400
        refused = await http.get(
            "/graphql",
            params={"query": STORE_CHANGES, "variables": f'{{"id": "{world.store_a_id}"}}'},
        )
        assert refused.status_code == 400
        ok = await http.get("/graphql", params={"query": "{ stores { totalCount } }"})
        assert ok.status_code == 200 and ok.json()["data"] == {"stores": {"totalCount": 1}}


async def test_subscribes_count_against_the_rate_limit(make_server, world):
    async with make_server(rate_limit=2) as server:
        token = partner_admin(server, world)
        async with server.signed_in(token) as ws:
            for _ in range(2):
                await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
            await server.cache.until_subscribers(channel(world.store_a), 2)
            third = await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
            assert await ws.error(third) == [
                {
                    "message": "Too many requests.",
                    "extensions": {"code": "RATE_LIMITED", "retryAfter": 60},
                }
            ]
            # HTTP shares the principal's budget.
            async with server.http(token) as http:
                response = await http.post("/graphql", json={"query": "{ __typename }"})
            assert response.status_code == 429


async def test_a_connection_holds_a_bounded_number_of_subscriptions(server, world):
    # Each subscription holds a pub/sub connection (Redis) for as long as it runs.
    limit = api.graphql.subscriptions.MAX_SUBSCRIPTIONS_PER_CONNECTION
    async with server.signed_in(partner_admin(server, world)) as ws:
        for _ in range(limit):
            await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id})
        await server.cache.until_subscribers(channel(world.store_a), limit)
        (error,) = await ws.error(await ws.subscribe(STORE_CHANGES, {"id": world.store_a_id}))
    assert error["message"] == "Subscription limit reached"
    await server.cache.until_subscribers(channel(world.store_a), 0)


# --- publishing ------------------------------------------------------------------------------


async def test_a_rolled_back_transaction_publishes_nothing(server, world, db, following):
    ws, operation = following.ws, following.operation

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with db.transaction() as session:
            events.emit(session, channel(world.store_a), {"storeId": world.store_a})
            raise Refused
    await ws.nothing()
    await touch(db, world.store_a)  # the subscriber was listening all along
    assert (await ws.next(operation))["storeChanges"]["code"] == "SA"
    await ws.nothing()
