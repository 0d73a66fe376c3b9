"""Bad input gets a clear, coded error and never a 500 or a traceback; expensive queries are
refused before a single SQL statement runs."""

from __future__ import annotations

import pytest

from api.partners import service
from tests.factories import create_partner


def only_error(body: dict) -> dict:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


async def test_malformed_query_is_a_parse_error(gql):
    error = only_error(await gql.raw("{ partners( { }"))
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert error["message"].startswith("Syntax Error")


async def test_unknown_field_is_a_validation_error(gql):
    error = only_error(await gql.raw("{ partners { edges { node { nope } } } }"))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "nope" in error["message"]


async def test_bad_scalar_variable_is_a_validation_error_not_an_internal_one(gql):
    query = """mutation($d: Date) { partnerCreate(input: {code: "XY", name: "n", type: AGENT,
      contractStartsOn: $d}) { errors { code } } }"""
    error = only_error(await gql.raw(query, {"d": "not-a-date"}))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Date" in error["message"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ partners(first: 101) { nodes { id } } }", None),
        ("query($n: Int) { partners(last: $n) { nodes { id } } }", {"n": 500}),
        ("{ partners(first: -1) { nodes { id } } }", None),
        ("{ partners(first: 1) { nodes { stores(first: 1000) { nodes { id } } } } }", None),
    ],
)
async def test_page_size_over_the_cap_is_refused_before_execution(
    gql, count_queries, query, variables
):
    with count_queries() as counter:
        error = only_error(await gql.raw(query, variables))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "between 0 and 100" in error["message"]
    assert counter.count == 0


async def test_first_and_last_together_are_refused(gql):
    body = await gql.raw("{ partners(first: 1, last: 1) { nodes { id } } }")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "either `first` or `last`" in body["errors"][0]["message"]


async def test_cost_is_reported_and_multiplies_nested_page_sizes(gql):
    # 1 (partners) + 50 x [edges 1 + node 1 + stores (1 + 10 x nodes 1)] = 1 + 50 x 13
    body = await gql.raw(
        "{ partners(first: 50) { edges { node { id stores(first: 10) { nodes { name } } } } } }"
    )
    assert "errors" not in body
    assert body["extensions"]["cost"] == {"requested": 651, "limit": 25_000}


async def test_pageinfo_and_total_count_are_not_multiplied(gql):
    # 1 + pageInfo 1 + 100 x nodes 1; totalCount is a scalar (0)
    body = await gql.raw(
        "{ partners(first: 100) { totalCount pageInfo { hasNextPage } nodes { id } } }"
    )
    assert body["extensions"]["cost"]["requested"] == 102


async def test_cost_over_the_limit_is_refused_before_execution(gql, count_queries):
    query = """{ partners(first: 100) { nodes { stores(first: 100) { nodes {
        partner { children(first: 100) { nodes { id } } } } } } } }"""
    with count_queries() as counter:
        body = await gql.raw(query)
    error = only_error(body)
    assert error["extensions"]["code"] == "COST_LIMIT_EXCEEDED"
    assert body["extensions"]["cost"]["requested"] > 25_000
    assert counter.count == 0


async def test_fragments_are_costed_like_inline_selections(gql):
    inline = await gql.raw(
        "{ partners(first: 20) { nodes { stores(first: 5) { nodes { id } } } } }"
    )
    spread = await gql.raw(
        """{ partners(first: 20) { nodes { ...P } } }
           fragment P on Partner { stores(first: 5) { nodes { id } } }"""
    )
    assert spread["extensions"]["cost"] == inline["extensions"]["cost"]


async def test_depth_limit(gql):
    deep = "{ partners { nodes { " + "parent { " * 12 + "id" + " }" * 12 + " } } }"
    error = only_error(await gql.raw(deep))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "exceeds maximum operation depth" in error["message"]


async def test_alias_limit(gql):
    aliases = " ".join(f"a{i}: partners(first: 1) {{ totalCount }}" for i in range(31))
    error = only_error(await gql.raw("{ " + aliases + " }"))
    assert "aliases" in error["message"]


async def test_token_limit(gql):
    fields = " ".join("__typename" for _ in range(6000))
    error = only_error(await gql.raw("{ " + fields + " }"))
    assert "token" in error["message"].lower()


async def test_introspection_is_not_refused_by_the_depth_limit(gql):
    # GraphiQL's introspection query nests TypeRef.ofType seven levels deep.
    of_type = "ofType { " * 7 + "name" + " }" * 7
    body = await gql.raw("{ __schema { types { fields { type { " + of_type + " } } } } }")
    assert "errors" not in body


async def test_malformed_and_wrong_type_ids(gql):
    partner = await create_partner(gql, "P1")
    bad = await gql.raw('{ node(id: "not-an-id") { id } }')
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    wrong_type = await gql.raw("query($id: ID!) { store(id: $id) { id } }", {"id": partner["id"]})
    assert wrong_type["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Expected a Store ID" in wrong_type["errors"][0]["message"]


async def test_malformed_cursor(gql):
    body = await gql.raw('{ partners(first: 2, after: "garbage!") { nodes { id } } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Invalid cursor" in body["errors"][0]["message"]


async def test_unexpected_errors_are_masked_and_logged(gql, monkeypatch, caplog):
    def explode(*_args, **_kwargs):
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    monkeypatch.setattr(service, "partners_query", explode)
    body = await gql.raw("{ partners { nodes { id } } }")
    assert body["errors"] == [
        {
            "message": "Internal server error.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["partners"],
            "extensions": {"code": "INTERNAL_SERVER_ERROR"},
        }
    ]
    assert "hunter2" not in str(body)
    assert any("hunter2" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_a_repeated_query_is_validated_once(gql, settings):
    from strawberry.extensions.validation_cache import _get_validate_cache

    cache = _get_validate_cache(settings.parser_cache_size)
    query = "{ partners(first: 3) { nodes { id name } } }"
    await gql(query)
    hits = cache.cache_info().hits
    await gql(query)
    await gql(query)
    assert cache.cache_info().hits == hits + 2


# --- the database unavailable ---------------------------------------------------------------

DRIVER_TEXT = "[Errno 111] Connect call failed ('10.0.0.7', 5432) [SQL: SELECT secret]"


def refuse(*_args, **_kwargs):
    raise ConnectionRefusedError(111, DRIVER_TEXT)


async def test_an_unreachable_database_is_503_service_unavailable(client, monkeypatch, caplog):
    monkeypatch.setattr(service, "partners_query", refuse)
    for _ in range(3):
        response = await client.post("/graphql", json={"query": "{ partners { nodes { id } } }"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        (error,) = response.json()["errors"]
        assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfter": 1}
        assert error["message"] == "The service is temporarily unavailable; try again shortly."
        assert "Errno" not in response.text and "SQL" not in response.text
    # One traceback for the outage, not one per request.
    assert len([r for r in caplog.records if r.exc_info]) == 1


async def test_what_succeeded_makes_it_a_200(gql, client, monkeypatch):
    from api.partners import loaders

    partner = await create_partner(gql, "P1")
    monkeypatch.setattr(loaders, "partners_by_pk", refuse)
    response = await client.post(
        "/graphql",
        json={
            "query": "query($id: ID!) { partner(id: $id) { id } viewer { subject } }",
            "variables": {"id": partner["id"]},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"partner": None, "viewer": {"subject": "user:1"}}
    assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


async def test_a_failed_write_is_audited_with_its_code_only(gql, client, monkeypatch):
    monkeypatch.setattr(service, "create_partner", refuse)
    response = await client.post(
        "/graphql",
        json={
            "query": 'mutation { partnerCreate(input: {code: "X1", name: "x", type: AGENT}) '
            "{ partner { id } } }"
        },
    )
    assert response.status_code == 503
    events = await gql("{ auditEvents { nodes { action objectId detail } } }")
    (event,) = events["auditEvents"]["nodes"]
    assert event["action"] == "partnerCreate" and event["objectId"] is None
    assert set(event["detail"]) == {"outcome", "code", "request_id"}
    assert (event["detail"]["outcome"], event["detail"]["code"]) == (
        "refused",
        "SERVICE_UNAVAILABLE",
    )


async def test_reads_that_cannot_be_audited_are_not_answered_and_not_invalid(
    gql, monkeypatch, caplog
):
    from api.graphql import audit

    await create_partner(gql, "X2", contact={"phone": "13912345678"})

    async def broken(*_args, **_kwargs):
        raise RuntimeError("audit INSERT failed: secret")

    monkeypatch.setattr(audit, "record", broken)
    body = await gql.raw("{ partners { nodes { contact { phone } } } }")
    # Raised by an extension, with no path: a bug, not the client's invalid request.
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in str(body) and "13912345678" not in str(body)
    # A write that committed (with its audit entry) is answered even so.
    created = await gql.raw(
        'mutation { partnerCreate(input: {code: "X3", name: "x", type: AGENT}) '
        "{ partner { code } } }"
    )
    assert created["data"] == {"partnerCreate": {"partner": {"code": "X3"}}}
    assert "errors" not in created
