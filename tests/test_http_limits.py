"""Malformed, oversized and stalled requests: each answered with a 4xx and a reason, never a
500, and the connection is kept for the client's next request (a 500 used to drop it)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from api.app import create_app
from api.cache import InProcessCache
from tests.subscriptions.conftest import serve

QUERY = "{ __typename }"


def body_with(value: str) -> bytes:
    """A request whose variable (a JSON attribute of a customer) is ``value``, verbatim."""
    query = (
        'mutation($v: JSON) { customerUpsert(input: {name: "Ann", attributes: $v}) '
        "{ errors { code } } }"
    )
    return ('{"query": ' + json.dumps(query) + ', "variables": {"v": ' + value + "}}").encode()


MALFORMED = {
    "invalid UTF-8": (b'{"query": "{ __typename \xff }"}', "not valid UTF-8"),
    "top-level null": (b"null", "must be one JSON object"),
    "top-level number": (b"42", "must be one JSON object"),
    "top-level string": (b'"{ __typename }"', "must be one JSON object"),
    "top-level array": (b'[{"query": "{ __typename }"}]', "must be one JSON object"),
    "nested 1,000 deep": (body_with("[" * 1000 + "]" * 1000), "nested too deeply"),
    "an integer of 5,000 digits": (body_with("1" * 5000), "cannot be read"),
    "NaN": (body_with("NaN"), "NaN, which is not a JSON number"),
    "Infinity": (body_with("-Infinity"), "-Infinity, which is not a JSON number"),
    "not JSON": (b'{"query": ', "not valid JSON"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
async def test_a_malformed_body_is_a_400_with_a_reason(client, case):
    body, reason = MALFORMED[case]
    response = await client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert reason in response.text


async def test_an_integer_literal_of_5000_digits_in_the_query_is_a_graphql_error(gql):
    body = await gql.raw("{ partners(first: " + "9" * 5000 + ") { totalCount } }")
    (error,) = body["errors"]
    assert error["extensions"]["code"] in {"GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}


async def test_json_values_nested_deeper_than_the_input_limit_are_refused(gql, settings):
    # Shallow enough for the decoder, too deep for an input: refused with the other limits.
    deep = "[" * 100 + "]" * 100
    response = await gql.http.post(
        "/graphql", content=body_with(deep), headers={"content-type": "application/json"}
    )
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert f"more than {settings.max_input_depth} levels deep" in error["message"]


async def test_a_body_over_the_cap_is_413_before_it_is_parsed(client, settings):
    padding = " " * settings.max_body_bytes
    response = await client.post(
        "/graphql",
        content=f'{{"query": "{QUERY}"{padding}}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert f"at most {settings.max_body_bytes} bytes" in response.text
    assert response.headers["connection"] == "close"  # the unread rest is not a request


@pytest_asyncio.fixture
async def quick_app(db: Any, settings: Any) -> Any:
    """The app with a short body timeout, so a stalled body is given up on quickly."""
    return create_app(
        dataclasses.replace(settings, body_timeout=0.3), db=db, cache=InProcessCache()
    )


async def call(app: Any, scope: dict[str, Any], chunks: list[dict[str, Any]]) -> list[dict]:
    """Drive the ASGI app directly: ``chunks`` are what the client sends, then nothing more
    arrives (the receive blocks, as a silent client's would)."""
    sent: list[dict] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with asyncio.timeout(5):
        await app(scope, receive, send)
    return sent


def http_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"qudao.test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def status_of(sent: list[dict]) -> tuple[int, dict[bytes, bytes], bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


async def test_a_body_shorter_than_its_content_length_times_out(quick_app):
    sent = await call(
        quick_app,
        http_scope([(b"content-length", b"100")]),
        [{"type": "http.request", "body": b'{"query": ', "more_body": True}],
    )
    status, headers, body = status_of(sent)
    assert status == 408
    assert headers[b"connection"] == b"close"
    assert b"did not arrive within 0.3 seconds" in body


async def test_a_chunked_body_is_counted_as_it_arrives(client, settings):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ __typename }", "x": "'
        for _ in range(settings.max_body_bytes // 65_536 + 1):
            yield b"x" * 65_536
        yield b'"}'

    response = await client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_a_content_length_that_is_not_a_number_is_400(quick_app):
    sent = await call(
        quick_app,
        http_scope([(b"content-length", b"12abc")]),
        [{"type": "http.request", "body": b"{}", "more_body": False}],
    )
    assert status_of(sent)[0] == 400


@pytest.mark.parametrize(
    "headers",
    [
        [(f"x-h{i}".encode(), b"1") for i in range(150)],
        [(b"x-big", b"x" * 20_000)],
        [(b"authorization", b"Bearer " + b"x" * 20_000)],
    ],
    ids=["150 headers", "a 20 KB header", "a 20 KB token"],
)
async def test_headers_over_their_caps_are_431(quick_app, headers):
    sent = await call(
        quick_app,
        http_scope(headers),
        [{"type": "http.request", "body": b'{"query": "{ __typename }"}', "more_body": False}],
    )
    status, _, body = status_of(sent)
    assert status == 431
    assert b"Request headers too large" in body


async def test_a_client_gone_before_its_body_is_read_is_logged_at_info(quick_app, caplog):
    caplog.set_level(logging.INFO)
    sent = await call(
        quick_app,
        http_scope([(b"content-length", b"100")]),
        [
            {"type": "http.request", "body": b'{"query": ', "more_body": True},
            {"type": "http.disconnect"},
        ],
    )
    assert sent == []  # nobody to answer
    assert "client disconnected before its request was read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_connection_is_kept_after_a_malformed_body(app, issue_token):
    # Over a real server and one TCP connection: the request after the refusal is answered.
    async with serve(app) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for body, expected in (
                (b"null", b"400"),
                (json.dumps({"query": QUERY}).encode(), b"200"),
            ):
                writer.write(
                    b"POST /graphql HTTP/1.1\r\nHost: qudao.test\r\n"
                    b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                async with asyncio.timeout(5):
                    status_line = await reader.readline()
                    headers = {}
                    while (line := await reader.readline()) != b"\r\n":
                        name, _, value = line.decode().partition(":")
                        headers[name.strip().lower()] = value.strip()
                    await reader.readexactly(int(headers["content-length"]))
                assert expected in status_line, status_line
                assert headers.get("connection") != "close"
        finally:
            writer.close()


async def test_a_request_within_the_limits_is_served(client):
    response = await client.post("/graphql", json={"query": QUERY})
    assert response.status_code == 200
    assert response.json() == {
        "data": {"__typename": "Query"},
        "extensions": {"cost": {"requested": 0, "limit": 25000}},
    }


async def test_get_requests_still_take_variables_as_a_parameter(client):
    response = await client.get(
        "/graphql",
        params={
            "query": "query($n: Int) { partners(first: $n) { totalCount } }",
            "variables": '{"n": 1}',
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"partners": {"totalCount": 0}}
