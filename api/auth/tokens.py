"""Access tokens: RFC 9068 JWTs that carry everything a request needs to know its caller.

Verifying one is a signature check and a deny-list lookup in the cache: no database query.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from api.auth.keys import ALGORITHM, KeyRing
from api.auth.principal import Principal, Role
from api.cache import Cache, CacheUnavailable

AUDIENCE = "qudao-api"
_REVOKED = "revoked-jti:"


class InvalidToken(Exception):
    """The bearer token is malformed, forged, expired or revoked (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class TokenSubject:
    """Whom a token is issued to: a staff user, an integration client, or a member."""

    subject: str
    role: Role
    partner_id: int | None = None
    store_id: int | None = None
    customer_id: int | None = None


def issue_access_token(
    keys: KeyRing,
    *,
    issuer: str,
    client_id: str,
    who: TokenSubject,
    scope: str,
    ttl: int,
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": who.subject,
        "aud": AUDIENCE,
        "client_id": client_id,
        "iat": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
        "scope": scope,
        "role": who.role.value,
    }
    if who.partner_id is not None:
        claims["partner_id"] = who.partner_id
    if who.store_id is not None:
        claims["store_id"] = who.store_id
    if who.customer_id is not None:
        claims["customer_id"] = who.customer_id
    header = {"alg": ALGORITHM, "kid": keys.signing_key.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, keys.key_set)


def decode_access_token(keys: KeyRing, token: str, *, issuer: str) -> dict[str, Any]:
    """The verified claims of a token; InvalidToken when it is not one of ours or expired."""
    try:
        decoded = jwt.decode(token, keys.key_set, algorithms=[ALGORITHM])
        if decoded.header.get("typ") != "at+jwt":
            raise InvalidToken("not an access token")
        JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": AUDIENCE},
            exp={"essential": True},
            jti={"essential": True},
            sub={"essential": True},
        ).validate(decoded.claims)
        Role(decoded.claims.get("role"))
    except (JoseError, ValueError) as error:
        raise InvalidToken(str(error)) from None
    return decoded.claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    return Principal(
        subject=claims["sub"],
        role=Role(claims["role"]),
        partner_id=claims.get("partner_id"),
        store_id=claims.get("store_id"),
        customer_id=claims.get("customer_id"),
        scopes=frozenset(str(claims.get("scope") or "").split()),
        client_id=claims.get("client_id"),
        token_id=claims["jti"],
    )


async def authenticate_bearer(
    keys: KeyRing, cache: Cache, token: str, *, issuer: str, revocation_grace: float = 0.0
) -> Principal:
    """The principal of a valid access token that is not on the deny list.

    When the deny list cannot be read (Redis is down), a valid token is accepted for the
    first ``revocation_grace`` seconds of the outage (a revoked token may get through that
    long: access tokens live minutes anyway); after that CacheUnavailable is raised, and
    the caller answers 503.
    """
    claims = decode_access_token(keys, token, issuer=issuer)
    try:
        revoked = await cache.get(_REVOKED + claims["jti"]) is not None
    except CacheUnavailable as outage:
        if outage.down_for >= revocation_grace:
            raise
        revoked = False
    if revoked:
        raise InvalidToken("token revoked")
    return principal_from_claims(claims)


async def deny(cache: Cache, claims: dict[str, Any]) -> None:
    """Refuse this access token from now until it would have expired anyway."""
    remaining = int(claims["exp"]) - time.time()
    if remaining > 0:
        await cache.set(_REVOKED + claims["jti"], "1", ttl=remaining)
