"""PostgreSQL going away under writes: honest, retryable answers, nothing lost or doubled.

A small TCP proxy stands between the app and the shared PostgreSQL, on a database of the
test's own. The test cuts it every way a database goes away, while ``pointsAdjust``,
``couponClaim`` and ``orderCreate`` run with unique keys:

* refuse: the listener closes and live connections drop (a stopped server);
* reset: live connections drop, new ones are let in (a restarted server, a failover);
* hang: connections are accepted and nothing is forwarded (a frozen server, a dead network);
* at the worst moments of one write: its COMMIT never reaches the server (before commit),
  the server commits and its answer is lost (after commit, before the response), and the
  connection drops while the audit entry is written.

Then it proves: every acknowledged write is stored once; every stored write has its audit
entry; every failure is SERVICE_UNAVAILABLE (HTTP 503, Retry-After) and nothing a client or
an audit reader sees holds SQL, parameters or driver text; a retry with the same key has
one effect; the first success after the database is back comes within a second; the log
holds one traceback per outage, not one per failed request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from api.app import create_app
from api.auth.keys import KeyRing
from api.auth.models import AuditEvent
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.tokens import TokenSubject, issue_access_token
from api.cache import InProcessCache
from api.coupons.models import Coupon, CouponTemplate
from api.customers.models import Customer
from api.db import Database
from api.loyalty.models import PointsEntry
from api.migrate import upgrade
from api.orders.models import Order
from api.settings import Settings
from tests.conftest import PG_URL, recreate_pg_database

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="PostgreSQL run: set QUDAO_TEST_DATABASE_URL to include it"
)

# What no answer and no audit row may hold: SQL, bound parameters, driver and OS text.
INTERNALS = (
    "[SQL",
    "SQL:",
    "[parameters",
    "Errno",
    "asyncpg",
    "sqlalchemy",
    "Connection refused",
    "connection was closed",
    "Traceback",
    "INSERT INTO",
    "UPDATE ",
    "audit_event",
    "COMMIT",
)

POINTS_ADJUST = """mutation($input: PointsAdjustInput!) { pointsAdjust(input: $input) {
    entry { id amount } errors { code } } }"""
COUPON_CLAIM = """mutation($input: CouponClaimInput!) { couponClaim(input: $input) {
    coupon { id } created errors { code } } }"""
PROBE = "{ auditEvents(first: 1) { totalCount } }"
ORDER_CREATE = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
    order { id } created errors { code } } }"""


# --- the proxy ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    drop_reply: bool = False  # the server's next answer is lost, with the connection

    def abort(self) -> None:
        self.client.transport.abort()
        if self.server is not None:
            self.server.transport.abort()


@dataclass
class _Trigger:
    pattern: bytes
    after: bool  # forward it and lose the server's answer (else: it never reaches the server)
    fired: asyncio.Event = field(default_factory=asyncio.Event)


class Proxy:
    """A TCP proxy in front of PostgreSQL that a test can cut."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.hanging = False
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._trigger: _Trigger | None = None

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def reset(self) -> None:
        """Drop every live connection (the server restarted)."""
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def refuse(self) -> None:
        """Stop listening and drop every live connection (the server is stopped)."""
        assert self._server is not None
        self._server.close()
        self._server = None
        self.reset()

    def hang(self) -> None:
        """Accept connections and forward nothing, either way (the server froze)."""
        self.hanging = True

    async def restore(self) -> None:
        """The database is back: connections made while it hung are dropped (a frozen
        server's clients time out) and new ones are forwarded."""
        if self.hanging:
            self.hanging = False
            self.reset()
        if self._server is None:
            await self.listen()

    def cut_at(self, pattern: bytes, *, after: bool) -> _Trigger:
        """Drop the connection that next sends ``pattern``: before forwarding it, or once the
        server has answered it (that answer lost)."""
        self._trigger = _Trigger(pattern, after)
        return self._trigger

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.hanging:
                await reader.read()  # held until the client gives up or restore drops it
                return
            try:
                up_reader, link.server = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            await asyncio.gather(
                self._pipe(link, reader, link.server, upstream=True),
                self._pipe(link, up_reader, writer, upstream=False),
            )
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()
            self._links.discard(link)

    async def _pipe(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        while data := await reader.read(65536):
            if self.hanging:
                continue
            trigger = self._trigger
            if upstream and trigger is not None and trigger.pattern in data:
                self._trigger = None
                trigger.fired.set()
                if not trigger.after:
                    link.abort()
                    return
                link.drop_reply = True
            elif not upstream and link.drop_reply:
                link.abort()
                return
            writer.write(data)
            await writer.drain()
        link.abort()


# --- the world ----------------------------------------------------------------------------


@pytest.fixture
def direct_url() -> Iterator[str]:
    """A database of each test's own (the shared server, another name)."""
    assert PG_URL
    url = make_url(PG_URL)
    own = url.set(database=f"{url.database}_outage").render_as_string(hide_password=False)
    asyncio.run(recreate_pg_database(own))
    upgrade(own)
    yield own


@dataclass
class World:
    http: httpx.AsyncClient
    proxy: Proxy
    direct: Database
    customer: str
    template: str
    store: str
    sku: str
    bodies: list[str] = field(default_factory=list)
    # key -> (kind, acknowledged object id)
    acknowledged: dict[str, tuple[str, str]] = field(default_factory=dict)
    failures: int = 0

    async def post(self, query: str, variables: dict[str, Any]) -> httpx.Response:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        self.bodies.append(response.text)
        return response

    async def write(self, kind: str, key: str) -> dict[str, Any] | None:
        """One write; its payload when acknowledged, None when it failed (then checked to
        have failed honestly)."""
        query, variables = self._write(kind, key)
        response = await self.post(query, variables)
        body = response.json()
        if response.status_code == 200 and body.get("data") and body["data"][kind]:
            payload = body["data"][kind]
            assert payload["errors"] == [], payload
            node = payload.get("entry") or payload.get("coupon") or payload.get("order")
            self.acknowledged[key] = (kind, node["id"])
            return payload
        self.failures += 1
        assert response.status_code == 503, response.text
        assert 1 <= int(response.headers["retry-after"]) <= 5
        assert body["data"] is None or body["data"] == {kind: None}, body
        for error in body["errors"]:
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE", body
            assert isinstance(error["extensions"]["retryAfter"], int), body
        return None

    def _write(self, kind: str, key: str) -> tuple[str, dict[str, Any]]:
        if kind == "pointsAdjust":
            given = {"customerId": self.customer, "amount": 5, "reason": "fault test"}
            return POINTS_ADJUST, {"input": {**given, "idempotencyKey": key}}
        if kind == "couponClaim":
            given = {"templateId": self.template, "customerId": self.customer}
            return COUPON_CLAIM, {"input": {**given, "channel": "ONLINE", "claimKey": key}}
        order = {
            "channel": "STORE_POS",
            "fulfillment": "IN_STORE",
            "storeId": self.store,
            "customerId": self.customer,
            "lines": [{"skuId": self.sku, "quantity": 1}],
            "idempotencyKey": key,
        }
        return ORDER_CREATE, {"input": order}

    async def first_success(self, deadline: float = 5.0) -> float:
        """Seconds until a request that needs the database succeeds again."""
        started = time.perf_counter()
        while (await self.post(PROBE, {})).status_code != 200:
            assert time.perf_counter() - started < deadline, "the database never came back"
            await asyncio.sleep(0.01)
        return time.perf_counter() - started

    async def until_stored(self, kind: str, key: str, deadline: float = 5.0) -> float:
        """Retry one write with its key until acknowledged; seconds it took."""
        started = time.perf_counter()
        while await self.write(kind, key) is None:
            assert time.perf_counter() - started < deadline, f"{kind} {key} never came back"
            await asyncio.sleep(0.02)
        return time.perf_counter() - started


async def _setup(post: Any) -> dict[str, str]:
    """A partner, its store, a product with stock there, a customer and a coupon template,
    through the API."""

    async def ok(query: str, variables: dict[str, Any], name: str) -> dict[str, Any]:
        body = (await post(query, variables)).json()
        assert body.get("data") and body["data"][name]["errors"] == [], body
        return body["data"][name]

    partner = await ok(
        """mutation($i: PartnerCreateInput!) { partnerCreate(input: $i) {
            partner { id } errors { code } } }""",
        {"i": {"code": "OUT", "name": "Outage", "type": "AGENT"}},
        "partnerCreate",
    )
    store = await ok(
        """mutation($i: StoreCreateInput!) { storeCreate(input: $i) {
            store { id } errors { code } } }""",
        {
            "i": {
                "code": "out1",
                "name": "Outage store",
                "regionCode": "310115",
                "address": "上海市浦东新区世纪大道100号",
                "partnerId": partner["partner"]["id"],
            }
        },
        "storeCreate",
    )
    product = await ok(
        """mutation($i: ProductCreateInput!) { productCreate(input: $i) {
            product { skus { id } } errors { code } } }""",
        {
            "i": {
                "code": "OUT",
                "name": "Tea",
                "skus": [
                    {
                        "code": "OUT-1",
                        "name": "Tea",
                        "suggestedRetailPrice": "10.00",
                        "costPrice": "4.00",
                    }
                ],
            }
        },
        "productCreate",
    )
    sku = product["product"]["skus"][0]["id"]
    await ok(
        """mutation($i: StockAdjustInput!) { stockAdjust(input: $i) {
            movement { id } errors { code } } }""",
        {
            "i": {
                "storeId": store["store"]["id"],
                "skuId": sku,
                "mode": "SET",
                "quantity": 10_000,
                "reason": "COUNT",
                "idempotencyKey": "outage-stock",
            }
        },
        "stockAdjust",
    )
    customer = await ok(
        """mutation($i: CustomerUpsertInput!) { customerUpsert(input: $i) {
            customer { id } errors { code } } }""",
        {"i": {"identities": [{"kind": "PHONE", "value": "13800009999"}]}},
        "customerUpsert",
    )
    template = await ok(
        """mutation($i: CouponTemplateCreateInput!) { couponTemplateCreate(input: $i) {
            couponTemplate { id } errors { code } } }""",
        {
            "i": {
                "name": "Outage ¥1",
                "kind": "FIXED_OFF",
                "claimChannel": "BOTH",
                "useChannel": "BOTH",
                "totalStock": 10_000,
                "discountAmount": "1.00",
                "validDays": 30,
                "perPersonLimit": 1000,
            }
        },
        "couponTemplateCreate",
    )
    return {
        "customer": customer["customer"]["id"],
        "template": template["couponTemplate"]["id"],
        "store": store["store"]["id"],
        "sku": sku,
    }


@pytest_asyncio.fixture
async def world(direct_url: str) -> AsyncIterator[World]:
    target = make_url(direct_url)
    proxy = Proxy((target.host or "127.0.0.1", target.port or 5432))
    await proxy.listen()
    # No prepared-statement cache: every statement's text crosses the proxy, so it can cut
    # at the audit entry's INSERT on any connection.
    through = target.set(
        port=proxy.port, query={"prepared_statement_cache_size": "0"}
    ).render_as_string(hide_password=False)
    keys = KeyRing.generate()
    settings = Settings(
        database_url=through,
        log_json=False,
        jwt_keys_json=keys.to_json(),
        db_connect_timeout=0.5,
        db_statement_timeout=1.0,
    )
    token = issue_access_token(
        keys,
        issuer=settings.issuer,
        client_id="tests",
        who=TokenSubject("user:1", Role.HQ_ADMIN, None, None, None),
        scope=" ".join(sorted(ROLE_SCOPES[Role.HQ_ADMIN])),
        ttl=600,
    )
    app = create_app(settings, cache=InProcessCache())
    direct = Database(direct_url)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://qudao.test",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    try:

        async def post(query: str, variables: dict[str, Any]) -> httpx.Response:
            return await http.post("/graphql", json={"query": query, "variables": variables})

        ids = await _setup(post)
        yield World(http, proxy, direct, **ids)
    finally:
        await http.aclose()
        await app.state.db.dispose()
        await direct.dispose()
        await proxy.close()


KINDS = ("pointsAdjust", "couponClaim", "orderCreate")


def key() -> str:
    return f"outage-{uuid.uuid4().hex[:16]}"


async def test_writes_survive_the_database_going_away(world: World, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    w, proxy = world, world.proxy
    started = time.perf_counter()
    for kind in KINDS:  # all well
        assert await w.write(kind, key()) is not None

    # Refused: the server is stopped. Every write fails, at once and honestly.
    proxy.refuse()
    failed = [(kind, key()) for kind in KINDS for _ in range(4)]
    results = await asyncio.gather(*(w.write(kind, k) for kind, k in failed))
    assert results == [None] * len(failed)
    read = await w.post(PROBE, {})
    assert read.status_code == 503
    assert read.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    await proxy.restore()
    first = await w.first_success()
    print(f"\nfirst success after refuse: {first * 1000:.0f} ms")
    assert first < 1.0
    for kind, k in failed:  # the clients retry with their keys
        await w.until_stored(kind, k)

    # Reset: live connections drop between requests; the pool replaces them unseen.
    proxy.reset()
    for kind in KINDS:
        assert await w.write(kind, key()) is not None

    # Hang: nothing answers; requests fail within the timeouts instead of piling up.
    proxy.hang()
    hung = [(kind, key()) for kind in KINDS]
    hang_started = time.perf_counter()
    results = await asyncio.gather(*(w.write(kind, k) for kind, k in hung))
    hang_took = time.perf_counter() - hang_started
    print(f"writes against a hung database failed after {hang_took:.1f} s")
    assert results == [None] * len(hung) and hang_took < 6
    await proxy.restore()
    first = await w.first_success()
    print(f"first success after hang: {first * 1000:.0f} ms")
    assert first < 1.0
    for kind, k in hung:
        await w.until_stored(kind, k)

    # The worst moments of one write: before its commit, after it (answer lost), and while
    # its audit entry is written.
    for pattern, after in (
        (b"COMMIT", False),
        (b"COMMIT", True),
        (b"INSERT INTO audit_event", False),
    ):
        for kind in KINDS:
            k = key()
            trigger = proxy.cut_at(pattern, after=after)
            assert await w.write(kind, k) is None, (pattern, after, kind)
            assert trigger.fired.is_set()
            stored = await _stored(w.direct, kind, k)
            # A lost COMMIT answer leaves the write saved; the other cuts leave nothing.
            assert stored == (1 if after else 0), (pattern, after, kind, stored)
            await w.until_stored(kind, k)
    print(
        f"fault test: {w.failures} failed answers, {len(w.acknowledged)} writes, "
        f"{time.perf_counter() - started:.1f} s"
    )

    await _check_stored_once_and_audited(w)
    _check_no_internals(w.bodies)
    async with w.direct.read() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    _check_no_internals(
        [
            json.dumps([r.actor, r.role, r.action, r.object_type, r.object_id, r.detail])
            for r in rows
        ]
    )
    refused = [r.detail for r in rows if r.detail.get("outcome") == "refused"]
    assert refused and all(set(d) == {"outcome", "code", "request_id"} for d in refused)
    assert {d["code"] for d in refused} == {"SERVICE_UNAVAILABLE"}
    _check_outage_log(caplog.records)


async def _stored(db: Database, kind: str, k: str) -> int:
    """How many times the write of key ``k`` is stored."""
    async with db.read() as session:
        if kind == "couponClaim":
            # A claim key is stored as a digest of the claim it belongs to.
            template = (await session.scalars(select(CouponTemplate.id))).one()
            customer = (await session.scalars(select(Customer.id))).one()
            raw = f"coupon-claim\x00{template}\x00{customer}\x00{k}"
            column, value = Coupon.claim_key, hashlib.sha256(raw.encode()).hexdigest()
        elif kind == "pointsAdjust":
            column, value = PointsEntry.source_id, f"hq:{k}"
        else:
            column, value = Order.idempotency_key, k
        stmt = select(func.count()).select_from(column.class_).where(column == value)
        return (await session.execute(stmt)).scalar_one()


STORED = {
    "pointsAdjust": "SELECT id FROM points_entry WHERE source_id LIKE 'hq:outage-%'",
    "couponClaim": "SELECT id FROM coupon WHERE claim_key IS NOT NULL",
    "orderCreate": "SELECT id FROM customer_order WHERE idempotency_key LIKE 'outage-%'",
}


async def _check_stored_once_and_audited(w: World) -> None:
    """Every acknowledged write is stored once, and every stored write of the test has its
    ``ok`` audit entry naming it."""
    for k, (kind, _) in w.acknowledged.items():
        assert await _stored(w.direct, kind, k) == 1, (kind, k)
    ok = select(AuditEvent).where(AuditEvent.detail["outcome"].as_string() == "ok")
    async with w.direct.read() as session:
        audited = Counter((row.action, row.object_id) for row in await session.scalars(ok))
        stored = {kind: (await session.scalars(text(sql))).all() for kind, sql in STORED.items()}
    assert sum(len(ids) for ids in stored.values()) == len(w.acknowledged)
    for kind, ids in stored.items():
        for pk in ids:
            assert audited[(kind, str(pk))] >= 1, f"{kind} {pk} stored without its audit entry"


def _check_no_internals(texts: list[str]) -> None:
    for body in texts:
        found = [word for word in INTERNALS if word in body]
        assert not found, (found, body)


def _check_outage_log(records: list[logging.LogRecord]) -> None:
    """One traceback per outage, a line for its end; never one per failed request."""
    tracebacks = [r for r in records if r.exc_info]
    outages = [r for r in records if r.getMessage().startswith("database unavailable:")]
    ends = [r for r in records if r.getMessage().startswith("database available again")]
    assert outages and all(r in outages for r in tracebacks), [r.getMessage() for r in tracebacks]
    assert len([r for r in outages if r.exc_info]) == len(ends)
    print(f"outages logged: {len(ends)}; tracebacks: {len(tracebacks)}")


async def test_oauth_answers_an_unreachable_database_with_a_retryable_503(world: World) -> None:
    """The token endpoint reads clients from the database: while it is gone, a 503 with
    Retry-After and no internals (not a 500), and the usual answer once it is back."""
    world.proxy.refuse()
    token = {"grant_type": "client_credentials"}
    response = await world.http.post("/oauth/token", data=token, auth=("nobody", "secret"))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "temporarily_unavailable"
    assert not [word for word in INTERNALS if word in response.text]
    await world.proxy.restore()
    response = await world.http.post("/oauth/token", data=token, auth=("nobody", "secret"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
