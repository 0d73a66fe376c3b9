"""Bearer tokens at the door of /graphql: what is refused (401, never a 500), that checking a
token costs no SQL, and that signing keys rotate without logging anyone out."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from api.app import create_app
from api.auth import service
from api.auth.keys import KeyRing, generate_key
from api.auth.principal import Role
from api.auth.tokens import TokenSubject, decode_access_token, issue_access_token
from api.cache import InProcessCache
from api.partners import service as partners
from api.partners.models import PartnerType
from api.seed import SEEDER
from api.settings import Settings

BASE = "http://qudao.test"
PARTNERS = "{ partners { nodes { code } } }"
HQ_ADMIN = TokenSubject("user:1", Role.HQ_ADMIN)


def authenticated_app(settings: Settings, db, **changes: Any):
    return create_app(replace(settings, **changes), db=db, cache=InProcessCache())


def http_to(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def issue(keys: KeyRing, settings: Settings, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "issuer": settings.issuer,
        "client_id": "tests",
        "who": HQ_ADMIN,
        "scope": "partners:read",
        "ttl": 300,
    }
    return issue_access_token(keys, **{**arguments, **overrides})


def forge(keys: KeyRing, settings: Settings, header: dict[str, Any], **claims: Any) -> str:
    """A token signed by ``keys`` with our claims changed by ``claims``, under ``header``."""
    valid = decode_access_token(keys, issue(keys, settings), issuer=settings.issuer)
    return jwt.encode(header, {**valid, **claims}, keys.key_set)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def impostor(keys: KeyRing) -> KeyRing:
    """A ring whose key has the kid of ours but is another key: only the signature differs."""
    kid = keys.signing_key.kid
    parameters = {"kid": kid, "use": "sig", "alg": "ES256"}
    return KeyRing(KeySet([ECKey.generate_key("P-256", parameters=parameters, private=True)]))


def promoted(keys: KeyRing, settings: Settings) -> str:
    """A store clerk's real token with ``role`` edited to hq_admin and the signature kept."""
    token = issue(keys, settings, who=TokenSubject("user:2", Role.STORE_STAFF))
    header, _, signature = token.split(".")
    claims = decode_access_token(keys, token, issuer=settings.issuer)
    return ".".join([header, b64({**claims, "role": "hq_admin"}), signature])


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- refused: 401 with WWW-Authenticate, whatever arrives ----------------------------------------

Case = Callable[[KeyRing, Settings], str]  # -> the whole Authorization header

MALFORMED: dict[str, Case] = {
    "basic scheme": lambda k, s: "Basic dXNlcjpwYXNzd29yZA==",
    "bearer without token": lambda k, s: "Bearer",
    "bearer with blanks": lambda k, s: "Bearer    ",
    "random string": lambda k, s: secrets.token_urlsafe(24),
    "bearer random string": lambda k, s: f"Bearer {secrets.token_urlsafe(24)}",
    "bearer three junk parts": lambda k, s: "Bearer a.b.c",
    "another key ring": lambda k, s: f"Bearer {issue(KeyRing.generate(), s)}",
    "another key with our kid": lambda k, s: f"Bearer {issue(impostor(k), s)}",
    "expired": lambda k, s: f"Bearer {issue(k, s, ttl=60, now=time.time() - 3600)}",
    "wrong issuer": lambda k, s: f"Bearer {issue(k, s, issuer='https://evil.example.com')}",
    "wrong audience": lambda k, s: (
        "Bearer "
        + forge(k, s, {"alg": "ES256", "kid": k.signing_key.kid, "typ": "at+jwt"}, aud="other")
    ),
    "typ JWT": lambda k, s: (
        "Bearer " + forge(k, s, {"alg": "ES256", "kid": k.signing_key.kid, "typ": "JWT"})
    ),
    "no typ": lambda k, s: "Bearer " + forge(k, s, {"alg": "ES256", "kid": k.signing_key.kid}),
    "unknown role": lambda k, s: (
        "Bearer "
        + forge(k, s, {"alg": "ES256", "kid": k.signing_key.kid, "typ": "at+jwt"}, role="root")
    ),
    "alg none": lambda k, s: (
        "Bearer " + b64({"alg": "none", "typ": "at+jwt"}) + "." + issue(k, s).split(".")[1] + "."
    ),
    "claims tampered": lambda k, s: f"Bearer {promoted(k, s)}",
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_bad_authorization_header_is_a_401(case, database, settings):
    app = authenticated_app(settings, database)
    authorization = MALFORMED[case](app.state.keys, app.state.settings)
    async with http_to(app) as http:
        response = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": authorization}
        )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "invalid_token"
    assert isinstance(body["error_description"], str) and body["error_description"]


async def test_valid_and_absent_tokens_are_not_refused(database, settings):
    app = authenticated_app(settings, database)
    query = {"query": "{ __typename }"}
    async with http_to(app) as http:
        anonymous = await http.post("/graphql", json=query)
        token = issue(app.state.keys, app.state.settings)
        valid = await http.post(
            "/graphql", json=query, headers={"Authorization": f"Bearer {token}"}
        )
        lowercase = await http.post(
            "/graphql", json=query, headers={"Authorization": f"bearer {token}"}
        )
    assert anonymous.status_code == 200  # no header: anonymous, not an error
    assert valid.status_code == 200 and valid.json()["data"] == {"__typename": "Query"}
    assert lowercase.status_code == 200  # the scheme is case-insensitive (RFC 9110)


# --- no SQL for checking a token -----------------------------------------------------------------


@pytest_asyncio.fixture
async def two_partners(db) -> dict[str, Any]:
    async with db.transaction() as session:
        for code in ("PA", "PB"):
            await partners.create_partner(
                session, SEEDER, partners.PartnerDraft(code, f"Partner {code}", PartnerType.AGENT)
            )
    return {"partners": {"nodes": [{"code": "PA"}, {"code": "PB"}]}}


async def data_and_statements(
    app, count_queries, query: str, headers: dict[str, str] | None = None
) -> tuple[Any, int]:
    """The data of ``query`` and how many SQL statements it took (after one warm-up call)."""
    async with http_to(app) as http:
        await http.post("/graphql", json={"query": query}, headers=headers)
        with count_queries() as counter:
            response = await http.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.json()["errors"]
    return response.json()["data"], counter.count


async def test_token_validation_adds_no_database_query(db, settings, count_queries, two_partners):
    app = authenticated_app(settings, db)
    bearer = {"Authorization": f"Bearer {issue(app.state.keys, app.state.settings)}"}
    # The page of partners is one SELECT (no count: totalCount is not asked); the token adds
    # nothing to it, and a request that needs no data sends no SQL at all.
    assert await data_and_statements(app, count_queries, PARTNERS, bearer) == (two_partners, 1)
    typename = await data_and_statements(app, count_queries, "{ __typename }", bearer)
    assert typename == ({"__typename": "Query"}, 0)
    with count_queries() as counter:
        async with http_to(app) as http:
            refused = await http.post(
                "/graphql", json={"query": PARTNERS}, headers={"Authorization": "Bearer x.y.z"}
            )
    assert refused.status_code == 401 and counter.count == 0


# --- key rotation --------------------------------------------------------------------------------


async def test_key_rotation_keeps_old_tokens_valid(db, settings):
    old, new = generate_key(), generate_key()
    old_token = issue(KeyRing(KeySet([old])), settings)  # signed before the rotation
    rotated = KeyRing(KeySet([new, old])).to_json()  # the new key first: it signs from now
    app = authenticated_app(settings, db, jwt_keys_json=rotated)
    async with db.transaction() as session:
        partner = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PA", "Partner A", PartnerType.DISTRIBUTOR)
        )
        erp = await service.create_client(
            session,
            name="ERP",
            grant_types={"client_credentials"},
            scopes={"partners:read"},
            partner_id=partner.id,
        )
    assert erp.secret is not None

    async with http_to(app) as http:
        before = await http.post(
            "/graphql", json={"query": PARTNERS}, headers={"Authorization": f"Bearer {old_token}"}
        )
        assert before.status_code == 200, before.text
        assert before.json()["data"] == {"partners": {"nodes": [{"code": "PA"}]}}

        issued = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(erp.client.client_id, erp.secret),
        )
        assert issued.status_code == 200, issued.text
        new_token = issued.json()["access_token"]
        assert header_of(new_token)["kid"] == new.kid
        assert header_of(old_token)["kid"] == old.kid
        after = await http.post(
            "/graphql", json={"query": PARTNERS}, headers={"Authorization": f"Bearer {new_token}"}
        )
        assert after.status_code == 200 and "errors" not in after.json(), after.text

        jwks = await http.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    published = jwks.json()["keys"]
    assert [key["kid"] for key in published] == [new.kid, old.kid]
    assert all(key["kty"] == "EC" and "d" not in key for key in published)  # public halves only
    # A resource server verifying with the published keys accepts both tokens.
    public = KeySet.import_key_set(jwks.json())
    for token in (old_token, new_token):
        assert jwt.decode(token, public, algorithms=["ES256"]).claims["aud"] == "qudao-api"

    # Once the old key is dropped (its last token expired), its tokens are refused.
    retired = authenticated_app(settings, db, jwt_keys_json=KeyRing(KeySet([new])).to_json())
    async with http_to(retired) as http:
        gone = await http.post(
            "/graphql", json={"query": PARTNERS}, headers={"Authorization": f"Bearer {old_token}"}
        )
        kept = await http.post(
            "/graphql", json={"query": PARTNERS}, headers={"Authorization": f"Bearer {new_token}"}
        )
    assert gone.status_code == 401
    assert gone.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert kept.status_code == 200
