"""GraphQL subscriptions over the websocket (graphql-transport-ws), and what keeps them honest.

* A connection authenticates once, in ``connection_init``: browsers cannot set headers on a
  websocket, so the bearer token rides in the payload (``{"Authorization": "Bearer …"}``); an
  ``Authorization`` header works too. No valid token: the connection is closed with 4403.
* A connection must not outlive its token. Every ``subscribe`` re-checks it (expiry and the
  revocation deny list), so does every message before it is sent, and a timer wakes at the
  token's expiry and every ``TOKEN_CHECK_SECONDS`` for revocations of an idle connection.
  A lapsed token closes the connection with 4403 and a reason saying why: a client reconnects
  with a fresh token (graphql-ws clients retry 4403, and re-read their connection params).
* Each operation runs with its own context: strawberry hands all operations of a connection
  one context, but DataLoader caches and audit entries belong to one operation.
* Events reach subscribers through the cache's publish/subscribe (one channel per store or
  customer, see ``api/events.py``), published only after the transaction that caused them
  committed. Each message is read again through the subscriber's own scope, so it never
  carries what that principal may not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocket, WebSocketState
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.types import ExecutionResult
from strawberry.utils.aio import aclosing

from api import events
from api.audit.service import record
from api.auth.keys import KeyRing
from api.auth.principal import ANONYMOUS, Principal
from api.auth.tokens import InvalidToken, authenticate_bearer, decode_access_token
from api.cache import Cache, CacheUnavailable
from api.errors import InputError
from api.graphql.context import Context, Info
from api.graphql.errors import coded
from api.settings import Settings

log = logging.getLogger("qudao.subscriptions")

# How often an idle connection looks its token up on the deny list. A message is never sent
# without a fresh check, and expiry is exact; this bounds how long a revoked token's idle
# connection lingers.
TOKEN_CHECK_SECONDS = 30.0
# Each subscription holds a pub/sub connection to Redis for as long as it runs.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 20
# Connection codes of graphql-transport-ws.
FORBIDDEN = 4403

T = TypeVar("T")
Result = TypeVar("Result")


class NotFound(InputError):
    """What a subscription names does not exist, or is not the caller's to follow: both
    answer the same, so another partner's store or order cannot be told from a missing one."""

    extensions = {"code": "NOT_FOUND"}  # graphql-core copies it onto the located error

    def __init__(self, type_name: str) -> None:
        super().__init__(f"No {type_name} with this ID to follow.")


class SocketConnection:
    """One websocket: the token it authenticated with, its principal, and how it ends."""

    def __init__(
        self, websocket: WebSocket, *, keys: KeyRing, cache: Cache, settings: Settings
    ) -> None:
        self.websocket = websocket
        self.keys = keys
        self.cache = cache
        self.settings = settings
        self.principal: Principal = ANONYMOUS
        self.token: str | None = None
        self.expires_at = 0.0
        self._ending = False

    async def authenticate(self, connection_params: dict[str, Any]) -> Principal:
        """Sign the connection in with the token of ``connection_init`` (or of the handshake's
        header); InvalidToken when there is none or it is not valid."""
        authorization = _authorization(connection_params)
        if authorization is None:
            authorization = self.websocket.headers.get("authorization")
        if authorization is None:
            raise InvalidToken("no access token: send {'Authorization': 'Bearer <token>'}")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("expected 'Bearer <token>'")
        token = token.strip()
        principal = await authenticate_bearer(
            self.keys,
            self.cache,
            token,
            issuer=self.settings.issuer,
            revocation_grace=self.settings.revocation_grace,
        )
        claims = decode_access_token(self.keys, token, issuer=self.settings.issuer)
        self.token, self.principal, self.expires_at = token, principal, float(claims["exp"])
        return principal

    async def still_valid(self) -> bool:
        """Whether the token still holds (not expired, not revoked); when it does not, the
        connection is closed, and the caller must send nothing more on it."""
        if self._ending:
            return False
        if self.token is None:  # strawberry runs nothing before connection_init; be sure
            await self.end("not signed in")
            return False
        if time.time() >= self.expires_at:
            await self.end("token expired")
            return False
        try:
            await authenticate_bearer(
                self.keys,
                self.cache,
                self.token,
                issuer=self.settings.issuer,
                revocation_grace=self.settings.revocation_grace,
            )
        except InvalidToken as error:
            await self.end(str(error))
            return False
        except CacheUnavailable:
            # Past the grace of a Redis outage: the client reconnects (4403) when it is back.
            await self.end("the token cannot be checked right now")
            return False
        return True

    async def watch(self) -> None:
        """Close the connection when its token expires, or soon after it is revoked."""
        try:
            while True:
                until_expiry = self.expires_at - time.time()
                await asyncio.sleep(max(0.0, min(TOKEN_CHECK_SECONDS, until_expiry)))
                if not await self.still_valid():
                    return
        except Exception:
            # The deny list cannot be read (the cache is down): a connection whose token
            # cannot be checked does not stay open.
            log.exception("could not check the token of a subscription connection")
            await self.end("the token could not be checked")

    async def rate_limit(self) -> int | None:
        """Count an operation against the principal's budget (shared with HTTP requests);
        the seconds to wait when it is spent, else None."""
        count, reset = await self.cache.hit(
            f"rate:api:{self.principal.subject}", self.settings.rate_window
        )
        return max(1, round(reset)) if count > self.settings.rate_limit else None

    async def end(self, reason: str) -> None:
        if self._ending:
            return
        self._ending = True
        log.info("closing a subscription connection of %s: %s", self.principal.subject, reason)
        if self.websocket.application_state is not WebSocketState.DISCONNECTED:
            # The client may be gone already; the connection is over either way.
            with contextlib.suppress(Exception):
                await self.websocket.close(code=FORBIDDEN, reason=f"Forbidden: {reason}"[:123])


def _authorization(connection_params: dict[str, Any]) -> str | None:
    for key, value in connection_params.items():
        if key.lower() == "authorization":
            if not isinstance(value, str):
                raise InvalidToken("the Authorization value must be a string")
            return value
    return None


class SocketContext(Context):
    """The context strawberry keeps for a whole connection. Operations do not run with it:
    each gets its own ``OperationContext`` (see ``for_operation``)."""

    def __init__(self, connection: SocketConnection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection = connection
        self.connection_params: dict[str, Any] = {}  # set by strawberry from connection_init

    def for_operation(self) -> OperationContext:
        return OperationContext(
            self.connection,
            db=self.db,
            cache=self.cache,
            wiring=self.wiring,
            nodes=self.nodes,
            principal=self.connection.principal,
            request_id=self.request_id,
            request=self.request,
        )


class OperationContext(Context):
    """The context of one subscription: its own loaders and audit entries, and the
    connection whose token every message is checked against."""

    def __init__(self, connection: SocketConnection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection = connection

    async def next_message(self) -> None:
        """Start a message afresh: loader caches of the messages before would serve rows as
        they were then."""
        self.reset_loaders()
        await self.write_audit()

    async def write_audit(self) -> None:
        """Write the audit entries (unmasked PII reads) of the messages sent so far: an
        operation's entries are otherwise written when it ends, and a subscription ends when
        its client goes away, often by a cancellation that skips the extension's write."""
        entries, self.audit_entries = self.audit_entries, []
        await record(self.db, self.principal, self.ip, entries)


def operation_context(info: Info) -> OperationContext:
    context = info.context
    if not isinstance(context, OperationContext):
        # Subscriptions are refused over HTTP (see QudaoSchema.execute); this is a bug.
        raise TypeError("a subscription resolver ran outside a websocket operation")
    return context


async def follow(
    context: OperationContext,
    channel: str,
    read: Callable[[AsyncSession, dict[str, Any]], Awaitable[T | None]],
) -> AsyncGenerator[T, None]:
    """The subscription's messages: for each event published on ``channel``, ``read`` it
    again (through the principal's scope: None skips the event), after checking the token."""
    connection = context.connection
    try:
        async with context.cache.subscribe(channel) as messages:
            async for message in messages:
                if not await connection.still_valid():
                    break
                async with context.db.read() as session:
                    item = await read(session, json.loads(message))
                if item is not None:
                    await context.next_message()
                    yield item
            else:
                return  # the cache closed the channel (shutdown): the subscription completes
    except Exception:
        # strawberry would send an event source's exception as it is, message and all, with
        # no path that marks it a bug: log it here and end the subscription with a masked one.
        log.exception("subscription to %s failed", channel)
        raise GraphQLError(
            "Internal server error.", extensions={"code": "INTERNAL_SERVER_ERROR"}
        ) from None
    finally:
        await context.write_audit()  # the last message's, however the subscription ends
    # The connection is closed: sending "complete" now would fail. Its handler cancels
    # this operation once the close is through.
    await asyncio.Future()


class SubscriptionSocket(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with the token checked per operation and a connection that
    ends with its token."""

    watchdog: asyncio.Task[None] | None = None

    @property
    def connection(self) -> SocketConnection:
        assert isinstance(self.context, SocketContext)
        return self.context.connection

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.watchdog is None:
            self.watchdog = asyncio.create_task(self.connection.watch())

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # Unacknowledged connections are closed by strawberry (4401) before anything runs.
        if self.connection_acknowledged:
            if not await self.connection.still_valid():
                return
            retry_after = await self.connection.rate_limit()
            if retry_after is not None:
                await self.send_message(
                    {
                        "id": message["id"],
                        "type": "error",
                        "payload": [
                            {
                                "message": "Too many requests.",
                                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
                            }
                        ],
                    }
                )
                return
        await super().handle_subscribe(message)

    async def shutdown(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
        await super().shutdown()


async def coded_results(results: AsyncGenerator[Result, None]) -> AsyncIterator[Result]:
    """Errors as HTTP clients see them (``extensions.code``, bugs masked): the HTTP view
    codes its results in ``process_result``, which the websocket transport does not call.
    Only subscriptions run here, so every result is an ExecutionResult (strawberry's stream
    also types the incremental frames of @defer and @stream, which they never send)."""
    async with aclosing(results):
        async for result in results:
            if isinstance(result, ExecutionResult) and result.errors:
                result.errors = [coded(error) for error in result.errors]
            yield result


def cache_publisher(cache: Cache) -> events.Publisher:
    """What ``Database.transaction`` calls with a committed transaction's events."""

    async def publish(published: Sequence[events.Event]) -> None:
        for channel, message in published:
            try:
                await cache.publish(channel, message)
            except CacheUnavailable:
                # Redis is down (its breaker logged that once): these events are lost, as
                # any event without a subscriber is; the outbox keeps what must arrive.
                return

    return publish
