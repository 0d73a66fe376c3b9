"""Checks on free text from callers that every domain shares."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Control characters (Unicode category Cc) and lone surrogates (Cs): PostgreSQL refuses NUL in
# text, and a lone surrogate cannot be encoded (to store it, or to digest it). Tab, LF and CR
# are allowed where a caller asks for line breaks (a description, a segment query).
_FORBIDDEN_WITH_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def forbidden_character(text: str, *, breaks: bool = False) -> int | None:
    """The offset of the first control character or lone surrogate in ``text`` (tab, LF and
    CR allowed with ``breaks``); None when there is none."""
    found = (_FORBIDDEN_WITH_BREAKS if breaks else _FORBIDDEN).search(text)
    return found.start() if found else None


class UnreadableText(ValueError):
    """A caller's text holds a control character or a lone surrogate; the message says
    which value and where."""


def check_texts(values: Iterable[tuple[str, str]]) -> None:
    """Refuse (UnreadableText) the first named value with a control character (tab and line
    breaks allowed) or a lone surrogate: the check GraphQL inputs get (api/graphql/guard.py),
    for what reaches us otherwise (OAuth forms and parameters)."""
    for name, value in values:
        for text in (name, value):
            bad = forbidden_character(text, breaks=True)
            if bad is not None:
                raise UnreadableText(
                    f"`{name[:40]}` cannot hold {describe_character(text[bad])} (at offset {bad})."
                )


def describe_character(char: str) -> str:
    """'a control character (U+0000)', 'a tab (U+0009)', 'a lone surrogate (U+D800)'."""
    if "\ud800" <= char <= "\udfff":
        kind = "a lone surrogate"
    else:
        kind = {"\t": "a tab", "\n": "a line break", "\r": "a line break"}.get(
            char, "a control character"
        )
    return f"{kind} (U+{ord(char):04X})"
