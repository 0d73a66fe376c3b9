"""Redis down is not the API down. While Redis is unreachable: reads and writes are served
(access tokens are accepted without the deny-list check for a grace window, then refused
with 503 and Retry-After, never a 500), rate limits count per process, a dead Redis is
dialled at most once per retry interval, the outage is one log line (and its end another),
/readyz says what is degraded, and subscriptions pick up again when Redis is back.

The fault test runs a redis-server of its own on a free port, kills it under load through
the ASGI app and restarts it: no 500, every acknowledged write stored exactly once, reads
served throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from api.app import create_app
from api.auth import service as auth_service
from api.auth.principal import Role
from api.cache import CacheUnavailable, RedisCache
from tests.conftest import service_missing
from tests.factories import create_customer

PASSWORD = "correct horse battery"
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once
READ = "{ partners(first: 5) { totalCount nodes { id } } }"
ADJUST = """mutation($input: PointsAdjustInput!) { pointsAdjust(input: $input) {
    entry { id } errors { code } } }"""


@pytest_asyncio.fixture
async def dead_redis_app(db: Any, settings: Any) -> AsyncIterator[Any]:
    cache = RedisCache(DEAD_REDIS, f"qudao-test:{uuid.uuid4().hex}:", retry_interval=60)
    app = create_app(dataclasses.replace(settings, redis_url=DEAD_REDIS), db=db, cache=cache)
    try:
        yield app
    finally:
        await cache.close()


def client_of(app: Any, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qudao.test", headers=headers
    )


async def test_reads_and_writes_are_served_while_redis_is_down(dead_redis_app, issue_token, caplog):
    caplog.set_level(logging.INFO)
    token = issue_token(Role.HQ_ADMIN, subject="user:1")
    async with client_of(dead_redis_app, token) as http:
        for _ in range(20):
            response = await http.post("/graphql", json={"query": READ})
            assert response.status_code == 200, response.text
            assert response.json()["data"]["partners"]["totalCount"] == 0
        created = await http.post(
            "/graphql",
            json={
                "query": 'mutation { partnerCreate(input: {code: "P1", name: "P", type: AGENT}) '
                "{ partner { code } errors { code } } }"
            },
        )
        assert created.json()["data"]["partnerCreate"] == {"partner": {"code": "P1"}, "errors": []}
    async with client_of(dead_redis_app) as http:
        anonymous = await http.post("/graphql", json={"query": READ})
        assert anonymous.status_code == 200
    outage_lines = [r for r in caplog.records if "redis is unreachable" in r.getMessage()]
    assert len(outage_lines) == 1  # one line for the outage, not one per request
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_dead_redis_is_dialled_once_per_retry_interval(dead_redis_app, issue_token):
    cache: RedisCache = dead_redis_app.state.cache
    dials = 0
    failed = cache.breaker.failed

    def counting(error: BaseException) -> CacheUnavailable:
        nonlocal dials
        dials += 1
        return failed(error)

    cache.breaker.failed = counting  # type: ignore[method-assign]
    async with client_of(dead_redis_app, issue_token(Role.HQ_ADMIN)) as http:
        for _ in range(50):
            assert (await http.post("/graphql", json={"query": READ})).status_code == 200
    # The first request dials (deny list) and opens the breaker; the retry interval is a
    # minute: nothing dials again, neither the deny list nor the rate limiter.
    assert dials == 1


async def test_rate_limits_still_hold_per_process(db, settings, issue_token):
    cache = RedisCache(DEAD_REDIS, f"qudao-test:{uuid.uuid4().hex}:", retry_interval=60)
    limited = dataclasses.replace(settings, redis_url=DEAD_REDIS, rate_limit=3)
    app = create_app(limited, db=db, cache=cache)
    try:
        async with client_of(app, issue_token(Role.HQ_ADMIN)) as http:
            statuses = [
                (await http.post("/graphql", json={"query": READ})).status_code for _ in range(5)
            ]
    finally:
        await cache.close()
    assert statuses == [200, 200, 200, 429, 429]


async def test_past_the_grace_window_tokens_are_refused_with_503_and_retry_after(
    db, settings, issue_token
):
    cache = RedisCache(DEAD_REDIS, f"qudao-test:{uuid.uuid4().hex}:", retry_interval=30)
    strict = dataclasses.replace(settings, redis_url=DEAD_REDIS, revocation_grace=0)
    app = create_app(strict, db=db, cache=cache)
    try:
        async with client_of(app, issue_token(Role.HQ_ADMIN)) as http:
            responses = [await http.post("/graphql", json={"query": READ}) for _ in range(2)]
        async with client_of(app) as http:
            anonymous = await http.post("/graphql", json={"query": READ})
    finally:
        await cache.close()
    for response in responses:
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert 1 <= int(response.headers["retry-after"]) <= 30
    assert anonymous.status_code == 200  # no token, no deny list to read


async def test_readyz_says_what_is_degraded(dead_redis_app):
    async with client_of(dead_redis_app) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"] == {"database": True, "redis": False}
    assert any("rate limits" in line for line in body["degraded"])
    assert any("deny list" in line for line in body["degraded"])


async def test_oauth_logins_work_and_revocation_is_503_while_redis_is_down(dead_redis_app, db):
    async with db.transaction() as session:
        await auth_service.create_user(
            session, email="admin@hq.example.com", password=PASSWORD, role=Role.HQ_ADMIN
        )
        console = await auth_service.create_client(
            session,
            name="Console backend",
            grant_types={"password", "refresh_token"},
            first_party=True,
        )
    credentials = (console.client.client_id, console.secret)
    async with client_of(dead_redis_app) as http:
        login = await http.post(
            "/oauth/token",
            auth=credentials,
            data={
                "grant_type": "password",
                "username": "admin@hq.example.com",
                "password": PASSWORD,
            },
        )
        assert login.status_code == 200, login.text  # lockout counted here, login stands
        token = login.json()["access_token"]
        # Revoking an access token writes the deny list: it cannot be done now, and saying
        # "revoked" would be a lie. The client is told to retry.
        revoke = await http.post(
            "/oauth/revoke",
            auth=credentials,
            data={"token": token, "token_type_hint": "access_token"},
        )
    assert revoke.status_code == 503, revoke.text
    assert revoke.json()["error"] == "temporarily_unavailable"
    assert "retry-after" in revoke.headers


# --- the fault test: a real Redis, killed and restarted under load -----------------------


class RedisServer:
    """A redis-server of this test's own, on a free port, without persistence."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.pidfile = directory / "redis.pid"
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.pidfile.exists():
            with Path(self.pidfile).open() as file:
                pid = int(file.read().strip())
            self.pidfile.unlink()
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.02)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        service_missing("Redis", "redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclasses.dataclass
class Load:
    """What the clients saw, per phase."""

    phase: str = "before"
    reads: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    acknowledged: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0

    def served(self) -> None:
        self.reads[self.phase] = self.reads.get(self.phase, 0) + 1


async def reader(http: httpx.AsyncClient, load: Load, stop: asyncio.Event) -> None:
    while not stop.is_set():
        response = await http.post("/graphql", json={"query": READ})
        body = response.json() if response.status_code == 200 else None
        if body is None or "errors" in body:
            load.failures.append(f"read {response.status_code} {response.text[:200]}")
        else:
            load.served()
        await asyncio.sleep(0)


async def writer(
    http: httpx.AsyncClient, load: Load, stop: asyncio.Event, customer_id: str, name: str
) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        key = f"{name}-{number}"
        load.attempts += 1
        variables = {
            "input": {
                "customerId": customer_id,
                "amount": 5,
                "reason": f"load {key}",
                "idempotencyKey": key,
            }
        }
        response = await http.post("/graphql", json={"query": ADJUST, "variables": variables})
        if response.status_code != 200:
            load.failures.append(f"write {response.status_code} {response.text[:200]}")
            continue
        body = response.json()
        if "errors" in body or body["data"]["pointsAdjust"]["errors"]:
            load.failures.append(f"write {body}")
            continue
        load.acknowledged.append(key)


async def test_redis_killed_and_restarted_under_load(
    redis_server, db, settings, issue_token, gql, caplog
):
    caplog.set_level(logging.INFO)
    customer = await create_customer(gql, "13800000001")
    prefix = f"qudao-test:{uuid.uuid4().hex}:"
    cache = RedisCache(redis_server.url, prefix, retry_interval=0.2)
    app = create_app(dataclasses.replace(settings, redis_url=redis_server.url), db=db, cache=cache)
    load, stop = Load(), asyncio.Event()
    token = issue_token(Role.HQ_ADMIN, subject="user:1")
    async with client_of(app, token) as http:
        tasks = [asyncio.create_task(reader(http, load, stop)) for _ in range(3)] + [
            asyncio.create_task(writer(http, load, stop, customer["id"], f"w{n}")) for n in range(3)
        ]
        try:
            await asyncio.sleep(1.0)
            redis_server.kill()
            load.phase = "outage"
            await asyncio.sleep(1.5)
            redis_server.start()
            load.phase = "after"
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        ready = (await http.get("/readyz")).json()
    await cache.close()

    assert load.failures == []  # no 5xx, no INTERNAL_SERVER_ERROR, no refused write
    assert all(load.reads.get(phase, 0) > 0 for phase in ("before", "outage", "after")), load.reads
    assert ready["status"] == "ready"
    # Every acknowledged write is stored, once; nothing else is.
    found = await gql(
        "query($id: ID!) { customer(id: $id) { points { balance } pointsLedger { totalCount } } }",
        {"id": customer["id"]},
    )
    assert len(load.acknowledged) == load.attempts == len(set(load.acknowledged))
    assert found["customer"]["points"]["balance"] == 5 * len(load.acknowledged)
    assert found["customer"]["pointsLedger"]["totalCount"] == len(load.acknowledged)
    # One line when Redis went away, one when it came back; nothing at error level.
    messages = [r.getMessage() for r in caplog.records if r.name == "api.cache"]
    assert sum("redis is unreachable" in m for m in messages) == 1, messages
    assert sum("redis answers again" in m for m in messages) == 1, messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_subscription_picks_up_again_after_redis_restarts(redis_server):
    prefix = f"qudao-test:{uuid.uuid4().hex}:"
    subscriber = RedisCache(redis_server.url, prefix, retry_interval=0.1)
    publisher = RedisCache(redis_server.url, prefix, retry_interval=0.1)
    try:
        async with subscriber.subscribe("store:1") as messages:
            await publisher.publish("store:1", "before")
            async with asyncio.timeout(5):
                assert await anext(messages) == "before"
            redis_server.kill()
            with pytest.raises(CacheUnavailable):
                await publisher.publish("store:1", "lost")  # nobody could hear it anyway
            redis_server.start()
            waiting = asyncio.create_task(anext(messages))
            async with asyncio.timeout(5):
                while not waiting.done():  # until the subscriber is subscribed again
                    with_redis = await publisher.ping()
                    if with_redis:
                        await publisher.publish("store:1", "after")
                    await asyncio.sleep(0.05)
            assert waiting.result() == "after"
    finally:
        await subscriber.close()
        await publisher.close()
