"""How failures reach clients.

Expected failures of a mutation are payload ``errors`` (UserError: field path, message,
domain code). Bad arguments are top-level errors with ``BAD_USER_INPUT``. A database or
Redis that cannot be reached is ``SERVICE_UNAVAILABLE`` with ``extensions.retryAfter``
(seconds) and a fixed message: the client may retry (a write with its idempotency key).
Anything else is a bug: logged with the request id and masked as ``INTERNAL_SERVER_ERROR``.
No driver text, SQL or parameters ever reach a client.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Any, Protocol, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.schema.exceptions import (
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)

from api.cache import CacheUnavailable
from api.db import OutageLog, unavailable
from api.errors import DomainError, InputError, Problem

log = logging.getLogger("qudao.graphql")


class PermissionDenied(Exception):
    """The caller may not do this at all (an auth failure, not a payload error)."""


class Unauthenticated(Exception):
    """No access token where one is needed."""


@strawberry.interface(description="An expected failure of a mutation, tied to an input field.")
class UserError:
    field: list[str] | None = strawberry.field(
        description="Path to the input field at fault, when one is."
    )
    message: str


class _CodedError(Protocol):
    def __init__(self, *, field: list[str] | None, message: str, code: Any) -> None: ...


E = TypeVar("E", bound=_CodedError)


def user_errors(error_type: type[E], error: DomainError) -> list[E]:
    return [_from_problem(error_type, p) for p in error.problems]


def _from_problem(error_type: type[E], problem: Problem) -> E:
    return error_type(
        field=["input", *problem.field] if problem.field else None,
        message=problem.message,
        code=problem.code,
    )


class ErrorCode(enum.Enum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    FORBIDDEN = "FORBIDDEN"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


_KNOWN: dict[type[Exception], ErrorCode] = {
    InputError: ErrorCode.BAD_USER_INPUT,
    PermissionDenied: ErrorCode.FORBIDDEN,
    Unauthenticated: ErrorCode.UNAUTHENTICATED,
    # Redis is down and this field needs it (the breaker logged the outage once): the
    # client may retry; not a bug to log per request.
    CacheUnavailable: ErrorCode.SERVICE_UNAVAILABLE,
}


UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; try again shortly."
# What a client is told to wait before retrying when the database is down: short, since the
# first request after it is back succeeds (a pool's dead connections are replaced on checkout).
DATABASE_RETRY_AFTER = 1

# Raised before execution by graphql-core or strawberry about the request itself.
_REQUEST_ERRORS = (GraphQLError, CannotGetOperationTypeError, InvalidOperationTypeError)


def classify(error: GraphQLError) -> ErrorCode:
    original = error.original_error
    if error.message.startswith("Syntax Error"):
        return ErrorCode.GRAPHQL_PARSE_FAILED
    if original is not None and unavailable(original):
        return ErrorCode.SERVICE_UNAVAILABLE
    # No path, and nothing raised or raised about the document (validation, a literal or
    # variable that does not coerce, such as a bad Date: those point at their place in it):
    # it describes the request. A path-less error carrying any other exception comes from
    # the operation's own hooks (an extension): not the client's fault.
    if error.path is None and (
        original is None or error.nodes or isinstance(original, _REQUEST_ERRORS)
    ):
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    for kind, code in _KNOWN.items():
        if isinstance(original, kind):
            return code
    return ErrorCode.INTERNAL_SERVER_ERROR


def retry_after(error: GraphQLError) -> int:
    """Seconds a client should wait before retrying a SERVICE_UNAVAILABLE field."""
    original = error.original_error
    if isinstance(original, CacheUnavailable):
        return max(1, math.ceil(original.retry_after))
    return DATABASE_RETRY_AFTER


def coded(error: GraphQLError) -> GraphQLError:
    """The error as clients see it: with ``extensions.code``, and masked when unexpected."""
    code = classify(error)
    if code is ErrorCode.INTERNAL_SERVER_ERROR:
        message, extensions = "Internal server error.", {"code": code.value}
    elif code is ErrorCode.SERVICE_UNAVAILABLE:
        message = UNAVAILABLE_MESSAGE
        extensions = {"code": code.value, "retryAfter": retry_after(error)}
    else:
        message, extensions = error.message, {"code": code.value, **(error.extensions or {})}
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def log_unexpected(errors: list[GraphQLError], outage: OutageLog | None = None) -> None:
    """Log bugs with their traceback (the log record carries the request id). A request
    failed by the database being unavailable is counted in ``outage`` instead: one
    traceback per outage, not one per request."""
    counted = False
    for error in errors:
        code = classify(error)
        original = error.original_error
        if code is ErrorCode.SERVICE_UNAVAILABLE:
            # Redis outages are logged by the cache's circuit breaker.
            if outage and not counted and original and not isinstance(original, CacheUnavailable):
                outage.failed(original)
                counted = True
        elif code is ErrorCode.INTERNAL_SERVER_ERROR:
            log.error(
                "unexpected error in %s",
                ".".join(map(str, error.path or [])) or "operation",
                exc_info=error.original_error,
            )
