"""Mistakes in a segment query, at a line and column, and syntax errors explained in words a
marketer reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from api.segments.grammar import PARSER


def where(line: int, column: int) -> str:
    """'column 12', or 'line 2, column 5' once a query spans lines."""
    return f"column {column}" if line == 1 else f"line {line}, column {column}"


class SegmentError(ValueError):
    """A mistake in a segment query, at a line and column (both 1-based)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class SegmentSyntaxError(SegmentError):
    """The query is not well formed (a missing value, an unclosed parenthesis ...)."""


class SegmentSemanticError(SegmentError):
    """Well formed, but meaningless: an unknown field, a value of the wrong kind, a limit."""


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    before = text[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


_VALUES = frozenset({"NUMBER", "STRING", "RELDATE", "TRUE", "FALSE"})
_CONDITION_START = frozenset({"FIELD", "NOT", "LPAR"})
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "WITHIN", "TRUE", "FALSE"})
_NAMES = {
    "FIELD": "a field",
    "OP": "an operator",
    "NOT": "NOT",
    "IN": "IN",
    "AND": "AND",
    "OR": "OR",
    "WITHIN": "WITHIN",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "$END": "the end of the query",
    **dict.fromkeys(_VALUES, "a value"),
}
_PREVIOUS = re.compile(r"('(?:[^']|'')*'|[A-Za-z0-9_.\-]+|!=|<=|>=|[=<>(),]|\S)\s*$")


def syntax_error(text: str, error: UnexpectedInput) -> SegmentSyntaxError:
    if isinstance(error, UnexpectedToken):
        found = error.token
        at_end = found.type == "$END"
        offset = len(text.rstrip()) if at_end else (found.start_pos or 0)
        shown = "" if at_end else found.value
        expected = set(error.interactive_parser.accepts())
    else:
        assert isinstance(error, UnexpectedCharacters)
        offset = error.pos_in_stream
        assert offset is not None  # set for every UnexpectedCharacters (lark types it optional)
        expected = _expected_after(text[:offset])
        shown = text[offset]
        at_end = False
    if at_end and "RPAR" in expected and not expected & _VALUES:
        # Pointed at the parenthesis left open, not at the end of the query.
        opened = _unclosed(text)
        line, column = position(text, opened)
        return SegmentSyntaxError(
            f"The '(' at {where(line, column)} is never closed: add ')'.", line, column
        )
    line, column = position(text, offset)
    mistake = _Mistake(text, offset, expected, shown, at_end, where(line, column))
    return SegmentSyntaxError(mistake.explain(), line, column)


def _expected_after(prefix: str) -> set[str]:
    """What the parser would accept after ``prefix`` (the lexer's own list of allowed
    terminals is per lexer state, which LALR shares between places that accept less)."""
    try:
        PARSER.parse(prefix)
    except UnexpectedToken as error:
        return set(error.interactive_parser.accepts())
    except UnexpectedInput:
        return set()
    return {"AND", "OR", "$END"}


def clip(written: str) -> str:
    return written if len(written) <= 30 else written[:27] + "..."


def _quoted(written: str) -> str:
    """Text as the message shows it: quoted text stays as written, anything else is quoted."""
    written = clip(written)
    return written if written.startswith("'") else f"'{written}'"


@dataclass(frozen=True, slots=True)
class _Mistake:
    text: str
    offset: int
    expected: set[str]
    shown: str  # what was found ("" at the end of the query)
    at_end: bool
    at: str  # "column 12"

    @property
    def previous(self) -> tuple[str, int] | None:
        """The last thing written before the mistake and its offset, from a bounded tail
        (the regex is anchored at the end and would otherwise be tried from every position)."""
        start = max(0, self.offset - 80)
        match = _PREVIOUS.search(self.text[start : self.offset])
        return (match.group(1), start + match.start(1)) if match else None

    @property
    def after(self) -> str:
        previous = self.previous
        return f" after {_quoted(previous[0])}" if previous else ""

    @property
    def found(self) -> str:
        return " (the query ends there)" if self.at_end else f", found {_quoted(self.shown)}"

    def explain(self) -> str:
        expected, at, shown = self.expected, self.at, self.shown
        previous = self.previous
        if shown == '"':
            return f"Text goes in single quotes, like 'gold' (a double quote at {at})."
        if shown == "'":
            return f"Text starting at {at} is never closed: end it with ' (write '' for a quote)."
        if expected == {"RELDATE"}:
            return f"Expected a relative date like -90d after WITHIN at {at}{self.found}."
        if expected and expected <= _VALUES:
            if shown == "=" and previous and previous[0] == "=":
                return f"Compare with a single '=' (a second one at {at})."
            hint = ""
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", shown) and shown.upper() not in _KEYWORDS:
                hint = f" (text goes in single quotes: '{clip(shown)}'; yes/no is true/false)"
            return f"Expected a value{self.after} at {at}{self.found}{hint}."
        if expected == {"LPAR"}:
            return f"Expected '(' and a list of values after IN at {at}{self.found}."
        if expected and expected <= {"COMMA", "RPAR"}:
            return f"Expected ',' or ')' in the IN list{self.after} at {at}{self.found}."
        if "OP" in expected:
            if previous and previous[0].upper() in ("AND", "OR", "NOT", "IN", "WITHIN"):
                line, column = position(self.text, previous[1])
                return (
                    f"Expected a condition before {previous[0].upper()} at "
                    f"{where(line, column)}: AND and OR join two conditions."
                )
            return (
                f"Expected an operator (=, !=, <, <=, >, >=, IN or NOT IN){self.after} at {at}"
                f"{self.found}."
            )
        if expected & _CONDITION_START and not expected & {"AND", "OR"}:
            if self.at_end:
                return f"Expected a condition{self.after} at {at}: the query ends there."
            return f"Expected a condition (a field, NOT or '('){self.after} at {at}{self.found}."
        if expected & {"AND", "OR", "$END"}:
            if shown == ")" and "RPAR" not in expected:
                return f"This ')' at {at} closes nothing."
            if re.match(r"[A-Za-z]", shown) and re.search(r"\d$", self.text[: self.offset]):
                return (
                    f"'{clip(shown)}' cannot follow a number at {at}: write relative dates "
                    f"like -30d, -4w, -6m or -1y."
                )
            joiners = "AND, OR, ')'" if "RPAR" in expected else "AND, OR"
            return f"Expected {joiners} or the end of the query{self.after} at {at}{self.found}."
        names = sorted({_NAMES.get(name, name) for name in expected})
        wanted = ", ".join(names) if names else "nothing more"
        return f"Unexpected {_quoted(shown)} at {at}; expected {wanted}."


def _unclosed(text: str) -> int:
    """The offset of the last '(' left open, skipping quoted text."""
    opened: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'":
            close = text.find("'", index + 1)
            while close != -1 and text[close + 1 : close + 2] == "'":
                close = text.find("'", close + 2)
            index = len(text) if close == -1 else close + 1
            continue
        if char == "(":
            opened.append(index)
        elif char == ")" and opened:
            opened.pop()
        index += 1
    return opened[-1] if opened else 0
