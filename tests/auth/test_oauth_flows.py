"""OAuth 2 flows driven by a real OAuth client library (authlib's httpx client)."""

from __future__ import annotations

import httpx
import pytest
from authlib.integrations.base_client import OAuthError
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.auth.conftest import BASE, PASSWORD, TOKEN_URL

PARTNERS = "{ partners { nodes { code } } }"


def claims_of(world, token: dict) -> dict:
    """The access token's claims, verified against the server's published (public) keys."""
    public = KeySet.import_key_set(world.app.state.keys.public_jwks())
    return jwt.decode(token["access_token"], public, algorithms=["ES256"]).claims


async def graphql(http: httpx.AsyncClient, token: str | None, query: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.post("/graphql", json={"query": query}, headers=headers)


async def test_client_credentials_for_a_partner_integration(world, http):
    token = await world.integration_token()
    claims = claims_of(world, token)
    assert token["token_type"] == "Bearer" and "refresh_token" not in token
    assert set(token["scope"].split()) == {"partners:read", "orders:write"}
    assert claims["role"] == "integration"
    assert claims["partner_id"] == world.partner_a
    assert claims["sub"] == f"client:{world.integration_id}"
    response = await graphql(http, token["access_token"], PARTNERS)
    assert response.json()["data"] == {"partners": {"nodes": [{"code": "PA"}]}}


async def test_an_integration_cannot_widen_its_scopes(world):
    async with world.oauth_client(world.integration_id, world.integration_secret) as oauth:
        token = await oauth.fetch_token(
            TOKEN_URL, grant_type="client_credentials", scope="partners:read pii:read"
        )
    assert token["scope"] == "partners:read"


async def test_wrong_client_secret_is_refused(world):
    async with world.oauth_client(world.integration_id, "not-the-secret") as oauth:
        with pytest.raises(OAuthError) as refused:
            await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")
    assert refused.value.error == "invalid_client"


async def test_password_grant_gives_the_role_scopes(world, http):
    token = await world.password_token("boss@a.example.com")
    claims = claims_of(world, token)
    assert claims["role"] == "partner_admin" and claims["partner_id"] == world.partner_a
    assert "partners:write" not in token["scope"].split()
    assert "coupons:redeem" in token["scope"].split()
    assert "refresh_token" in token
    response = await graphql(http, token["access_token"], PARTNERS)
    assert response.json()["data"] == {"partners": {"nodes": [{"code": "PA"}]}}


async def test_password_grant_only_for_first_party_clients(world):
    async with world.oauth_client(world.integration_id, world.integration_secret) as oauth:
        with pytest.raises(OAuthError) as refused:
            await oauth.fetch_token(TOKEN_URL, username="admin@hq.example.com", password=PASSWORD)
    assert refused.value.error == "unauthorized_client"


async def test_wrong_password_and_unknown_user_look_the_same(world):
    errors = []
    for email, password in [
        ("admin@hq.example.com", "wrong password!"),
        ("nobody@hq.example.com", PASSWORD),
    ]:
        async with world.oauth_client(world.console_id, world.console_secret) as oauth:
            with pytest.raises(OAuthError) as refused:
                await oauth.fetch_token(TOKEN_URL, username=email, password=password)
        errors.append((refused.value.error, refused.value.description))
    assert errors[0] == errors[1]


async def test_failed_logins_lock_the_account_for_a_while(world):
    for _ in range(5):
        async with world.oauth_client(world.console_id, world.console_secret) as oauth:
            with pytest.raises(OAuthError):
                await oauth.fetch_token(
                    TOKEN_URL, username="admin@hq.example.com", password="guess guess guess"
                )
    async with httpx.AsyncClient(transport=world.transport(), base_url=BASE) as http:
        response = await http.post(
            TOKEN_URL,
            data={
                "grant_type": "password",
                "username": "admin@hq.example.com",
                "password": PASSWORD,
            },
            auth=(world.console_id, world.console_secret),
        )
    assert response.status_code == 429
    assert response.json()["error"] == "too_many_attempts"
    assert int(response.headers["retry-after"]) > 0


async def test_refresh_rotates_and_reuse_revokes_the_family(world):
    first = await world.password_token("admin@hq.example.com")
    async with world.oauth_client(world.console_id, world.console_secret) as oauth:
        second = await oauth.refresh_token(TOKEN_URL, refresh_token=first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert claims_of(world, second)["sub"] == claims_of(world, first)["sub"]
        # The old refresh token again: someone else has it. Both it and its successor die.
        with pytest.raises(OAuthError) as reused:
            await oauth.refresh_token(TOKEN_URL, refresh_token=first["refresh_token"])
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError):
            await oauth.refresh_token(TOKEN_URL, refresh_token=second["refresh_token"])


async def test_authorization_code_with_pkce(world, http):
    verifier = "v" * 64
    async with world.oauth_client(
        world.spa_id,
        None,
        redirect_uri="https://console.example.com/callback",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    ) as oauth:
        url, state = oauth.create_authorization_url(
            f"{BASE}/oauth/authorize", code_verifier=verifier
        )
        page = await http.get(url)
        assert page.status_code == 200 and "Sign in" in page.text
        login = await http.post(
            url, data={"email": "marketer@hq.example.com", "password": PASSWORD}
        )
        assert login.status_code == 302
        location = login.headers["location"]
        assert location.startswith("https://console.example.com/callback?code=")
        assert f"state={state}" in location
        token = await oauth.fetch_token(
            f"{BASE}/oauth/token", authorization_response=location, code_verifier=verifier
        )
        assert claims_of(world, token)["role"] == "marketer"
        assert "refresh_token" in token
        # A code works once.
        with pytest.raises(OAuthError) as again:
            await oauth.fetch_token(
                f"{BASE}/oauth/token", authorization_response=location, code_verifier=verifier
            )
        assert again.value.error == "invalid_grant"


async def test_authorization_code_needs_pkce_and_the_right_verifier(world, http):
    plain = (
        f"{BASE}/oauth/authorize?response_type=code&client_id={world.spa_id}"
        "&redirect_uri=https://console.example.com/callback"
    )
    refused = await http.get(plain)
    assert refused.status_code == 400
    assert "code_challenge" in refused.text
    async with world.oauth_client(
        world.spa_id,
        None,
        redirect_uri="https://console.example.com/callback",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    ) as oauth:
        url, _ = oauth.create_authorization_url(f"{BASE}/oauth/authorize", code_verifier="a" * 64)
        login = await http.post(
            url, data={"email": "marketer@hq.example.com", "password": PASSWORD}
        )
        with pytest.raises(OAuthError) as wrong:
            await oauth.fetch_token(
                f"{BASE}/oauth/token",
                authorization_response=login.headers["location"],
                code_verifier="b" * 64,
            )
    assert wrong.value.error == "invalid_grant"


async def test_login_page_refuses_a_wrong_password(world, http):
    async with world.oauth_client(
        world.spa_id,
        None,
        redirect_uri="https://console.example.com/callback",
        code_challenge_method="S256",
    ) as oauth:
        url, _ = oauth.create_authorization_url(f"{BASE}/oauth/authorize", code_verifier="c" * 64)
    response = await http.post(url, data={"email": "marketer@hq.example.com", "password": "no"})
    assert response.status_code == 401 and "Wrong email or password" in response.text


async def test_revoking_an_access_token_refuses_it_at_once(world, http):
    token = await world.integration_token()
    assert (await graphql(http, token["access_token"], PARTNERS)).status_code == 200
    async with world.oauth_client(world.integration_id, world.integration_secret) as oauth:
        response = await oauth.revoke_token(
            f"{BASE}/oauth/revoke", token["access_token"], token_type_hint="access_token"
        )
    assert response.status_code == 200
    refused = await graphql(http, token["access_token"], PARTNERS)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"


async def test_revoking_a_refresh_token_ends_the_login(world):
    token = await world.password_token("admin@hq.example.com")
    async with world.oauth_client(world.console_id, world.console_secret) as oauth:
        await oauth.revoke_token(
            f"{BASE}/oauth/revoke", token["refresh_token"], token_type_hint="refresh_token"
        )
        with pytest.raises(OAuthError):
            await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])


async def test_introspection(world):
    token = await world.integration_token()
    async with world.oauth_client(world.integration_id, world.integration_secret) as oauth:
        active = (
            await oauth.introspect_token(f"{BASE}/oauth/introspect", token["access_token"])
        ).json()
        assert active["active"] is True
        assert active["client_id"] == world.integration_id
        assert active["partner_id"] == world.partner_a
        assert set(active["scope"].split()) == {"partners:read", "orders:write"}
        garbage = (await oauth.introspect_token(f"{BASE}/oauth/introspect", "nope")).json()
        assert garbage == {"active": False}
        await oauth.revoke_token(f"{BASE}/oauth/revoke", token["access_token"])
        revoked = (
            await oauth.introspect_token(f"{BASE}/oauth/introspect", token["access_token"])
        ).json()
        assert revoked == {"active": False}


async def test_jwks_publishes_only_public_keys(http, world):
    keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    assert keys and all("d" not in key for key in keys)
    assert keys[0]["alg"] == "ES256" and keys[0]["kid"]
