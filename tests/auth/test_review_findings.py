"""Attacks and odd inputs found in review, each pinned so it stays fixed."""

from __future__ import annotations

import asyncio
import base64

import pytest
from authlib.integrations.base_client import OAuthError

from api.auth import service
from api.errors import DomainError
from tests.auth.conftest import BASE, TOKEN_URL
from tests.factories import create_partner


async def test_racing_refreshes_leave_no_live_login(world):
    """Holders of one refresh token race: exactly one spends it, and after the reuse is
    detected no refresh token of that login works, the winner's new one included."""
    first = await world.password_token("admin@hq.example.com")

    async def refresh() -> dict | str:
        async with world.oauth_client(world.console_id, world.console_secret) as oauth:
            try:
                return await oauth.refresh_token(TOKEN_URL, refresh_token=first["refresh_token"])
            except OAuthError as refused:
                return refused.description or refused.error

    outcomes = await asyncio.gather(*(refresh() for _ in range(6)))
    winners = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    # The one that spent it gets the new login, or "revoked" when a loser revoked the family
    # before its successor was stored; every other one is a reuse.
    assert len(winners) + outcomes.count("This login was revoked.") == 1, outcomes
    assert outcomes.count("invalid_grant") == 5, outcomes
    for winner in winners:
        async with world.oauth_client(world.console_id, world.console_secret) as oauth:
            with pytest.raises(OAuthError):
                await oauth.refresh_token(TOKEN_URL, refresh_token=winner["refresh_token"])


async def test_a_refused_refresh_does_not_spend_the_token(world):
    token = await world.password_token("boss@a.example.com")
    async with world.oauth_client(world.console_id, world.console_secret) as oauth:
        with pytest.raises(OAuthError) as wider:
            await oauth.refresh_token(
                TOKEN_URL, refresh_token=token["refresh_token"], scope="audit:read"
            )
        assert wider.value.error == "invalid_scope"
        renewed = await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
    assert renewed["refresh_token"] != token["refresh_token"]


async def test_another_client_cannot_use_or_spend_a_refresh_token(world, db):
    token = await world.password_token("admin@hq.example.com")
    async with db.transaction() as session:
        other = await service.create_client(
            session,
            name="Other backend",
            grant_types={"password", "refresh_token"},
            first_party=True,
        )
    async with world.oauth_client(other.client.client_id, other.secret) as oauth:
        with pytest.raises(OAuthError) as refused:
            await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
    assert refused.value.error == "invalid_grant"
    async with world.oauth_client(world.console_id, world.console_secret) as oauth:
        await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])


async def test_a_rotated_refresh_token_introspects_inactive(world):
    token = await world.password_token("admin@hq.example.com")
    async with world.oauth_client(world.console_id, world.console_secret) as oauth:
        await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
        body = (
            await oauth.introspect_token(f"{BASE}/oauth/introspect", token["refresh_token"])
        ).json()
    assert body == {"active": False}


@pytest.mark.parametrize("endpoint", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
async def test_credentials_that_are_not_utf8_are_a_401(http, endpoint):
    basic = base64.b64encode(b"\xff:\xfe").decode()
    response = await http.post(
        endpoint,
        data={"grant_type": "client_credentials", "token": "x"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_first_party_clients_cannot_use_client_credentials(db, world):
    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await service.create_client(
                session,
                name="x",
                grant_types={"client_credentials"},
                first_party=True,
                partner_id=world.partner_a,
            )
    assert "partner integrations" in refused.value.problems[0].message


async def test_paging_by_created_at(gql):
    for i in range(5):
        await create_partner(gql, f"C{i}")
    query = """query($after: String) { partners(first: 2, sortKey: CREATED_AT, after: $after) {
        nodes { code } pageInfo { endCursor } } }"""
    seen, after = [], None
    for _ in range(3):
        page = (await gql(query, {"after": after}))["partners"]
        seen += [n["code"] for n in page["nodes"]]
        after = page["pageInfo"]["endCursor"]
    assert seen == ["C0", "C1", "C2", "C3", "C4"]


def cursor(values: list) -> str:
    import json

    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "values"),
    [
        ("ID", [10**30]),
        ("ID", [True]),
        ("NAME", [{}, 1]),
        ("NAME", ["a", []]),
        ("CREATED_AT", ["2026-01-01T00:00:00", 1]),  # naive
        ("CREATED_AT", [[], 1]),
    ],
)
async def test_forged_cursors_are_bad_input(gql, sort, values):
    body = await gql.raw(
        f'{{ partners(sortKey: {sort}, after: "{cursor(values)}") {{ nodes {{ id }} }} }}'
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_ids_beyond_any_row_are_bad_input(gql):
    huge = base64.urlsafe_b64encode(b"Partner:" + b"9" * 30).decode().rstrip("=")
    body = await gql.raw("query($id: ID!) { node(id: $id) { id } }", {"id": huge})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
