"""How failures reach clients.

Expected failures of a mutation are payload ``errors`` (UserError: field path, message,
domain code). Bad arguments are top-level errors with ``BAD_USER_INPUT``. Anything else is
a bug: logged with the request id and masked as ``INTERNAL_SERVER_ERROR``.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Protocol, TypeVar

import strawberry
from graphql import GraphQLError

from api.cache import CacheUnavailable
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


def classify(error: GraphQLError) -> ErrorCode:
    original = error.original_error
    if error.message.startswith("Syntax Error"):
        return ErrorCode.GRAPHQL_PARSE_FAILED
    # No path: raised before execution (validation, variable coercion such as a bad Date),
    # so it describes the request, whatever exception carried it.
    if original is None or error.path is None:
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    for kind, code in _KNOWN.items():
        if isinstance(original, kind):
            return code
    return ErrorCode.INTERNAL_SERVER_ERROR


def coded(error: GraphQLError) -> GraphQLError:
    """The error as clients see it: with ``extensions.code``, and masked when unexpected."""
    code = classify(error)
    if code is ErrorCode.INTERNAL_SERVER_ERROR:
        message, extensions = "Internal server error.", {"code": code.value}
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


def log_unexpected(errors: list[GraphQLError]) -> None:
    """Log bugs with their traceback (the log record carries the request id)."""
    for error in errors:
        if classify(error) is ErrorCode.INTERNAL_SERVER_ERROR:
            log.error(
                "unexpected error in %s",
                ".".join(map(str, error.path or [])) or "operation",
                exc_info=error.original_error,
            )
