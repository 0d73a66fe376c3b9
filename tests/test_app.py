"""Health, readiness and request ids over HTTP."""

from __future__ import annotations

import json
import logging

import httpx

from api.app import create_app
from api.cache import RedisCache
from api.db import Database
from api.logs import JsonFormatter
from api.settings import Settings


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": True}}


async def test_readyz_is_503_when_database_or_redis_is_down():
    settings = Settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        redis_url="redis://127.0.0.1:1/0",
    )
    db = Database(settings.database_url)
    cache = RedisCache(settings.redis_url)
    app = create_app(settings, db=db, cache=cache)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            response = await http.get("/readyz")
    finally:
        await cache.close()
        await db.dispose()
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": False, "redis": False},
    }


async def test_request_id_is_echoed_or_generated(client):
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    too_long = await client.get("/healthz", headers={"X-Request-ID": "x" * 200})
    assert len(too_long.headers["x-request-id"]) == 32


async def test_access_log_lines_carry_the_request_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="qudao.http"):
        await client.get("/healthz", headers={"X-Request-ID": "trace-me"})
    (record,) = [r for r in caplog.records if r.name == "qudao.http"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-me"
    assert line["msg"] == "GET /healthz 200"
    assert line["status"] == 200 and "ms" in line


async def test_graphiql_in_a_browser(client):
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_queries_over_get_but_no_mutations(client):
    ok = await client.get("/graphql", params={"query": "{ partners { totalCount } }"})
    assert ok.status_code == 200 and ok.json()["data"] == {"partners": {"totalCount": 0}}
    refused = await client.get(
        "/graphql",
        params={
            "query": 'mutation { storeCreate(input: {code: "S1", name: "n", '
            'regionCode: "310115", address: "a"}) { errors { code } } }'
        },
    )
    assert refused.status_code in (400, 405)


async def test_anonymous_callers_must_sign_in(app, db):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as h:
        await _seed_one_partner(db)
        body = (await h.post("/graphql", json={"query": "{ partners { totalCount } }"})).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def _seed_one_partner(db) -> None:
    from api.partners import service
    from api.partners.models import PartnerType
    from api.seed import SEEDER

    async with db.transaction() as session:
        await service.create_partner(
            session, SEEDER, service.PartnerDraft("P1", "p", PartnerType.AGENT)
        )
