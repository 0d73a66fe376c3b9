"""Rate limits: per principal or address on /graphql, per address on the OAuth endpoints,
and the lockout of an email after failed logins.

Every app here is built from the ``settings`` fixture with small limits and its own cache, so
no test depends on another's counters. The Redis test builds two apps (two "processes") on
one Redis and checks they exhaust one budget together.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import httpx
import pytest_asyncio

from api.app import create_app
from api.auth import service
from api.auth.models import StaffUser
from api.auth.principal import Role
from api.auth.secrets import hash_password
from api.auth.tokens import TokenSubject, issue_access_token
from api.cache import Cache, InProcessCache, RedisCache
from api.settings import Settings
from tests.conftest import REDIS_URL, service_missing

BASE = "http://qudao.test"
TYPENAME = {"query": "{ __typename }"}
PASSWORD = "correct horse battery"
CALLBACK = "https://console.example.com/callback"
# What authlib's password grant answers to a wrong password (RFC 6749 would say invalid_grant).
WRONG_PASSWORD = "invalid_request"


def build(settings: Settings, db, cache: Cache | None = None, **changes: object):
    """An app with real authentication (no dev switch) and the given limits."""
    limited = replace(settings, **changes)
    return create_app(limited, db=db, cache=cache or InProcessCache())


@asynccontextmanager
async def caller(app, address: str = "203.0.113.7") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose requests reach the app from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


def token(app, subject: str = "user:1", role: Role = Role.HQ_ADMIN) -> str:
    """A fresh access token (new jti every call) from the app's own key ring."""
    return issue_access_token(
        app.state.keys,
        issuer=app.state.settings.issuer,
        client_id="tests",
        who=TokenSubject(subject, role),
        scope="partners:read",
        ttl=300,
    )


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def graphql(http: httpx.AsyncClient, access_token: str | None = None) -> httpx.Response:
    headers = bearer(access_token) if access_token else None
    return await http.post("/graphql", json=TYPENAME, headers=headers)


def assert_refused(response: httpx.Response, error: str, window: float) -> None:
    assert response.status_code == 429, response.text
    # delay-seconds (RFC 9110): a whole number, at least 1, at most the window.
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil(window)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error
    assert response.json()["error_description"]


async def statuses(http: httpx.AsyncClient, n: int, access_token: str | None = None) -> list[int]:
    return [(await graphql(http, access_token)).status_code for _ in range(n)]


# --- /graphql: per principal, or per address when anonymous --------------------------------------


async def test_anonymous_caller_over_the_limit_gets_429(db, settings, count_queries):
    app = build(settings, db, rate_limit=3, rate_window=60.0)
    async with caller(app) as http:
        assert await statuses(http, 3) == [200, 200, 200]
        with count_queries() as counter:
            refused = await graphql(http)
        assert_refused(refused, "rate_limited", 60.0)
        assert counter.count == 0  # refused before any GraphQL (or SQL) work
        assert (await http.get("/graphql", params=TYPENAME)).status_code == 429  # GET counts too
        # A token is another principal, with its own budget.
        assert await statuses(http, 3, token(app)) == [200, 200, 200]
    async with caller(app, "198.51.100.9") as elsewhere:
        assert (await graphql(elsewhere)).status_code == 200  # another address, another budget


async def test_tokens_of_one_subject_share_its_budget(db, settings):
    app = build(settings, db, rate_limit=3, rate_window=60.0)
    first, second = token(app, "user:1"), token(app, "user:1")
    assert first != second  # two logins of one user: different jti, same sub
    async with caller(app) as http:
        assert await statuses(http, 2, first) == [200, 200]
        assert await statuses(http, 1, second) == [200]
        assert_refused(await graphql(http, second), "rate_limited", 60.0)
        assert_refused(await graphql(http, first), "rate_limited", 60.0)
        # Another subject still gets through, and so does the anonymous budget of the address.
        assert await statuses(http, 1, token(app, "user:2", Role.MARKETER)) == [200]
        assert await statuses(http, 1) == [200]
    async with caller(app, "198.51.100.9") as elsewhere:
        # The budget follows the subject, not the address it calls from.
        assert_refused(await graphql(elsewhere, first), "rate_limited", 60.0)


async def test_the_window_resets(db, settings):
    now = [1000.0]  # the cache's clock, stepped by hand: no request races the window's end
    app = build(settings, db, InProcessCache(clock=lambda: now[0]), rate_limit=2, rate_window=0.3)
    async with caller(app) as http:
        assert await statuses(http, 2) == [200, 200]
        refused = await graphql(http)
        assert_refused(refused, "rate_limited", 0.3)
        assert refused.headers["retry-after"] == "1"  # never 0, even under a second left
        now[0] += 0.29
        assert (await graphql(http)).status_code == 429  # still the same window
        now[0] += 0.05
        assert await statuses(http, 3) == [200, 200, 429]  # a new window, a full budget


async def test_processes_on_one_redis_share_one_limit(db, settings):
    if not REDIS_URL:
        service_missing("Redis", "set QUDAO_TEST_REDIS_URL to test a limit shared over Redis")
    prefix = f"qudao-test-{uuid.uuid4().hex}:"  # the counters it leaves expire with the window
    caches = [RedisCache(REDIS_URL, prefix=prefix), RedisCache(REDIS_URL, prefix=prefix)]
    try:
        # Two API processes: separate apps, separate Redis clients, the same settings.
        apps = [build(settings, db, cache, rate_limit=3, rate_window=60.0) for cache in caches]
        async with caller(apps[0]) as one, caller(apps[1]) as two:
            alternating = [one, two, one, two]
            answers = [(await graphql(http)).status_code for http in alternating]
            assert answers == [200, 200, 200, 429]
            assert_refused(await graphql(one), "rate_limited", 60.0)
            # The same for a principal: its budget is one across the processes.
            access_token = token(apps[0])
            answers = [(await graphql(http, access_token)).status_code for http in alternating]
            assert answers == [200, 200, 200, 429]
    finally:
        for cache in caches:
            await cache.close()

    # Contrast: with a cache per process, each process would allow its own three.
    apps = [build(settings, db, InProcessCache(), rate_limit=3) for _ in range(2)]
    async with caller(apps[0]) as one, caller(apps[1]) as two:
        answers = [(await graphql(http)).status_code for http in [one, two] * 3]
        assert answers == [200] * 6


async def test_health_endpoints_are_never_rate_limited(db, settings):
    app = build(settings, db, rate_limit=1, oauth_rate_limit=1)
    async with caller(app) as http:
        assert await statuses(http, 2) == [200, 429]
        await http.post("/oauth/token", data={"grant_type": "client_credentials"})
        limited = await http.post("/oauth/token", data={"grant_type": "client_credentials"})
        assert limited.status_code == 429
        for _ in range(10):
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200


# --- the OAuth endpoints: a tighter limit per address -------------------------------------------


@dataclass
class Accounts:
    console_id: str
    console_secret: str
    spa_id: str


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 takes ~0.1 s: once per session, not per user


@pytest_asyncio.fixture
async def accounts(db) -> Accounts:
    async with db.transaction() as session:
        for email, role in [
            ("admin@hq.example.com", Role.HQ_ADMIN),
            ("marketer@hq.example.com", Role.MARKETER),
        ]:
            session.add(StaffUser(email=email, password_hash=_password_hash(), role=role))
        console = await service.create_client(
            session,
            name="Console backend",
            grant_types={"password", "refresh_token"},
            first_party=True,
        )
        spa = await service.create_client(
            session,
            name="Web console",
            grant_types={"authorization_code", "refresh_token"},
            redirect_uris=[CALLBACK],
            first_party=True,
            public=True,
        )
    assert console.secret is not None
    return Accounts(console.client.client_id, console.secret, spa.client.client_id)


def authorize_url(spa_id: str) -> str:
    return (
        f"/oauth/authorize?response_type=code&client_id={spa_id}&redirect_uri={CALLBACK}"
        f"&code_challenge={'a' * 43}&code_challenge_method=S256"
    )


async def test_oauth_endpoints_have_their_own_tighter_limit(db, settings, accounts):
    app = build(settings, db, rate_limit=100, oauth_rate_limit=3, oauth_rate_window=60.0)
    wrong_client = {"grant_type": "client_credentials"}
    async with caller(app) as http:
        for _ in range(3):
            answer = await http.post("/oauth/token", data=wrong_client, auth=("nobody", "x"))
            assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
        assert_refused(
            await http.post("/oauth/token", data=wrong_client, auth=("nobody", "x")),
            "slow_down",
            60.0,
        )
        # One budget per address for every token endpoint, the login form's POST included.
        for path in ("/oauth/revoke", "/oauth/introspect"):
            assert_refused(await http.post(path, data={"token": "x"}), "slow_down", 60.0)
        login = {"email": "admin@hq.example.com", "password": PASSWORD}
        assert_refused(
            await http.post(authorize_url(accounts.spa_id), data=login), "slow_down", 60.0
        )
        assert (await http.get(authorize_url(accounts.spa_id))).status_code == 200  # the form
        # GraphQL keeps its own budget.
        assert await statuses(http, 5) == [200] * 5
    async with caller(app, "198.51.100.9") as elsewhere:
        answer = await elsewhere.post("/oauth/token", data=wrong_client, auth=("nobody", "x"))
        assert answer.status_code == 401


async def password_login(
    http: httpx.AsyncClient, accounts: Accounts, email: str, password: str
) -> httpx.Response:
    return await http.post(
        "/oauth/token",
        data={"grant_type": "password", "username": email, "password": password},
        auth=(accounts.console_id, accounts.console_secret),
    )


async def test_failed_logins_lock_the_email_for_the_window(db, settings, accounts):
    # The window must outlast a few argon2 checks on a loaded CI machine: with 0.4 s the lock
    # could lift before the locked attempts were even made.
    window = 3.0
    app = build(settings, db, failed_login_limit=2, failed_login_window=window)
    async with caller(app) as http:
        first_attempt = time.monotonic()  # attempts are counted before the password check
        for _ in range(2):
            wrong = await password_login(http, accounts, "admin@hq.example.com", "guess guess!")
            assert wrong.status_code == 400 and wrong.json()["error"] == WRONG_PASSWORD, wrong.text
        # Locked: even the right password is refused now, however the email is spelled.
        for email in ("admin@hq.example.com", "  ADMIN@hq.example.com "):
            assert_refused(
                await password_login(http, accounts, email, PASSWORD), "too_many_attempts", window
            )
        # Another email is not affected.
        other = await password_login(http, accounts, "marketer@hq.example.com", PASSWORD)
        assert other.status_code == 200, other.text
        await asyncio.sleep(max(0.0, window + 0.1 - (time.monotonic() - first_attempt)))
        again = await password_login(http, accounts, "admin@hq.example.com", PASSWORD)
        assert again.status_code == 200, again.text
        assert again.json()["access_token"]


async def test_lockout_retry_after_is_the_time_left(db, settings, accounts):
    cache = InProcessCache()
    app = build(settings, db, cache, failed_login_limit=2, failed_login_window=900.0)
    # Two failures counted 898 s ago would look like this: the lock lifts in 2 s. (White box:
    # the store's counter key; the public way there is a 15-minute wait.)
    await cache.set("login-attempts:admin@hq.example.com", "2", ttl=2.0)
    async with caller(app) as http:
        locked = await password_login(http, accounts, "admin@hq.example.com", PASSWORD)
    assert locked.status_code == 429 and locked.json()["error"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) <= 2


async def test_concurrent_failed_logins_are_bounded_by_the_lockout(db, settings, accounts):
    app = build(settings, db, failed_login_limit=1, failed_login_window=60.0)
    async with caller(app) as http:
        answers = await asyncio.gather(
            *(
                password_login(http, accounts, "admin@hq.example.com", f"guess {i}!")
                for i in range(3)
            )
        )
    checked = [a for a in answers if a.status_code == 400]  # the password was tried, and wrong
    assert [a.json()["error"] for a in checked] == [WRONG_PASSWORD] * len(checked)
    assert [a.status_code for a in answers].count(429) == len(answers) - len(checked)
    assert len(checked) <= 1, f"{len(checked)} passwords tried; the limit is 1 per window"
