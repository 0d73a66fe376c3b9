"""The ASGI application: /graphql (HTTP + websocket), /healthz, /readyz."""

from __future__ import annotations

import gc
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

from cross_web import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from api.auth import member_login
from api.auth.middleware import AuthenticationMiddleware
from api.auth.oauth.assembly import build_server as build_oauth_server
from api.auth.oauth.http_request import MalformedCredentials
from api.auth.oauth.routes import ROUTES as OAUTH_ROUTES
from api.auth.principal import ANONYMOUS
from api.auth.tokens import InvalidToken
from api.cache import Cache, CacheUnavailable, create_cache
from api.db import Database, unavailable
from api.graphql.context import Context
from api.graphql.errors import DATABASE_RETRY_AFTER, coded
from api.graphql.schema import NODE_LOADERS, build_schema
from api.graphql.subscriptions import (
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    SocketConnection,
    SocketContext,
    SubscriptionSocket,
    cache_publisher,
)
from api.http_limits import BadBody, RequestLimitsMiddleware, decode_json_body
from api.logs import request_id_var
from api.segments import jobs as segment_jobs
from api.settings import Settings
from api.text import UnreadableText
from api.wiring import Wiring, build

log = logging.getLogger("qudao.http")


class RequestIdMiddleware:
    """Give every request an id (the caller's X-Request-ID, or a new one), echo it back, and
    write one access-log line when the response is done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            request_id_var.reset(token)


class QudaoGraphQL(GraphQL[Context, None]):
    # Subscriptions: graphql-transport-ws only (the legacy graphql-ws protocol is not in the
    # contract), with the token checked per operation (api/graphql/subscriptions.py).
    graphql_transport_ws_handler_class = SubscriptionSocket

    def __init__(self, wiring: Wiring) -> None:
        settings = wiring.settings
        super().__init__(
            build_schema(settings),
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=10),
            max_subscriptions_per_connection=MAX_SUBSCRIPTIONS_PER_CONNECTION,
            # Any page may open the websocket: it authenticates with a bearer token the page
            # must hold, never with ambient credentials (this API sets no cookies).
            allowed_origins=("*",),
        )
        self.wiring = wiring

    def decode_json(self, data: str | bytes) -> object:
        # Bytes are a POST body, which must be one request object (batching is off); text is
        # a GET parameter (`variables`), whose type strawberry checks itself.
        try:
            value = decode_json_body(data)
        except BadBody as bad:
            raise HTTPException(400, str(bad)) from None
        if isinstance(data, bytes) and not isinstance(value, dict):
            raise HTTPException(
                400,
                'The body must be one JSON object: {"query": "...", "variables": {...}}.',
            )
        return value

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        state = request.app.state
        fields: dict[str, Any] = {
            "db": state.db,
            "cache": state.cache,
            "wiring": self.wiring,
            "nodes": NODE_LOADERS,
            "principal": request.scope.get("state", {}).get("principal", ANONYMOUS),
            "request_id": request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex,
            "request": request,
        }
        if isinstance(request, WebSocket):
            connection = SocketConnection(
                request, keys=state.keys, cache=state.cache, settings=self.wiring.settings
            )
            return SocketContext(connection, **fields)
        return Context(**fields, response=response)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        assert isinstance(context, SocketContext)
        try:
            context.principal = await context.connection.authenticate(context.connection_params)
        except InvalidToken as error:
            log.info("refused a websocket connection: %s", error)
            raise ConnectionRejectionError from None
        except CacheUnavailable:
            log.info("refused a websocket connection: its token cannot be checked right now")
            raise ConnectionRejectionError from None
        return UNSET

    async def process_result(
        self, request: Request | WebSocket, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Here and not in a schema extension: parse errors raised by the parser cache never
        # reach an extension's operation hook, but every result passes through this.
        if result.errors:
            result.errors = [coded(e) for e in result.errors]
        return process_result(result)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        # Nothing in the answer succeeded, and all that failed failed for want of a service
        # (the database, Redis): 503 with Retry-After, so clients and proxies that only read
        # the status retry too. Anything that did succeed makes it a 200 with errors.
        wait = unavailable_only(response_data)
        if wait is not None:
            sub_response.status_code = 503
            sub_response.headers["Retry-After"] = str(wait)
        return super().create_response(response_data, sub_response)


def unavailable_only(response: GraphQLHTTPResponse | list[GraphQLHTTPResponse]) -> int | None:
    """The longest ``retryAfter`` when every root field failed with SERVICE_UNAVAILABLE (or
    the operation as a whole did), else None."""
    if not isinstance(response, dict):
        return None
    errors: list[dict[str, Any]] = cast(list[dict[str, Any]], response.get("errors") or [])
    extensions = [e.get("extensions") or {} for e in errors]
    if not errors or any(x.get("code") != "SERVICE_UNAVAILABLE" for x in extensions):
        return None
    data: dict[str, Any] = response.get("data") or {}
    failed = {e["path"][0] for e in errors if e.get("path")}
    if any(value is not None or key not in failed for key, value in data.items()):
        return None
    return max(int(x.get("retryAfter") or 1) for x in extensions)


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


# What still works, and how, while Redis is down (README, "Limits and degraded modes").
DEGRADED_WITHOUT_REDIS = (
    "rate limits and lockouts count per process",
    "access tokens are not checked against the deny list for the first {grace:g} s of the "
    "outage, then refused with 503",
    "subscriptions stay open but get no events until Redis is back",
    "member login codes, token revocation and introspection answer 503",
    "order pickups answer SERVICE_UNAVAILABLE (wrong codes cannot be counted)",
)


async def readyz(request: Request) -> Response:
    """Ready when the database answers. Without Redis the API still serves, degraded: 200,
    with what is degraded, so a load balancer keeps the instance (every instance shares the
    same Redis; pulling them all would turn a partial outage into a full one)."""
    state = request.app.state
    checks = {"database": await state.db.ping()}
    if state.settings.redis_url:
        checks["redis"] = await state.cache.ping()
    if not checks["database"]:
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    if not all(checks.values()):
        grace = state.settings.revocation_grace
        degraded = [line.format(grace=grace) for line in DEGRADED_WITHOUT_REDIS]
        return JSONResponse({"status": "degraded", "checks": checks, "degraded": degraded})
    return JSONResponse({"status": "ready", "checks": checks})


async def malformed_credentials(request: Request, error: Exception) -> Response:
    """Basic credentials that do not decode: the client is not identified."""
    return JSONResponse(
        {"error": "invalid_client", "error_description": str(error)}, status_code=401
    )


async def unreadable_text(request: Request, error: Exception) -> Response:
    """Control characters or lone surrogates in an OAuth parameter: the client's mistake."""
    return JSONResponse(
        {"error": "invalid_request", "error_description": str(error)}, status_code=400
    )


async def cache_unavailable(request: Request, error: Exception) -> Response:
    """What a route that needs Redis answers while it is down (the OAuth endpoints, member
    login codes): a 503 the client can retry, never a 500."""
    assert isinstance(error, CacheUnavailable)
    return JSONResponse(
        {
            "error": "temporarily_unavailable",
            "error_description": "A service this needs is unavailable; try again shortly.",
        },
        status_code=503,
        headers={"Retry-After": str(max(1, math.ceil(error.retry_after)))},
    )


class DatabaseOutageMiddleware:
    """The routes outside GraphQL (OAuth, member login codes) answer an unreachable database
    the way GraphQL does: a 503 with Retry-After the client can act on, counted in the outage
    log (one traceback per outage), never a 500 with a traceback per request."""

    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            # Only what the database layer raises: a request's own timeout (a body that
            # stopped arriving) is not an outage, and the limits around this answer it.
            from_database = isinstance(error, SQLAlchemyError | OSError | TimeoutError)
            if started or not from_database or not unavailable(error):
                raise
            self.db.outage.failed(error)
            response = JSONResponse(
                {
                    "error": "temporarily_unavailable",
                    "error_description": "The database is unavailable; try again shortly.",
                },
                status_code=503,
                headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
            )
            await response(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    cache: Cache | None = None,
) -> Starlette:
    """Build the app. ``db``/``cache`` given by the caller (tests) are theirs to close."""
    settings = settings or Settings.from_env()
    owns_db, owns_cache = db is None, cache is None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Everything built so far (schema, mappers, compiled caches) lives as long as the
        # process: move it out of the collector's reach, or every full collection re-scans
        # ~100k objects (a 40-80 ms pause that shows up as p90 latency).
        gc.collect()
        gc.freeze()
        # Segment grant jobs left unfinished by a stop or a crash carry on here.
        segment_jobs.resume_in_background(app.state.db, settings.points_policy)
        yield
        # Graceful shutdown: uvicorn has drained in-flight requests before this runs. Grant
        # jobs still running get a moment, then are interrupted (back to PENDING, resumed at
        # the next start) while the database is still open.
        await segment_jobs.stop()
        if owns_cache:
            await app.state.cache.close()
        if owns_db:
            await app.state.db.dispose()

    graphql = QudaoGraphQL(build(settings))
    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            # Subscriptions (graphql-transport-ws), with the token checked per operation: a
            # connection does not outlive its token.
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *OAUTH_ROUTES,
            *member_login.ROUTES,  # POST /oauth/otp: a member asks for a login code
        ],
        lifespan=lifespan,
        exception_handlers={
            CacheUnavailable: cache_unavailable,
            UnreadableText: unreadable_text,
            MalformedCredentials: malformed_credentials,
        },
    )
    app.state.settings = settings
    app.state.db = db or Database(
        settings.database_url,
        connect_timeout=settings.db_connect_timeout,
        statement_timeout=settings.db_statement_timeout,
    )
    app.state.cache = cache or create_cache(
        settings.redis_url, settings.cache_prefix, retry_interval=settings.cache_retry_interval
    )
    # Events of committed transactions go out through the cache's pub/sub: with Redis, a
    # commit in any API process reaches the subscribers of every process.
    app.state.db.publisher = cache_publisher(app.state.cache)
    app.state.keys = settings.key_ring()
    app.state.oauth = build_oauth_server(app.state.db, app.state.cache, app.state.keys, settings)
    member_login.install(app.state.oauth, settings)  # phone code and WeChat grants
    app.add_middleware(DatabaseOutageMiddleware, db=app.state.db)
    app.add_middleware(
        AuthenticationMiddleware, keys=app.state.keys, cache=app.state.cache, settings=settings
    )
    # Outside authentication: an oversized or stalled request is refused before any work.
    app.add_middleware(RequestLimitsMiddleware, limits=settings.body_limits)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so every log has the id
    return app
