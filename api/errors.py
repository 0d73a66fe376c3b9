"""Errors that services raise. No GraphQL here: the CLI and jobs see the same errors."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One expected failure: a domain error code, a readable message, the input path."""

    code: enum.Enum
    message: str
    field: tuple[str, ...] | None = None


class DomainError(Exception):
    """An expected failure (validation, not found, limit reached): becomes payload errors."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = tuple(problems)

    @classmethod
    def one(cls, code: enum.Enum, message: str, *field: str) -> DomainError:
        return cls([Problem(code, message, field or None)])


class InputError(Exception):
    """A bad argument the client can fix (a malformed cursor, a page over the cap).

    Unlike a DomainError it is not part of a payload: it surfaces as a top-level GraphQL error
    with ``extensions.code = BAD_USER_INPUT``, and its message is never masked.
    """
