"""A segment query parsed into the checked tree: limits first, then the grammar, then each
condition checked against its field (its operators, the kind and range of its values)."""

from __future__ import annotations

import difflib
import re
from datetime import UTC, date, datetime
from decimal import Decimal

from lark import Token, Tree, UnexpectedInput

from api.analytics.rfm_scoring import RFM_SEGMENTS
from api.catalog.models import SalesChannel
from api.customers.profile import Gender
from api.segments.expressions import (
    ATTRIBUTE_PREFIX,
    EQUALITY,
    FIELDS,
    ORDERING,
    And,
    Condition,
    Expr,
    Kind,
    Not,
    Op,
    Or,
    RelativeDate,
    Value,
)
from api.segments.grammar import MAX_CONDITIONS, MAX_DEPTH, MAX_IN_VALUES, MAX_QUERY_CHARS, PARSER
from api.segments.query_errors import (
    SegmentSemanticError,
    SegmentSyntaxError,
    clip,
    position,
    syntax_error,
    where,
)
from api.text import describe_character, forbidden_character

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
def parse(text: str) -> Expr:
    """The checked tree of a segment query; SegmentError (syntax or meaning) if it is wrong."""
    if len(text) > MAX_QUERY_CHARS:
        line, column = position(text, MAX_QUERY_CHARS)
        raise SegmentSemanticError(
            f"A segment query is at most {MAX_QUERY_CHARS} characters; this one has "
            f"{len(text)} (the limit is passed at {where(line, column)}).",
            line,
            column,
        )
    bad = forbidden_character(text, breaks=True)
    if bad is not None:
        line, column = position(text, bad)
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
        tree = PARSER.parse(text)
    except UnexpectedInput as error:
        raise syntax_error(text, error) from None
    _check_shape(tree)
    return _Builder(text).build(tree)


def _check_shape(tree: Tree[Token]) -> None:
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
            operand = node.children[-1]
            assert isinstance(operand, Tree)  # NOT applies to a subtree, never a bare token
            return Not(self.build(operand))
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
        f"{field} takes {what} {', '.join(known)}; not '{clip(text)}' (at {_at(token)}){hint}",
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
