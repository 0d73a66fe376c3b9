"""Who is calling, and whether they may call again yet: before any GraphQL work is done.

A bad token is a 401 with ``WWW-Authenticate`` (RFC 6750), not a GraphQL error; a caller over
its rate limit gets 429 with ``Retry-After``. While Redis is down the rate limit counts in this
process, and a token is accepted unchecked against the deny list for the first
``revocation_grace`` seconds of the outage, then refused with 503 and ``Retry-After``. The
principal rides in the ASGI scope to the GraphQL context. Neither step touches the database.
"""

from __future__ import annotations

import json
import math

from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth.keys import KeyRing
from api.auth.principal import ANONYMOUS, Principal
from api.auth.tokens import InvalidToken, authenticate_bearer
from api.cache import Cache, CacheUnavailable
from api.settings import Settings


class AuthenticationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        cache: Cache,
        settings: Settings,
        paths: tuple[str, ...] = ("/graphql",),
    ) -> None:
        self.app = app
        self.keys = keys
        self.cache = cache
        self.settings = settings
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        try:
            principal = await self._principal(headers.get(b"authorization"))
        except CacheUnavailable as outage:
            await _refuse(
                scope,
                send,
                503,
                "temporarily_unavailable",
                "Revoked tokens cannot be checked right now; try again shortly.",
                {"Retry-After": str(max(1, math.ceil(outage.retry_after)))},
            )
            return
        except InvalidToken as error:
            await _refuse(
                scope,
                send,
                401,
                "invalid_token",
                str(error),
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            return
        client = scope.get("client")
        who = (
            principal.subject
            if principal.is_authenticated
            else f"ip:{client[0] if client else '?'}"
        )
        count, reset = await self.cache.hit(f"rate:api:{who}", self.settings.rate_window)
        if count > self.settings.rate_limit:
            await _refuse(
                scope,
                send,
                429,
                "rate_limited",
                "Too many requests.",
                {"Retry-After": str(max(1, round(reset)))},
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, authorization: bytes | None) -> Principal:
        if authorization is None:
            return ANONYMOUS
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("expected 'Authorization: Bearer <token>'")
        return await authenticate_bearer(
            self.keys,
            self.cache,
            token.strip(),
            issuer=self.settings.issuer,
            revocation_grace=self.settings.revocation_grace,
        )


async def _refuse(
    scope: Scope, send: Send, status: int, error: str, description: str, headers: dict[str, str]
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + status})
        return
    body = json.dumps({"error": error, "error_description": description}).encode()
    raw_headers = [(b"content-type", b"application/json")]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
