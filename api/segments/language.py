"""The segment language (人群圈选): what marketers write, parsed into a checked tree.

Grammar (keywords are case-insensitive; AND binds tighter than OR, NOT tighter than AND)::

    expr       := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | atom
    atom       := "(" expr ")" | condition
    condition  := field op value [within]
                | field ["NOT"] "IN" "(" value ("," value)* ")" [within]
    within     := "WITHIN" reldate                 (purchases only)
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="
    value      := number | 'text' | true | false | reldate
    number     := -?digits[.digits]                e.g. 3, 99.5, -10
    'text'     := single-quoted; '' is a quote      e.g. 'gold', 'O''Brien'
    reldate    := -N(d|w|m|y)                       e.g. -30d, -4w, -6m, -1y: that long before now

Fields, by kind (``FIELDS``):

* numbers: ``orders_count``, ``total_spent``, ``avg_order_value``, ``gross_margin``,
  ``rfm_recency``, ``rfm_frequency``, ``rfm_monetary``, ``points_balance`` (all six
  operators and IN). A customer without orders has 0 orders, 0 spent, no RFM scores.
* dates: ``first_order_at``, ``last_order_at``, ``member_since``, ``created_at``:
  ``<``, ``<=``, ``>``, ``>=`` with a relative date (``last_order_at > -30d``: ordered in the
  last 30 days) or an ISO date ``'2026-01-01'`` (a whole UTC day: ``= '2026-01-01'`` is that
  day, ``> '2026-01-01'`` from the next day on) or an ISO time with an offset; years
  1900-2999.
* text: ``first_channel``, ``first_order_channel``, ``gender``, ``rfm_segment``, ``level``
  (a level code), ``recruiting_store`` (a store code), ``recruiting_partner`` (a partner
  code), ``recruiting_guide`` (the guide's staff email): ``=``, ``!=``, ``IN``, ``NOT IN``.
  ``first_order_channel`` (a sales channel), ``gender`` and ``rfm_segment`` take only the
  values stored for them, in any case (``'MINI_PROGRAM'`` is ``'mini_program'``);
  ``first_channel`` any channel name (lowercase letters, digits and _), in any case. Codes
  and emails are matched as stored.
* true/false: ``member``, ``consent.marketing_messages``, ``consent.profiling``
  (``= false`` means not granted: refused or never asked).
* ``tag = 'vip'``, ``tag IN ('a', 'b')``: has the tag (any of them); ``tag != 'x'`` and
  ``NOT tag = 'x'``: does not have it.
* ``attr.<key>`` (key of lowercase letters, digits and _): a customer attribute; text values
  compare with ``=``, ``!=``, ``IN``, ``NOT IN``, numbers with all six operators.
* purchases: ``bought_sku = 'SKU1'``, ``bought_sku IN ('A', 'B')``, ``bought_product =
  'CODE'``, each optionally ``WITHIN -90d``: a counted order (placed, ready, completed or
  partially refunded) with a line of it not wholly refunded; in a partner's segment (or
  a partner's preview), an order of that partner's.

Missing values never match a comparison (a customer without orders has no
``last_order_at``, so ``last_order_at < -30d`` is false for them); ``!=`` and ``NOT IN`` are
the exact opposites of ``=`` and ``IN``, and ``NOT`` of its condition, so they do match them.

Limits: 2000 characters, 50 conditions, 500 values in one IN list, nesting 20 deep. No
control characters (tabs and line breaks only between conditions) and no lone surrogates.
Every mistake is a ``SegmentError`` whose message names the line and column.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from api.analytics.rfm_scoring import RFM_SEGMENTS
from api.catalog.models import SalesChannel
from api.customers.service import Gender
from api.text import describe_character, forbidden_character

MAX_QUERY_CHARS = 2000
MAX_CONDITIONS = 50
MAX_IN_VALUES = 500
MAX_DEPTH = 20
MAX_TEXT_CHARS = 200
MAX_NUMBER_DIGITS = 15  # before the point; Numeric(14, 2) money fits with room
MAX_DECIMALS = 6
# How far back a relative date may reach, per unit (about a century each).
MAX_RELATIVE = {"d": 36_500, "w": 5_200, "m": 1_200, "y": 100}
# Years of ISO dates and times: far enough either way for any customer, and far from the
# calendar's ends (a day after 9999-12-31, or 0001-01-01 in UTC+8, does not exist).
MIN_YEAR, MAX_YEAR = 1900, 2999
_ATTRIBUTE_KEY = re.compile(r"[a-z0-9_]{1,64}")
# Control characters (Unicode Cc) and lone surrogates: PostgreSQL refuses NUL, and no
# engine can encode a surrogate. Tab, LF and CR may separate conditions, never in a value.

_GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> negation
    | atom
?atom: "(" expr ")"
    | condition
condition: FIELD OP value within?
    | FIELD NOT? IN "(" value ("," value)* ")" within?
within: WITHIN RELDATE
?value: NUMBER | STRING | RELDATE | TRUE | FALSE

AND: "and"i
OR: "or"i
NOT: "not"i
IN: "in"i
WITHIN: "within"i
TRUE: "true"i
FALSE: "false"i
FIELD: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?/
OP: "=" | "!=" | "<=" | ">=" | "<" | ">"
RELDATE.2: /-\d+[dwmy](?![A-Za-z0-9_])/i
NUMBER: /-?\d+(\.\d+)?/
STRING: /'(?:[^']|'')*'/
%ignore /\s+/
"""

# LALR: linear time on any input (no backtracking), and exact "expected" sets for errors.
_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


# --- errors ----------------------------------------------------------------------------------


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


# --- the checked tree ------------------------------------------------------------------------


class Kind(enum.Enum):
    NUMBER = "number"
    DATE = "date"
    TEXT = "text"
    BOOL = "bool"
    TAG = "tag"
    ATTRIBUTE = "attribute"
    PURCHASE = "purchase"


FIELDS: dict[str, Kind] = {
    "orders_count": Kind.NUMBER,
    "total_spent": Kind.NUMBER,
    "avg_order_value": Kind.NUMBER,
    "gross_margin": Kind.NUMBER,
    "rfm_recency": Kind.NUMBER,
    "rfm_frequency": Kind.NUMBER,
    "rfm_monetary": Kind.NUMBER,
    "points_balance": Kind.NUMBER,
    "first_order_at": Kind.DATE,
    "last_order_at": Kind.DATE,
    "member_since": Kind.DATE,
    "created_at": Kind.DATE,
    "first_channel": Kind.TEXT,
    "first_order_channel": Kind.TEXT,
    "gender": Kind.TEXT,
    "rfm_segment": Kind.TEXT,
    "level": Kind.TEXT,
    "recruiting_store": Kind.TEXT,
    "recruiting_partner": Kind.TEXT,
    "recruiting_guide": Kind.TEXT,
    "member": Kind.BOOL,
    "consent.marketing_messages": Kind.BOOL,
    "consent.profiling": Kind.BOOL,
    "tag": Kind.TAG,
    "bought_sku": Kind.PURCHASE,
    "bought_product": Kind.PURCHASE,
}
ATTRIBUTE_PREFIX = "attr."


class Op(enum.Enum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "IN"
    NOT_IN = "NOT IN"


ORDERING = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})
EQUALITY = frozenset({Op.EQ, Op.NE, Op.IN, Op.NOT_IN})


@dataclass(frozen=True, slots=True)
class RelativeDate:
    """``amount`` units before now: -30d is RelativeDate(30, "d")."""

    amount: int
    unit: str  # d, w, m, y

    def __str__(self) -> str:
        return f"-{self.amount}{self.unit}"


Value = int | Decimal | str | bool | RelativeDate | date | datetime


@dataclass(frozen=True, slots=True)
class Condition:
    """One leaf: ``field op value(s) [WITHIN reldate]``, checked against the field's kind.

    Dates are already typed: a relative date, a ``date`` (a whole UTC day) or an aware
    ``datetime``. ``text`` is the condition as written, for explanations.
    """

    field: str  # canonical: orders_count, consent.profiling, attr.color
    op: Op
    values: tuple[Value, ...]
    within: RelativeDate | None
    text: str
    line: int
    column: int

    @property
    def kind(self) -> Kind:
        return Kind.ATTRIBUTE if self.field.startswith(ATTRIBUTE_PREFIX) else FIELDS[self.field]


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Expr


Expr = Condition | And | Or | Not


def conditions(expr: Expr) -> Iterator[Condition]:
    """The leaves, in the order they are written."""
    if isinstance(expr, Condition):
        yield expr
    elif isinstance(expr, Not):
        yield from conditions(expr.part)
    else:
        for part in expr.parts:
            yield from conditions(part)


# --- parsing ---------------------------------------------------------------------------------


def parse(text: str) -> Expr:
    """The checked tree of a segment query; SegmentError (syntax or meaning) if it is wrong."""
    if len(text) > MAX_QUERY_CHARS:
        line, column = _position(text, MAX_QUERY_CHARS)
        raise SegmentSemanticError(
            f"A segment query is at most {MAX_QUERY_CHARS} characters; this one has "
            f"{len(text)} (the limit is passed at {where(line, column)}).",
            line,
            column,
        )
    bad = forbidden_character(text, breaks=True)
    if bad is not None:
        line, column = _position(text, bad)
        raise SegmentSemanticError(
            f"The query holds {describe_character(text[bad])} at {where(line, column)}; remove it.",
            line,
            column,
        )
    if not text.strip():
        raise SegmentSyntaxError(
            "The query is empty: write a condition such as orders_count >= 1.", 1, 1
        )
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    _check_shape(tree)
    return _Builder(text).build(tree)


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    before = text[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


def _check_shape(tree: Tree[Token] | Token) -> None:
    """Depth and size limits, walked without recursion (a hostile query may nest deeply)."""
    leaves = 0
    stack: list[tuple[Tree[Token] | Token, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data == "condition":
            leaves += 1
            if leaves > MAX_CONDITIONS:
                # Reported at the first condition past the limit, in reading order below.
                break
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise SegmentSemanticError(
                f"Conditions are nested more than {MAX_DEPTH} levels deep at "
                f"{where(node.meta.line, node.meta.column)}; simplify the query.",
                node.meta.line,
                node.meta.column,
            )
        stack.extend((child, depth) for child in node.children)
    if leaves > MAX_CONDITIONS:
        extra = [t for t in tree.iter_subtrees_topdown() if t.data == "condition"]
        extra.sort(key=lambda t: t.meta.start_pos)
        meta = extra[MAX_CONDITIONS].meta
        raise SegmentSemanticError(
            f"A segment has at most {MAX_CONDITIONS} conditions; condition "
            f"{MAX_CONDITIONS + 1} starts at {where(meta.line, meta.column)}.",
            meta.line,
            meta.column,
        )


class _Builder:
    """Lark's tree → the checked tree, checking each condition against its field."""

    def __init__(self, text: str) -> None:
        self.text = text

    def build(self, node: Tree[Token]) -> Expr:
        if node.data == "or_expr":
            return Or(tuple(self.build(c) for c in node.children if isinstance(c, Tree)))
        if node.data == "and_expr":
            return And(tuple(self.build(c) for c in node.children if isinstance(c, Tree)))
        if node.data == "negation":
            return Not(self.build(node.children[-1]))  # type: ignore[arg-type]
        return self.condition(node)

    def condition(self, node: Tree[Token]) -> Condition:
        tokens = [c for c in node.children if isinstance(c, Token)]
        within_tree = next((c for c in node.children if isinstance(c, Tree)), None)
        field_token = tokens[0]
        field = _field(field_token)
        kind = Kind.ATTRIBUTE if field.startswith(ATTRIBUTE_PREFIX) else FIELDS[field]
        rest = tokens[1:]
        if rest[0].type == "OP":
            op_token = rest[0]
            op = Op(op_token.value)
            value_tokens = rest[1:]
        else:
            op_token = rest[0]
            op = Op.NOT_IN if rest[0].type == "NOT" else Op.IN
            value_tokens = rest[2:] if op is Op.NOT_IN else rest[1:]
            if len(value_tokens) > MAX_IN_VALUES:
                extra = value_tokens[MAX_IN_VALUES]
                raise SegmentSemanticError(
                    f"An IN list takes at most {MAX_IN_VALUES} values; value "
                    f"{MAX_IN_VALUES + 1} is at {_at(extra)}.",
                    extra.line or 1,
                    extra.column or 1,
                )
        _check_op(field, kind, op, op_token)
        values = tuple(_value(field, kind, op, t) for t in value_tokens)
        if kind is Kind.ATTRIBUTE and len({isinstance(v, str) for v in values}) > 1:
            raise _fail(
                value_tokens[0],
                f"{field} IN (...) takes either text or numbers, not both (at "
                f"{_at(value_tokens[0])}).",
            )
        within = None
        if within_tree is not None:
            within_token = within_tree.children[0]
            assert isinstance(within_token, Token)
            if kind is not Kind.PURCHASE:
                raise SegmentSemanticError(
                    f"WITHIN applies to bought_sku and bought_product only, not {field} "
                    f"(at {_at(within_token)}).",
                    within_token.line or 1,
                    within_token.column or 1,
                )
            date_token = within_tree.children[1]
            assert isinstance(date_token, Token)
            within = _relative(date_token)
        meta = node.meta
        return Condition(
            field=field,
            op=op,
            values=values,
            within=within,
            text=self.text[meta.start_pos : meta.end_pos],
            line=meta.line,
            column=meta.column,
        )


def _at(token: Token) -> str:
    return where(token.line or 1, token.column or 1)


def _fail(token: Token, message: str) -> SegmentSemanticError:
    return SegmentSemanticError(message, token.line or 1, token.column or 1)


def _field(token: Token) -> str:
    name = token.value
    lowered = name.lower()
    if lowered.startswith(ATTRIBUTE_PREFIX):
        key = name[len(ATTRIBUTE_PREFIX) :]
        if not _ATTRIBUTE_KEY.fullmatch(key):
            raise _fail(
                token,
                f"Attribute names are lowercase letters, digits and _ (at most 64): "
                f"'{key}' at {_at(token)}.",
            )
        return ATTRIBUTE_PREFIX + key
    if lowered in FIELDS:
        return lowered
    names = [*FIELDS, "attr.<key>"]
    close = difflib.get_close_matches(lowered, names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f". Fields: {', '.join(names)}."
    raise _fail(token, f"Unknown field '{name}' at {_at(token)}{hint}")


_KIND_OPS = {
    Kind.NUMBER: frozenset(Op),
    Kind.DATE: ORDERING | {Op.EQ, Op.NE},
    Kind.TEXT: EQUALITY,
    Kind.TAG: EQUALITY,
    Kind.PURCHASE: EQUALITY,
    Kind.BOOL: frozenset({Op.EQ, Op.NE}),
    Kind.ATTRIBUTE: frozenset(Op),
}
_OPS_HINT = {
    Kind.DATE: "<, <=, >, >= (or = and != with a date like '2026-01-01')",
    Kind.TEXT: "=, !=, IN or NOT IN",
    Kind.TAG: "=, !=, IN or NOT IN",
    Kind.PURCHASE: "=, !=, IN or NOT IN",
    Kind.BOOL: "= or != with true or false",
}


def _check_op(field: str, kind: Kind, op: Op, token: Token) -> None:
    if op not in _KIND_OPS[kind]:
        raise _fail(
            token,
            f"{field} cannot be compared with {op.value} (at {_at(token)}); use {_OPS_HINT[kind]}.",
        )


_WANTS = {
    Kind.NUMBER: "a number",
    Kind.DATE: "a relative date like -30d or a date like '2026-01-01'",
    Kind.TEXT: "text in single quotes",
    Kind.TAG: "a tag in single quotes",
    Kind.PURCHASE: "a code in single quotes",
    Kind.BOOL: "true or false",
    Kind.ATTRIBUTE: "text in single quotes or a number",
}
_DESCRIBE = {
    "NUMBER": "the number",
    "STRING": "the text",
    "RELDATE": "the relative date",
    "TRUE": "",
    "FALSE": "",
}


def _value(field: str, kind: Kind, op: Op, token: Token) -> Value:
    kind_of_token = token.type
    wanted = {
        Kind.NUMBER: {"NUMBER"},
        Kind.DATE: {"RELDATE", "STRING"},
        Kind.TEXT: {"STRING"},
        Kind.TAG: {"STRING"},
        Kind.PURCHASE: {"STRING"},
        Kind.BOOL: {"TRUE", "FALSE"},
        Kind.ATTRIBUTE: {"STRING", "NUMBER"},
    }[kind]
    if kind_of_token not in wanted:
        shown = f"{_DESCRIBE[kind_of_token]} {token.value}".strip()
        raise _fail(token, f"{field} takes {_WANTS[kind]}, not {shown} (at {_at(token)}).")
    if kind_of_token == "NUMBER":
        return _number(token)
    if kind_of_token in ("TRUE", "FALSE"):
        return kind_of_token == "TRUE"
    if kind_of_token == "RELDATE":
        relative = _relative(token)
        if op in (Op.EQ, Op.NE, Op.IN, Op.NOT_IN):
            raise _fail(
                token,
                f"A relative date marks a moment: compare {field} with <, <=, > or >= "
                f"(at {_at(token)}), or use a date like '2026-01-01' with =.",
            )
        return relative
    text = _text(token)
    if kind is Kind.DATE:
        return _date(field, token, text)
    if field == "first_channel" or field in _VOCABULARY:
        return _enumerated(field, token, text)
    if kind is Kind.ATTRIBUTE and op in ORDERING:
        raise _fail(
            token,
            f"Text compares with =, != or IN; {field} {op.value} needs a number (at {_at(token)}).",
        )
    return text


def _number(token: Token) -> int | Decimal:
    digits, _, decimals = token.value.lstrip("-").partition(".")
    if len(digits.lstrip("0")) > MAX_NUMBER_DIGITS or len(decimals) > MAX_DECIMALS:
        raise _fail(
            token,
            f"{token.value} is out of range: at most {MAX_NUMBER_DIGITS} digits before the "
            f"point and {MAX_DECIMALS} after (at {_at(token)}).",
        )
    return Decimal(token.value) if decimals else int(token.value)


def _text(token: Token) -> str:
    text = token.value[1:-1].replace("''", "'")
    if len(text) > MAX_TEXT_CHARS:
        raise _fail(
            token, f"Text values are at most {MAX_TEXT_CHARS} characters (at {_at(token)})."
        )
    bad = forbidden_character(text)
    if bad is not None:
        raise _fail(
            token,
            f"Text values cannot hold {describe_character(text[bad])} (the text at {_at(token)}).",
        )
    return text


# Text fields whose stored values are a fixed set: any other value would match nobody (or,
# negated, everybody), so it is a mistake. Written in any case; compared as stored.
_VOCABULARY: dict[str, tuple[str, ...]] = {
    "first_order_channel": tuple(c.value for c in SalesChannel),
    "gender": tuple(g.value for g in Gender),
    "rfm_segment": tuple(name for _, _, name in RFM_SEGMENTS),
}
# first_channel is any channel name a touch or a customer upsert gave (customers' format),
# stored lowercase; the sales channels are only the usual ones.
_CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _enumerated(field: str, token: Token, text: str) -> str:
    """A value of a field with known values, as stored; a mistake names the closest one."""
    lowered = text.strip().lower()
    if field == "first_channel":
        if _CHANNEL_NAME.fullmatch(lowered):
            return lowered
        known: tuple[str, ...] = tuple(c.value for c in SalesChannel)
        what = "a channel name (lowercase letters, digits and _), such as"
    else:
        known = _VOCABULARY[field]
        if lowered in known:
            return lowered
        what = "one of"
    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise _fail(
        token,
        f"{field} takes {what} {', '.join(known)}; not '{_clip(text)}' (at {_at(token)}){hint}",
    )


def _relative(token: Token) -> RelativeDate:
    amount, unit = int(token.value[1:-1]), token.value[-1].lower()
    if amount > MAX_RELATIVE[unit]:
        raise _fail(
            token,
            f"{token.value} reaches too far back: at most {MAX_RELATIVE[unit]}{unit} "
            f"(at {_at(token)}).",
        )
    return RelativeDate(amount, unit)


def _date(field: str, token: Token, text: str) -> date | datetime:
    value: date | None
    try:
        value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        value = None
    if value is None or (isinstance(value, datetime) and value.tzinfo is None):
        raise _fail(
            token,
            f"{field} takes a date like '2026-01-01' or a time with its offset like "
            f"'2026-01-01T09:00:00+08:00'; '{text}' is neither (at {_at(token)}).",
        )
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise _fail(
            token,
            f"{field} takes dates from {MIN_YEAR} to {MAX_YEAR}; '{text}' is out of range "
            f"(at {_at(token)}).",
        )
    # Within those years a day's end, or a time moved to UTC, stays inside the calendar.
    return value.astimezone(UTC) if isinstance(value, datetime) else value


# --- syntax errors in words a marketer reads --------------------------------------------------

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


def _syntax_error(text: str, error: UnexpectedInput) -> SegmentSyntaxError:
    if isinstance(error, UnexpectedToken):
        found = error.token
        at_end = found.type == "$END"
        offset = len(text.rstrip()) if at_end else (found.start_pos or 0)
        shown = "" if at_end else found.value
        expected = set(error.interactive_parser.accepts())
    else:
        assert isinstance(error, UnexpectedCharacters)
        offset = error.pos_in_stream
        expected = _expected_after(text[:offset])
        shown = text[offset]
        at_end = False
    if at_end and "RPAR" in expected and not expected & _VALUES:
        # Pointed at the parenthesis left open, not at the end of the query.
        opened = _unclosed(text)
        line, column = _position(text, opened)
        return SegmentSyntaxError(
            f"The '(' at {where(line, column)} is never closed: add ')'.", line, column
        )
    line, column = _position(text, offset)
    mistake = _Mistake(text, offset, expected, shown, at_end, where(line, column))
    return SegmentSyntaxError(mistake.explain(), line, column)


def _expected_after(prefix: str) -> set[str]:
    """What the parser would accept after ``prefix`` (the lexer's own list of allowed
    terminals is per lexer state, which LALR shares between places that accept less)."""
    try:
        _PARSER.parse(prefix)
    except UnexpectedToken as error:
        return set(error.interactive_parser.accepts())
    except UnexpectedInput:
        return set()
    return {"AND", "OR", "$END"}


def _clip(written: str) -> str:
    return written if len(written) <= 30 else written[:27] + "..."


def _quoted(written: str) -> str:
    """Text as the message shows it: quoted text stays as written, anything else is quoted."""
    written = _clip(written)
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
                hint = f" (text goes in single quotes: '{_clip(shown)}'; yes/no is true/false)"
            return f"Expected a value{self.after} at {at}{self.found}{hint}."
        if expected == {"LPAR"}:
            return f"Expected '(' and a list of values after IN at {at}{self.found}."
        if expected and expected <= {"COMMA", "RPAR"}:
            return f"Expected ',' or ')' in the IN list{self.after} at {at}{self.found}."
        if "OP" in expected:
            if previous and previous[0].upper() in ("AND", "OR", "NOT", "IN", "WITHIN"):
                line, column = _position(self.text, previous[1])
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
                    f"'{_clip(shown)}' cannot follow a number at {at}: write relative dates "
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


__all__ = [
    "FIELDS",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_QUERY_CHARS",
    "And",
    "Condition",
    "Expr",
    "Kind",
    "Not",
    "Op",
    "Or",
    "RelativeDate",
    "SegmentError",
    "SegmentSemanticError",
    "SegmentSyntaxError",
    "conditions",
    "parse",
]
