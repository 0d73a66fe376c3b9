"""Generated GraphQL against the ASGI app, as every role: no answer may be a 5xx or carry an
INTERNAL_SERVER_ERROR, whatever the query, the mutation or the values.

Queries and mutations come from hypothesis-graphql, built from the schema itself (so new
fields are fuzzed as soon as they exist); ids are real ones of a small seeded world mixed
with garbage, so the generated calls reach the services and not only the id decoder.

CI runs a bounded number of cases per role and kind (QUDAO_FUZZ_EXAMPLES, 12 by default,
which keeps this file well under a minute on SQLite); `make fuzz` runs many more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import graphql
import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries

from api.app import create_app
from api.auth.principal import Role
from api.cache import InProcessCache
from api.graphql.ids import decode_id, encode_id
from api.graphql.schema import build_schema
from api.settings import Settings
from tests.conftest import GraphQLClient
from tests.factories import create_customer, create_partner, create_store

EXAMPLES = int(os.environ.get("QUDAO_FUZZ_EXAMPLES", "12"))
SCHEMA = build_schema(Settings())._schema
ROLES = ("hq", "partner_admin", "store_staff", "member", "anonymous")

# Real ids of the seeded world (filled by the fixture) and ids that name nothing, or
# nothing valid.
REAL_IDS: list[str] = []
GARBAGE_IDS = st.one_of(
    st.text(max_size=24),
    st.builds(
        encode_id,
        st.sampled_from(["Partner", "Store", "Customer", "Order", "Nope"]),
        st.integers(min_value=1, max_value=2**31 - 1),
    ),
    st.just(encode_id("Customer", 1) + "="),
)


def _ids() -> st.SearchStrategy[graphql.ValueNode]:
    real = st.deferred(lambda: st.sampled_from(REAL_IDS))
    return st.one_of(real, real, GARBAGE_IDS).map(nodes.String)


def _json_node(value: Any) -> graphql.ValueNode:
    if isinstance(value, dict):
        return graphql.ObjectValueNode(
            fields=tuple(
                graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=_json_node(v))
                for k, v in value.items()
            )
        )
    if isinstance(value, list):
        return graphql.ListValueNode(values=tuple(_json_node(v) for v in value))
    if isinstance(value, bool):
        return graphql.BooleanValueNode(value=value)
    if isinstance(value, int):
        return graphql.IntValueNode(value=str(value))
    if isinstance(value, float):
        return graphql.FloatValueNode(value=repr(value))
    if value is None:
        return graphql.NullValueNode()
    return graphql.StringValueNode(value=str(value))


_NAMES = st.text(string.ascii_letters, min_size=1, max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=8,
)
NOW = datetime.now(UTC)
OFFSETS = [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]
CUSTOM_SCALARS = {
    "ID": _ids(),
    "Date": st.one_of(st.dates().map(lambda d: d.isoformat()), st.text(max_size=12)).map(
        nodes.String
    ),
    "DateTime": st.one_of(
        # Near now, where the data is, and anywhere at all, in any offset (year 1 at +14:00
        # is before the first instant a datetime can hold in UTC).
        st.datetimes(
            min_value=(NOW - timedelta(days=800)).replace(tzinfo=None),
            max_value=(NOW + timedelta(days=30)).replace(tzinfo=None),
            timezones=st.just(UTC),
        ).map(lambda d: d.isoformat()),
        st.datetimes(timezones=st.sampled_from(OFFSETS)).map(lambda d: d.isoformat()),
        st.text(max_size=25),
    ).map(nodes.String),
    "Decimal": st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.decimals(min_value=Decimal("-1000"), max_value=Decimal("100000"), places=2).map(str),
        st.text(max_size=10),
    ).map(nodes.String),
    "JSON": _JSON.map(_json_node),
}


@dataclasses.dataclass
class World:
    clients: dict[str, httpx.AsyncClient]


@pytest_asyncio.fixture
async def world(db: Any, settings: Any, issue_token: Callable[..., str]) -> Any:
    # No rate limit in the way: the fuzzer sends hundreds of requests a minute.
    fuzz_settings = dataclasses.replace(settings, rate_limit=10**9)
    app = create_app(fuzz_settings, db=db, cache=InProcessCache())
    transport = httpx.ASGITransport(app=app)

    def client(token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=transport, base_url="http://qudao.test", headers=headers)

    hq = client(issue_token(Role.HQ_ADMIN, subject="user:1"))
    gql = GraphQLClient(hq)
    partner = await create_partner(gql, "FZ")
    store = await create_store(gql, "FZ-1", partner["id"])
    customer = await create_customer(gql, "13800000001")
    partner_pk = decode_id(partner["id"])[1]
    store_pk = decode_id(store["id"])[1]
    customer_pk = decode_id(customer["id"])[1]
    REAL_IDS[:] = [partner["id"], store["id"], customer["id"]]
    clients = {
        "hq": hq,
        "partner_admin": client(issue_token(Role.PARTNER_ADMIN, partner_id=partner_pk)),
        "store_staff": client(
            issue_token(Role.STORE_STAFF, store_id=store_pk, partner_id=partner_pk)
        ),
        "member": client(
            issue_token(Role.MEMBER, customer_id=customer_pk, subject=f"customer:{customer_pk}")
        ),
        "anonymous": client(None),
    }
    try:
        yield World(clients)
    finally:
        for http in clients.values():
            await http.aclose()


def check(response: httpx.Response, document: str) -> None:
    assert response.status_code < 500, f"{response.status_code} for:\n{document}\n{response.text}"
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
        assert "INTERNAL_SERVER_ERROR" not in codes, f"for:\n{document}\n{json.dumps(body)[:2000]}"


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure names its document
    derandomize=os.environ.get("QUDAO_FUZZ_RANDOM") is None,
    database=None,  # nothing to replay: the documents are sent after they are all drawn
)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["query", "mutation"])
async def test_generated_operations_never_fail_internally(world: World, role: str, kind: str):
    strategy = (queries if kind == "query" else mutations)(
        SCHEMA, custom_scalars=CUSTOM_SCALARS, allow_x00=True, codec=None
    )
    http = world.clients[role]
    loop = asyncio.get_running_loop()
    documents: list[str] = []

    @FUZZ
    @given(strategy)
    def collect(document: str) -> None:
        documents.append(document)

    # hypothesis drives a synchronous test: collect the documents, then send them here.
    await loop.run_in_executor(None, collect)
    for document in documents:
        response = await http.post("/graphql", json={"query": document})
        check(response, document)
