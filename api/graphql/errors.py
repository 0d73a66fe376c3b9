"""How failures reach clients.

Expected failures of a mutation are payload ``errors`` (UserError: field path, message,
domain code). Bad arguments are top-level errors with ``BAD_USER_INPUT``. Anything else is
a bug: logged with the request id and masked as ``INTERNAL_SERVER_ERROR``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.errors import DomainError, InputError, Problem

log = logging.getLogger("qudao.graphql")


class PermissionDenied(Exception):
    """The caller may not do this at all (an auth failure, not a payload error)."""


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


def input_id_error(error_type: type[E], code: enum.Enum, message: str, *path: str) -> list[E]:
    return [error_type(field=["input", *path], message=message, code=code)]


class ErrorCode(enum.Enum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    FORBIDDEN = "FORBIDDEN"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


_KNOWN: dict[type[Exception], ErrorCode] = {
    InputError: ErrorCode.BAD_USER_INPUT,
    PermissionDenied: ErrorCode.FORBIDDEN,
}


def classify(error: GraphQLError) -> ErrorCode:
    original = error.original_error
    if original is None:
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    for kind, code in _KNOWN.items():
        if isinstance(original, kind):
            return code
    return ErrorCode.INTERNAL_SERVER_ERROR


def _coded(error: GraphQLError) -> GraphQLError:
    code = classify(error)
    extensions = {**(error.extensions or {})}
    extensions.setdefault("code", code.value)
    message = error.message
    if code is ErrorCode.INTERNAL_SERVER_ERROR:
        message, extensions = "Internal server error.", {"code": code.value}
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


class ErrorPolicy(SchemaExtension):
    """Add ``extensions.code`` to every error and mask unexpected ones."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_coded(e) for e in result.errors]


def log_unexpected(errors: list[GraphQLError], request_id: str | None) -> None:
    for error in errors:
        if classify(error) is ErrorCode.INTERNAL_SERVER_ERROR:
            log.error(
                "unexpected error in %s",
                ".".join(map(str, error.path or [])) or "operation",
                exc_info=error.original_error,
                extra={"request_id": request_id},
            )
