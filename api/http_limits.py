"""What an HTTP request may be before any handler reads it, and how its body is read.

* Headers: at most ``max_headers`` of them and ``max_header_bytes`` in all (431).
* Body: at most ``max_body_bytes``, refused from its Content-Length when it declares one and
  counted as it arrives when it does not (413); a Content-Length that is not a number is 400.
* A body that stops arriving (shorter than its Content-Length, or trickled) holds the
  connection at most ``body_timeout`` seconds (408).
* Each of these refusals closes the connection: the rest of the body is still on the wire.
* A client that goes away before its body is read is not an error of ours: one info line.

JSON bodies are then decoded by ``decode_json_body``: strict UTF-8, not so deep that the
decoder runs out of stack, no number past Python's 4,300-digit limit, no NaN or Infinity.
Every refusal is a 4xx with a reason, so the connection stays open for the next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("qudao.http")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_body_bytes: int
    body_timeout: float
    max_header_bytes: int
    max_headers: int


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            self._check_headers(scope)
            await self.app(scope, self._limited(receive), tracking_send)
        except _Refused as refused:
            if started:  # too late to answer: the handler read past the limit while streaming
                raise
            await _plain(send, refused.status, refused.reason)
        except ClientDisconnect:
            log.info("client disconnected before its request was read")

    def _check_headers(self, scope: Scope) -> None:
        limits = self.limits
        headers = scope.get("headers") or []
        size = sum(len(name) + len(value) for name, value in headers)
        if len(headers) > limits.max_headers or size > limits.max_header_bytes:
            raise _Refused(
                431,
                f"Request headers too large: at most {limits.max_headers} headers and "
                f"{limits.max_header_bytes} bytes.",
            )
        declared = dict(headers).get(b"content-length")
        if declared is None:
            return
        if not declared.isdigit():
            raise _Refused(400, "Content-Length is not a number.")
        if int(declared) > limits.max_body_bytes:
            raise _Refused(413, self._too_large())

    def _too_large(self) -> str:
        return f"Request body too large: at most {self.limits.max_body_bytes} bytes."

    def _limited(self, receive: Receive) -> Receive:
        limits = self.limits
        received = 0
        complete = False
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, complete, deadline
            if complete:  # after the body, a handler only waits for a disconnect: no limit
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + limits.body_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refused(
                    408, f"The request body did not arrive within {limits.body_timeout:g} seconds."
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limits.max_body_bytes:
                    raise _Refused(413, self._too_large())
                complete = not message.get("more_body", False)
            return message

        return limited_receive


async def _plain(send: Send, status: int, reason: str) -> None:
    # Refused before its body was read (or while): what is left of it is still on the wire,
    # and a client that sends too much or too slowly is not worth keeping. (A body read
    # whole and found malformed is a 400 from the view, and the connection stays.)
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": reason.encode()})


class BadBody(ValueError):
    """A body that is not the JSON object a request must be; the message says why."""


def decode_json_body(data: str | bytes) -> Any:
    """The JSON value of a body, or BadBody saying what is wrong with it. Input values are
    bounded in depth later, with the other input limits (``api/graphql/guard.py``)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadBody(f"The body is not valid UTF-8 (at byte {error.start}).") from None
    try:
        return json.loads(data, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise BadBody(f"The body is not valid JSON: {error}.") from None
    except RecursionError:
        raise BadBody("The JSON body is nested too deeply.") from None
    except ValueError as error:  # an integer past the 4,300-digit conversion limit
        raise BadBody(f"The body holds a number that cannot be read: {error}.") from None


def _no_constant(name: str) -> Any:
    raise BadBody(f"The body holds {name}, which is not a JSON number.")
