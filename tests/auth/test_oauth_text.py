"""OAuth parameters are text like GraphQL inputs: a control character or a lone surrogate in
a client id, a code, a token or a username is a 400 invalid_request naming it. NUL used to
reach PostgreSQL from /oauth/token, /oauth/revoke, /oauth/otp and /oauth/authorize (a 500)."""

from __future__ import annotations

import base64

import pytest

NUL_CREDENTIALS = {"Authorization": "Basic " + base64.b64encode(b"console\x00:secret").decode()}

PROBES = {
    "password grant username": (
        "/oauth/token",
        {"grant_type": "password", "username": "a\x00b", "password": "x", "client_id": "c"},
        {},
        "username",
    ),
    "client id in Basic credentials": (
        "/oauth/token",
        {"grant_type": "client_credentials"},
        NUL_CREDENTIALS,
        "client_id",
    ),
    "authorization code": (
        "/oauth/token",
        {"grant_type": "authorization_code", "code": "a\x00", "client_id": "c"},
        {},
        "code",
    ),
    "refresh token": (
        "/oauth/token",
        {"grant_type": "refresh_token", "refresh_token": "r\x1b[2J", "client_id": "c"},
        {},
        "refresh_token",
    ),
    "revoked token": ("/oauth/revoke", {"token": "t\x00"}, NUL_CREDENTIALS, "token"),
    "introspected token": ("/oauth/introspect", {"token": "t\x7f"}, {}, "token"),
    "login code phone": ("/oauth/otp", {"client_id": "c", "phone": "138\x0000"}, {}, "phone"),
    "sign-in form": ("/oauth/authorize", {"client_id": "c\x00", "email": "a"}, {}, "client_id"),
}


@pytest.mark.parametrize("probe", PROBES, ids=list(PROBES))
async def test_control_characters_in_oauth_parameters_are_a_400(client, probe):
    path, form, headers, name = PROBES[probe]
    response = await client.post(path, data=form, headers={"Authorization": "", **headers})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"].startswith(f"`{name}` cannot hold a control")


async def test_query_parameters_of_the_sign_in_page_are_checked_too(client):
    response = await client.get(
        "/oauth/authorize",
        params={"client_id": "c\x00", "response_type": "code"},
        headers={"Authorization": ""},
    )
    assert response.status_code == 400
    assert "`client_id` cannot hold a control character (U+0000)" in response.text


@pytest.mark.parametrize("encoded", ["é", "!!!", "\u00ff\u00fe=="])
async def test_credentials_that_are_not_base64_are_left_to_authlib(client, encoded):
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {encoded}".encode("latin-1")},
    )
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"
