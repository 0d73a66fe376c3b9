"""The OAuth endpoints as Starlette routes."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TypeVarTuple

import anyio
from authlib.oauth2 import OAuth2Error
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from api.auth.oauth.endpoints import Introspection, Revocation
from api.auth.oauth.http_request import OAuthHttpRequest, read_oauth_request
from api.auth.oauth.server import OAuthServer
from api.auth.oauth.store import TooManyAttempts
from api.settings import Settings

Ts = TypeVarTuple("Ts")


async def rate_limited(request: Request) -> Response | None:
    """The token endpoints' own, tighter limit per client address."""
    settings: Settings = request.app.state.settings
    address = request.client.host if request.client else "unknown"
    count, reset = await request.app.state.cache.hit(
        f"rate:oauth:{address}", settings.oauth_rate_window
    )
    if count > settings.oauth_rate_limit:
        return JSONResponse(
            {"error": "slow_down", "error_description": "Too many requests."},
            status_code=429,
            headers={"Retry-After": str(max(1, round(reset)))},
        )
    return None


async def _endpoint(
    request: Request, call: Callable[[*Ts, OAuthHttpRequest], Response], *args: *Ts
) -> Response:
    """Rate-limit, read the body on the loop, then run authlib in a worker thread."""
    if limited := await rate_limited(request):
        return limited
    oauth_request = await read_oauth_request(request)
    return await anyio.to_thread.run_sync(call, *args, oauth_request)


async def token(request: Request) -> Response:
    server: OAuthServer = request.app.state.oauth
    return await _endpoint(request, server.create_token_response)


async def revoke(request: Request) -> Response:
    server: OAuthServer = request.app.state.oauth
    return await _endpoint(request, server.create_endpoint_response, Revocation.ENDPOINT_NAME)


async def introspect(request: Request) -> Response:
    server: OAuthServer = request.app.state.oauth
    return await _endpoint(request, server.create_endpoint_response, Introspection.ENDPOINT_NAME)


_LOGIN_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>Qudao sign in</title>
</head><body><h1>Sign in to Qudao</h1>{error}<form method="post">{hidden}
<label>Email <input name="email" type="email" required></label>
<label>Password <input name="password" type="password" required></label>
<button type="submit">Sign in</button></form></body></html>"""


def _login_page(params: QueryParams, error: str | None = None, status: int = 200) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.multi_items()
    )
    message = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_LOGIN_FORM.format(error=message, hidden=hidden), status_code=status)


async def authorize(request: Request) -> Response:
    """Authorization code flow. First-party clients only, so consent is implicit: the staff
    member signs in and is sent straight back with a code."""
    server: OAuthServer = request.app.state.oauth
    oauth_request = await read_oauth_request(request)
    try:
        grant = await anyio.to_thread.run_sync(server.get_consent_grant, oauth_request, None)
    except OAuth2Error as error:
        return JSONResponse(dict(error.get_body()), status_code=error.status_code)
    if not grant.client.first_party:
        return JSONResponse(
            {
                "error": "unauthorized_client",
                "error_description": "Consent is for first-party apps.",
            },
            status_code=400,
        )
    if request.method == "GET":
        return _login_page(request.query_params)
    form = oauth_request.form
    if limited := await rate_limited(request):
        return limited
    try:
        user = await server.store.login(form.get("email", ""), form.get("password", ""))
    except TooManyAttempts as error:
        return _login_page(request.query_params, error.description, 429)
    if user is None:
        return _login_page(request.query_params, "Wrong email or password.", 401)
    return await anyio.to_thread.run_sync(
        server.create_authorization_response, oauth_request, user, grant
    )


async def jwks(request: Request) -> Response:
    return JSONResponse(
        request.app.state.keys.public_jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


ROUTES = [
    Route("/oauth/token", token, methods=["POST"]),
    Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
    Route("/oauth/revoke", revoke, methods=["POST"]),
    Route("/oauth/introspect", introspect, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
]
