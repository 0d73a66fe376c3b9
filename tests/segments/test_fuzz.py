"""No input can put SQL into a segment's statement, or break its compilation.

Hypothesis throws random text, and random grammar-shaped queries with hostile values, at
the parser. Each input either fails with a clean SegmentError (line and column inside the
text) or gives a tree whose compiled statements, on PostgreSQL and on SQLite, hold no
literal at all: every value the marketer wrote is among the bound parameters, none of it is
in the SQL text, and the text has no quote and no number of its own. Dates range over the
whole calendar and relative dates past their limits, compiled against the real clock: out
of range is a SegmentError, never an overflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from api.analytics.rfm_scoring import RFM_SEGMENTS
from api.catalog.models import SalesChannel
from api.customers.profile import Gender
from api.db import utcnow
from api.segments.compiler import (
    count_statement,
    explain_statement,
    grant_members_statement,
    members_statement,
    moment,
)
from api.segments.expressions import FIELDS, Condition, Expr, Kind, Op, RelativeDate, conditions
from api.segments.parser import parse
from api.segments.query_errors import SegmentError

NOW = utcnow()
DIALECTS: list[Dialect] = [postgresql.asyncpg.dialect(), sqlite.aiosqlite.dialect()]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PLACEHOLDER = re.compile(r"\$\d+|%\(\w+\)s|\?|__\[POSTCOMPILE_\w+\]")
_CAST = re.compile(r"::[A-Z][A-Z ]*(\(\d+(, \d+)?\))?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _flat(values: Any) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list | tuple):
            yield from value
        else:
            yield value


def _bound_forms(condition: Condition) -> list[Any]:
    """What each written value must appear as among the parameters."""
    expected: list[Any] = []
    for value in condition.values:
        if isinstance(value, bool):
            continue  # true/false pick the SQL shape (IS NULL, EXISTS or NOT EXISTS)
        if isinstance(value, RelativeDate):
            expected.append(moment(value, NOW))
        elif isinstance(value, datetime):
            expected.append(value)
        elif isinstance(value, date):
            start = datetime(value.year, value.month, value.day, tzinfo=UTC)
            # A whole day: <= and > compare with its end, = and != with both ends.
            if condition.op in (Op.LE, Op.GT, Op.EQ, Op.NE):
                expected.append(start + timedelta(days=1))
            if condition.op not in (Op.LE, Op.GT):
                expected.append(start)
        elif condition.field == "recruiting_guide":
            expected.append(value.strip().lower())
        else:
            expected.append(value)
    if condition.within is not None:
        expected.append(moment(condition.within, NOW))
    return expected


def assert_parameterised(expr: Expr) -> None:
    statements = [
        count_statement(expr, now=NOW, partner_id=7),
        members_statement(expr, now=NOW),
        explain_statement(expr, 3, now=NOW, partner_id=7),
        grant_members_statement(expr, 11, now=NOW),
    ]
    for dialect in DIALECTS:
        for statement in statements:
            compiled = statement.compile(dialect=dialect)
            sql = compiled.string
            bare = _WORD.sub(" ", _CAST.sub(" ", _PLACEHOLDER.sub(" ", sql)))
            assert "'" not in bare and '"' not in bare, sql
            assert not re.search(r"\d", bare) and ";" not in sql and "--" not in sql, sql
            params = list(_flat(compiled.params.values()))
            for condition in conditions(expr):
                for value in _bound_forms(condition):
                    assert value in params, (value, sql, compiled.params)
                    if isinstance(value, str) and re.search(r"['\";]|--", value):
                        # What an injection needs (a quote, a statement end, a comment) is
                        # never in the SQL: not the marketer's, not the compiler's own.
                        assert value not in sql, (value, sql)
                if condition.field.startswith("attr."):
                    key = condition.field[len("attr.") :]
                    assert key in params or f'$."{key}"' in params, compiled.params


def check(text: str) -> None:
    try:
        expr = parse(text)
    except SegmentError as error:
        lines = text.split("\n")
        assert 1 <= error.line <= max(len(lines), 1)
        assert 1 <= error.column <= max(len(lines[error.line - 1]) + 1, 2001)
        assert error.message
        return
    assert_parameterised(expr)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_is_refused_cleanly_or_parameterised(text: str) -> None:
    check(text)


_LANGUAGE_CHARS = "()'=<>!,.-_ \n\"abcdefilmnorstuwxy0123456789ANDORNTIW;%$?:\\"


@FUZZ
@given(st.text(alphabet=_LANGUAGE_CHARS, max_size=200))
def test_language_shaped_noise_is_refused_cleanly_or_parameterised(text: str) -> None:
    check(text)


# --- grammar-shaped queries with hostile values ----------------------------------------------

_HOSTILE = st.sampled_from(
    [
        "'; DROP TABLE customer; --",
        "x' OR '1'='1",
        '"; SELECT 1; --',
        "$1",
        "%(param_1)s",
        "?",
        "\\' OR 1=1 --",
        "customer.id",
        "0x41",
        "1e309",
        "",
    ]
)
_TEXTS = st.one_of(_HOSTILE, st.text(max_size=30))
# What a text value may hold: anything but control characters and lone surrogates.
_CLEAN_TEXTS = st.one_of(
    _HOSTILE, st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30)
)
# The values of the fields with known values, in any case (most of them valid).
_KNOWN = [
    *(c.value for c in SalesChannel),
    *(c.name for c in SalesChannel),
    *(g.value.title() for g in Gender),
    *(name for _, _, name in RFM_SEGMENTS),
    "xiaohongshu",
    "mini program",
]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_NUMBERS = st.one_of(
    st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1).map(str),
    st.decimals(
        min_value=Decimal("-999999999"),
        max_value=Decimal("999999999"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    ).map(str),
)
# Up to past the limits (36500d, 5200w, 1200m, 100y) and much further.
_RELATIVE = st.builds(
    lambda n, u: f"-{n}{u}",
    st.one_of(st.integers(0, 400), st.integers(0, 40_000), st.integers(0, 10**30)),
    st.sampled_from("dwmyDWMY"),
)
# The whole calendar, its first and last days included (in range: 1900-2999).
_DATES = st.one_of(
    st.dates(),
    st.sampled_from([date.min, date.max, date(1900, 1, 1), date(2999, 12, 31)]),
).map(lambda d: _quoted(d.isoformat()))
_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-12))])
_MOMENTS = st.one_of(
    st.datetimes(timezones=_OFFSETS),
    st.sampled_from([datetime.min, datetime.max]).flatmap(
        lambda d: _OFFSETS.map(lambda tz: d.replace(tzinfo=tz))
    ),
).map(lambda d: _quoted(d.isoformat()))
_VALUES = st.one_of(
    _TEXTS.map(_quoted),
    _NUMBERS,
    _RELATIVE,
    _DATES,
    _MOMENTS,
    st.sampled_from(["true", "false", "TRUE"]),
)
_ANY_FIELD = st.one_of(
    st.sampled_from(sorted(FIELDS)),
    st.from_regex(r"attr\.[a-z0-9_]{1,12}", fullmatch=True),
    st.sampled_from(["ordres_count", "attr.Bad", "customer.id", "id"]),
)
_ANY_OP = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
# What each kind of field takes, so most generated queries are valid and reach the compiler.
_TYPED: dict[Kind, tuple[list[str], st.SearchStrategy[str]]] = {
    Kind.NUMBER: (["=", "!=", "<", "<=", ">", ">=", "IN"], _NUMBERS),
    Kind.DATE: (["<", "<=", ">", ">="], st.one_of(_RELATIVE, _DATES, _MOMENTS)),
    Kind.TEXT: (["=", "!=", "IN"], st.one_of(_TEXTS, st.sampled_from(_KNOWN)).map(_quoted)),
    Kind.TAG: (["=", "!=", "IN"], _TEXTS.map(_quoted)),
    Kind.PURCHASE: (["=", "!=", "IN"], _TEXTS.map(_quoted)),
    Kind.BOOL: (["=", "!="], st.sampled_from(["true", "false", "TRUE"])),
}


def _written(field: str, op: str, values: list[str], negated: bool, within: str | None) -> str:
    if op == "IN":
        written = f"{field} {'NOT ' if negated else ''}IN ({', '.join(values)})"
    else:
        written = f"{field} {op} {values[0]}"
    return written + (f" WITHIN {within}" if within else "")


@st.composite
def _conditions(draw: st.DrawFn) -> str:
    negated = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:  # anything: mostly refused, cleanly
        values = draw(st.lists(_VALUES, min_size=1, max_size=4))
        op = draw(st.one_of(_ANY_OP, st.just("IN")))
        within = draw(st.one_of(st.none(), _RELATIVE))
        return _written(draw(_ANY_FIELD), op, values, negated, within)
    if draw(st.integers(0, 5)) == 0:
        key = draw(st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True))
        kind = draw(st.sampled_from([Kind.NUMBER, Kind.TEXT]))
        field = f"attr.{key}"
    else:
        field = draw(st.sampled_from(sorted(FIELDS)))
        kind = FIELDS[field]
    ops, strategy = _TYPED[kind]
    op = draw(st.sampled_from(ops))
    values = draw(st.lists(strategy, min_size=1, max_size=4 if op == "IN" else 1))
    within = draw(st.one_of(st.none(), _RELATIVE)) if kind is Kind.PURCHASE else None
    return _written(field, op, values, negated, within)


_QUERIES = st.recursive(
    _conditions(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
        st.builds(lambda a, b: f"{a} or {b}", inner, inner),
        inner.map(lambda a: f"NOT {a}"),
        inner.map(lambda a: f"({a})"),
    ),
    max_leaves=8,
)


@FUZZ
@given(_QUERIES)
def test_grammar_shaped_queries_with_hostile_values_are_parameterised(text: str) -> None:
    check(text)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tag", "bought_sku", "recruiting_guide", "attr.note", "level"]),
            _CLEAN_TEXTS,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_well_formed_text_conditions_always_compile(pairs: list[tuple[str, str]]) -> None:
    """Text values of any content are valid; each reaches the statement only as a parameter."""
    text = " OR ".join(f"{field} = {_quoted(value)}" for field, value in pairs)
    expr = parse(text)
    assert [c.values for c in conditions(expr)] == [(value,) for _, value in pairs]
    assert_parameterised(expr)


@FUZZ
@given(
    st.sampled_from(sorted(f for f, kind in FIELDS.items() if kind is Kind.DATE)),
    st.sampled_from(["<", "<=", ">", ">=", "=", "!="]),
    st.one_of(_DATES, _MOMENTS, _RELATIVE),
)
def test_dates_anywhere_in_the_calendar_are_refused_cleanly_or_compile(
    field: str, op: str, value: str
) -> None:
    check(f"{field} {op} {value}")
