"""A real server for subscription tests: the app under uvicorn on a free local port, spoken to
over a real websocket (graphql-transport-ws) and over HTTP.

Every test runs on both caches: the in-process one (what the embedded ``make serve`` uses)
and Redis (each test on its own key prefix; skipped without QUDAO_TEST_REDIS_URL, required
in CI). The cache tells the tests when a channel has a subscriber: a client
cannot know when the server has subscribed (graphql-transport-ws does not acknowledge a
subscribe), and an event published before that is, by design, not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as redis
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.tokens import TokenSubject, decode_access_token, deny, issue_access_token
from api.cache import InProcessCache, RedisCache
from api.db import Database
from api.graphql.ids import decode_id
from api.settings import Settings
from tests.conftest import REDIS_URL, service_missing

WAIT = 5.0  # bound every wait, so a message that never comes fails instead of hanging
QUIET = 0.3  # how long "nothing arrives" is watched for


class _Watched:
    """Counts the live subscriptions per channel, so a test can wait for a subscriber."""

    def _setup_watch(self) -> None:
        self.subscribers: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        async with super().subscribe(channel) as messages:  # type: ignore[misc]
            await self._count(channel, 1)
            try:
                yield messages
            finally:
                await self._count(channel, -1)

    async def _count(self, channel: str, change: int) -> None:
        async with self._changed:
            self.subscribers[channel] += change
            self._changed.notify_all()

    async def until_subscribers(self, channel: str, count: int = 1) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: self.subscribers[channel] == count)


class WatchedMemoryCache(_Watched, InProcessCache):
    def __init__(self) -> None:
        super().__init__()
        self._setup_watch()


class WatchedRedisCache(_Watched, RedisCache):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix)
        self._setup_watch()


WatchedCache = WatchedMemoryCache | WatchedRedisCache


@contextlib.asynccontextmanager
async def watched_cache(kind: str, prefix: str | None = None) -> AsyncIterator[WatchedCache]:
    """``kind`` "memory" or "redis" (``prefix`` shares one Redis between two "processes")."""
    if kind == "memory":
        memory = WatchedMemoryCache()
        try:
            yield memory
        finally:
            await memory.close()
        return
    if not REDIS_URL:
        service_missing("Redis", "set QUDAO_TEST_REDIS_URL to run the subscriptions over Redis")
    prefix = prefix or f"qudao-test:{uuid.uuid4().hex}:"
    remote = WatchedRedisCache(REDIS_URL, prefix)
    try:
        yield remote
    finally:
        await remote.close()
        raw = redis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in raw.scan_iter(match=f"{prefix}*")]
            if keys:
                await raw.delete(*keys)
        finally:
            await raw.aclose()


@pytest_asyncio.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[WatchedCache]:
    async with watched_cache(request.param) as watched:
        yield watched


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port of 127.0.0.1; yields ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    # The app's lifespan would close what the tests own (db, cache); they close it themselves.
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:  # noqa: ASYNC110  (uvicorn has a flag, no event)
                await asyncio.sleep(0.01)
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class Server:
    """The running app: HTTP and websocket clients, tokens, and the cache it publishes to."""

    def __init__(self, address: str, app: Any, settings: Settings, cache: WatchedCache) -> None:
        self.address = address
        self.app = app
        self.settings = settings
        self.cache = cache
        self.keys = settings.key_ring()

    def token(
        self,
        role: Role,
        *,
        partner_id: int | None = None,
        store_id: int | None = None,
        customer_id: int | None = None,
        subject: str | None = None,
        scopes: set[str] | None = None,
        ttl: int = 600,
    ) -> str:
        return issue_access_token(
            self.keys,
            issuer=self.settings.issuer,
            client_id="tests",
            who=TokenSubject(
                subject or f"test:{role.value}", role, partner_id, store_id, customer_id
            ),
            scope=" ".join(sorted(ROLE_SCOPES[role] if scopes is None else scopes)),
            ttl=ttl,
        )

    async def revoke(self, token: str) -> None:
        """What POST /oauth/revoke does to an access token: deny it until it expires."""
        await deny(self.cache, decode_access_token(self.keys, token, issuer=self.settings.issuer))

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            base_url=f"http://{self.address}", headers=headers, trust_env=False, timeout=WAIT
        )

    async def graphql(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self.http(token) as http:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    @contextlib.asynccontextmanager
    async def socket(
        self, headers: dict[str, str] | None = None, subprotocol: str = "graphql-transport-ws"
    ) -> AsyncIterator[Socket]:
        async with connect(
            f"ws://{self.address}/graphql",
            subprotocols=[subprotocol],  # type: ignore[list-item]
            additional_headers=headers,
            proxy=None,
            open_timeout=WAIT,
        ) as ws:
            yield Socket(ws)

    @contextlib.asynccontextmanager
    async def signed_in(self, token: str) -> AsyncIterator[Socket]:
        """A connection acknowledged with ``token`` in the connection_init payload."""
        async with self.socket() as ws:
            await ws.init({"Authorization": f"Bearer {token}"})
            assert await ws.receive() == {"type": "connection_ack"}
            yield ws


class Socket:
    """A graphql-transport-ws client, one message at a time."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = iter(range(1, 1_000_000))

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def init(self, payload: dict[str, Any] | None = None) -> None:
        await self.send({"type": "connection_init", "payload": payload or {}})

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        operation_id = str(next(self._ids))
        await self.send(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )
        return operation_id

    async def receive(self, within: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(within):
            return json.loads(await self.ws.recv())

    async def next(self, operation_id: str) -> dict[str, Any]:
        """The data of the operation's next message (which must be a ``next``)."""
        message = await self.receive()
        assert message["type"] == "next" and message["id"] == operation_id, message
        assert "errors" not in message["payload"], message["payload"]
        return message["payload"]["data"]

    async def error(self, operation_id: str) -> list[dict[str, Any]]:
        message = await self.receive()
        assert message["type"] == "error" and message["id"] == operation_id, message
        return message["payload"]

    async def nothing(self, quiet: float = QUIET) -> None:
        """Nothing arrives for ``quiet`` seconds."""
        try:
            message = await self.receive(within=quiet)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, received {message}")

    async def closed(self, within: float = WAIT) -> tuple[int, str]:
        """Wait for the server to close the connection; its (code, reason)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    message = await self.ws.recv()
                    raise AssertionError(f"expected a close, received {message}")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the connection dropped without a close frame"
            return closed.rcvd.code, closed.rcvd.reason


@pytest_asyncio.fixture
async def make_server(
    db: Database, settings: Settings, cache: WatchedCache
) -> AsyncIterator[Callable[..., Any]]:
    """``async with make_server() as server``: the app under uvicorn (settings overridable)."""

    @contextlib.asynccontextmanager
    async def start(
        *, cache: WatchedCache = cache, db: Database = db, **overrides: Any
    ) -> AsyncIterator[Server]:
        app_settings = dataclasses.replace(settings, **overrides)
        app = create_app(app_settings, db=db, cache=cache)
        try:
            async with serve(app) as address:
                yield Server(address, app, app_settings, cache)
        finally:
            db.publisher = None  # the shared test database must not publish to a closed cache

    yield start


@pytest_asyncio.fixture
async def server(make_server: Callable[..., Any]) -> AsyncIterator[Server]:
    async with make_server() as running:
        yield running


# --- a small shop, built over HTTP as HQ -------------------------------------------------------

PARTNER_CREATE = """mutation($input: PartnerCreateInput!) {
  partnerCreate(input: $input) { partner { id } errors { code message } } }"""
STORE_CREATE = """mutation($input: StoreCreateInput!) {
  storeCreate(input: $input) { store { id } errors { code message } } }"""
PRODUCT_CREATE = """mutation($input: ProductCreateInput!) {
  productCreate(input: $input) { product { skus { id code } } errors { code message } } }"""
MEMBER_JOIN = """mutation($input: MemberJoinInput!) {
  memberJoin(input: $input) { customer { id } errors { code message } } }"""
STOCK_ADJUST = """mutation($input: StockAdjustInput!) {
  stockAdjust(input: $input) { stockLevel { available } errors { code message } } }"""
ORDER_CREATE = """mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id status } errors { code message } } }"""


@dataclasses.dataclass
class Shop:
    """Partner A with stores a1 and a2, partner B with store b1 (all offer pickup); one SKU
    ``TEA-1`` (mini-program list price 99) with 10 on hand and a safety level of 3 at every
    store; members ann (joined at a1) and bob (joined at b1). Values are global ids."""

    partner_a: str
    partner_b: str
    a1: str
    a2: str
    b1: str
    sku: str
    ann: str
    bob: str

    def hq(self, server: Server) -> str:
        return server.token(Role.HQ_ADMIN, subject="user:hq")

    def admin(self, server: Server, partner: str) -> str:
        return server.token(Role.PARTNER_ADMIN, partner_id=pk(partner), subject=f"user:{partner}")

    def staff(self, server: Server, partner: str, store: str, **kwargs: Any) -> str:
        return server.token(
            Role.STORE_STAFF,
            partner_id=pk(partner),
            store_id=pk(store),
            subject=f"user:staff-{store}",
            **kwargs,
        )

    def member(self, server: Server, customer: str) -> str:
        return server.token(
            Role.MEMBER, customer_id=pk(customer), subject=f"customer:{pk(customer)}"
        )


def pk(global_id: str) -> int:
    return decode_id(global_id)[1]


async def ok(server: Server, token: str, document: str, values: dict[str, Any]) -> dict[str, Any]:
    """Run a mutation that must succeed; its payload."""
    (payload,) = (await server.graphql(token, document, {"input": values})).values()
    assert payload["errors"] == [], payload["errors"]
    return payload


@pytest_asyncio.fixture
async def shop(server: Server) -> Shop:
    hq = server.token(Role.HQ_ADMIN, subject="user:hq")
    partner_a = await ok(server, hq, PARTNER_CREATE, {"code": "PA", "name": "A", "type": "AGENT"})
    partner_b = await ok(server, hq, PARTNER_CREATE, {"code": "PB", "name": "B", "type": "AGENT"})
    stores = {}
    for code, partner in (("a1", partner_a), ("a2", partner_a), ("b1", partner_b)):
        store = {
            "code": code.upper(),
            "name": f"Store {code}",
            "regionCode": "310115",
            "address": "上海市浦东新区世纪大道100号",
            "partnerId": partner["partner"]["id"],
            "offersPickup": True,
        }
        stores[code] = (await ok(server, hq, STORE_CREATE, store))["store"]["id"]
    product = {
        "code": "TEA",
        "name": "茶具",
        "skus": [
            {
                "code": "TEA-1",
                "name": "茶杯",
                "suggestedRetailPrice": "100.00",
                "costPrice": "40.00",
                "priceBands": [
                    {"channel": "MINI_PROGRAM", "floor": "80", "ceiling": "120", "listPrice": "99"}
                ],
            }
        ],
    }
    (sku,) = (await ok(server, hq, PRODUCT_CREATE, product))["product"]["skus"]
    for code, store in stores.items():
        adjust = {
            "storeId": store,
            "skuId": sku["id"],
            "mode": "SET",
            "quantity": 10,
            "reason": "opening count",
            "idempotencyKey": f"open-{code}",
            "safetyLevel": 3,
        }
        await ok(server, hq, STOCK_ADJUST, adjust)
    members = {}
    for name, phone, store in (("ann", "13700000001", "a1"), ("bob", "13700000002", "b1")):
        joined = {"storeId": stores[store], "identities": [{"kind": "PHONE", "value": phone}]}
        members[name] = (await ok(server, hq, MEMBER_JOIN, joined))["customer"]["id"]
    return Shop(
        partner_a["partner"]["id"],
        partner_b["partner"]["id"],
        stores["a1"],
        stores["a2"],
        stores["b1"],
        sku["id"],
        members["ann"],
        members["bob"],
    )
