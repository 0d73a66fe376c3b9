"""The segment language: the tree each operator and precedence rule gives, the messages a
marketer gets for mistakes (with line and column), and the limits. No database here."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from api.db import utcnow
from api.segments.compiler import count_statement, moment
from api.segments.expressions import And, Condition, Not, Op, Or, RelativeDate, conditions
from api.segments.parser import parse
from api.segments.query_errors import SegmentError, SegmentSemanticError, SegmentSyntaxError


def leaf(query: str) -> Condition:
    expr = parse(query)
    assert isinstance(expr, Condition)
    return expr


def shape(query: str) -> str:
    """The tree as a nested string of field names: precedence at a glance."""

    def show(expr: object) -> str:
        if isinstance(expr, Condition):
            return expr.field
        if isinstance(expr, Not):
            return f"NOT {show(expr.part)}"
        assert isinstance(expr, And | Or)
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(show(p) for p in expr.parts) + ")"

    return show(parse(query))


@pytest.mark.parametrize(
    ("query", "op", "values"),
    [
        ("orders_count = 3", Op.EQ, (3,)),
        ("orders_count != 3", Op.NE, (3,)),
        ("orders_count < 3", Op.LT, (3,)),
        ("orders_count <= 3", Op.LE, (3,)),
        ("orders_count > 3", Op.GT, (3,)),
        ("orders_count >= 3", Op.GE, (3,)),
        ("orders_count IN (1, 2, 3)", Op.IN, (1, 2, 3)),
        ("orders_count not in (1,2)", Op.NOT_IN, (1, 2)),
        ("total_spent >= 99.5", Op.GE, (Decimal("99.5"),)),
        ("attr.balance > -10", Op.GT, (-10,)),
        ("tag = 'O''Brien'", Op.EQ, ("O'Brien",)),
        ("tag = ''", Op.EQ, ("",)),
        ("member = TRUE", Op.EQ, (True,)),
        ("consent.profiling != false", Op.NE, (False,)),
        ("last_order_at > -30d", Op.GT, (RelativeDate(30, "d"),)),
        ("last_order_at > -4W", Op.GT, (RelativeDate(4, "w"),)),
        ("last_order_at > -6m", Op.GT, (RelativeDate(6, "m"),)),
        ("last_order_at > -1y", Op.GT, (RelativeDate(1, "y"),)),
        ("created_at = '2026-01-01'", Op.EQ, (date(2026, 1, 1),)),
        (
            "created_at >= '2026-01-01T08:00:00+08:00'",
            Op.GE,
            (datetime(2026, 1, 1, 0, 0, tzinfo=UTC),),
        ),
    ],
)
def test_every_operator_and_kind_of_value(query: str, op: Op, values: tuple[object, ...]) -> None:
    condition = leaf(query)
    assert (condition.op, condition.values) == (op, values)


def test_a_condition_keeps_its_text_and_position_and_within() -> None:
    expr = parse("member = true AND\n  bought_sku IN ('A', 'B')  WITHIN -90d")
    second = list(conditions(expr))[1]
    assert second.text == "bought_sku IN ('A', 'B')  WITHIN -90d"
    assert (second.line, second.column) == (2, 3)
    assert second.within == RelativeDate(90, "d")


def test_field_names_and_keywords_are_case_insensitive_but_attribute_keys_are_not() -> None:
    assert leaf("Orders_Count >= 1").field == "orders_count"
    assert leaf("CONSENT.Profiling = true").field == "consent.profiling"
    assert leaf("attr.shoe_size_eu = 40").field == "attr.shoe_size_eu"
    assert shape("tag = 'a' aNd gender = 'male' oR member = True") == "((tag AND gender) OR member)"
    # A field may start with a keyword.
    with pytest.raises(SegmentSemanticError, match="Unknown field 'notes'"):
        parse("notes = 'x'")


@pytest.mark.parametrize(
    ("query", "tree"),
    [
        ("tag = 'a' OR tag = 'b' AND gender = 'male'", "(tag OR (tag AND gender))"),
        ("tag = 'a' AND tag = 'b' OR gender = 'male'", "((tag AND tag) OR gender)"),
        ("(tag = 'a' OR tag = 'b') AND gender = 'male'", "((tag OR tag) AND gender)"),
        ("NOT tag = 'a' AND gender = 'male'", "(NOT tag AND gender)"),
        ("NOT (tag = 'a' AND gender = 'male')", "NOT (tag AND gender)"),
        ("NOT NOT member = true", "NOT NOT member"),
        ("tag = 'a' or tag = 'b' Or tag = 'c'", "(tag OR tag OR tag)"),
        ("tag = 'a' and member = true AND gender = 'male'", "(tag AND member AND gender)"),
        ("((((tag = 'a'))))", "tag"),
        (
            "NOT tag = 'a' OR NOT gender = 'male' AND member = true",
            "(NOT tag OR (NOT gender AND member))",
        ),
    ],
)
def test_precedence_not_then_and_then_or(query: str, tree: str) -> None:
    assert shape(query) == tree


# A dozen-and-more mistakes, each with the line, column and words a marketer gets.
MISTAKES = [
    (
        "oders_count >= 3",
        (1, 1),
        "Unknown field 'oders_count' at column 1; did you mean 'orders_count'?",
    ),
    (
        "orders_count >= ",
        (1, 16),
        "Expected a value after '>=' at column 16 (the query ends there).",
    ),
    (
        "orders_count >= AND tag = 'a'",
        (1, 17),
        "Expected a value after '>=' at column 17, found 'AND'.",
    ),
    (
        "level IN ('gold' 'platinum')",
        (1, 18),
        "Expected ',' or ')' in the IN list after 'gold' at column 18, found 'platinum'.",
    ),
    (
        "orders_count 3",
        (1, 14),
        "Expected an operator (=, !=, <, <=, >, >=, IN or NOT IN) after 'orders_count' at "
        "column 14, found '3'.",
    ),
    (
        'level = "gold"',
        (1, 9),
        "Text goes in single quotes, like 'gold' (a double quote at column 9).",
    ),
    (
        "tag = 'vip",
        (1, 7),
        "Text starting at column 7 is never closed: end it with ' (write '' for a quote).",
    ),
    (
        "(orders_count >= 3 OR tag = 'vip'",
        (1, 1),
        "The '(' at column 1 is never closed: add ')'.",
    ),
    (
        "orders_count >= 3)",
        (1, 18),
        "This ')' at column 18 closes nothing.",
    ),
    (
        "orders_count = 'three'",
        (1, 16),
        "orders_count takes a number, not the text 'three' (at column 16).",
    ),
    (
        "gender > 'f'",
        (1, 8),
        "gender cannot be compared with > (at column 8); use =, !=, IN or NOT IN.",
    ),
    (
        "tag = 'vip' WITHIN -30d",
        (1, 13),
        "WITHIN applies to bought_sku and bought_product only, not tag (at column 13).",
    ),
    (
        "last_order_at = -30d",
        (1, 17),
        "A relative date marks a moment: compare last_order_at with <, <=, > or >= (at column "
        "17), or use a date like '2026-01-01' with =.",
    ),
    (
        "last_order_at > 30days",
        (1, 19),
        "'days' cannot follow a number at column 19: write relative dates like -30d, -4w, -6m "
        "or -1y.",
    ),
    (
        "orders_count >= 3 AND",
        (1, 22),
        "Expected a condition after 'AND' at column 22: the query ends there.",
    ),
    (
        "AND orders_count >= 3",
        (1, 5),
        "Expected a condition before AND at column 1: AND and OR join two conditions.",
    ),
    (
        "member = yes",
        (1, 10),
        "Expected a value after '=' at column 10, found 'yes' (text goes in single quotes: "
        "'yes'; yes/no is true/false).",
    ),
    (
        "created_at > '2026-02-30'",
        (1, 14),
        "created_at takes a date like '2026-01-01' or a time with its offset like "
        "'2026-01-01T09:00:00+08:00'; '2026-02-30' is neither (at column 14).",
    ),
    (
        "orders_count == 3",
        (1, 15),
        "Compare with a single '=' (a second one at column 15).",
    ),
    (
        "",
        (1, 1),
        "The query is empty: write a condition such as orders_count >= 1.",
    ),
    (
        "orders_count >= 3 AND\n  tag = 'vip' AND\n  levle = 'gold'",
        (3, 3),
        "Unknown field 'levle' at line 3, column 3; did you mean 'level'?",
    ),
    (
        "bought_sku = 'A' WITHIN 90d",
        (1, 25),
        "Expected a relative date like -90d after WITHIN at column 25, found '90'.",
    ),
    (
        "tag IN ()",
        (1, 9),
        "Expected a value after '(' at column 9, found ')'.",
    ),
    (
        "attr.Color = 'red'",
        (1, 1),
        "Attribute names are lowercase letters, digits and _ (at most 64): 'Color' at column 1.",
    ),
    (
        "attr.size IN ('m', 40)",
        (1, 15),
        "attr.size IN (...) takes either text or numbers, not both (at column 15).",
    ),
    (
        "member = 1",
        (1, 10),
        "member takes true or false, not the number 1 (at column 10).",
    ),
    # Dates near the calendar's ends (a day past 9999-12-31 does not exist).
    (
        "created_at > '9999-12-31'",
        (1, 14),
        "created_at takes dates from 1900 to 2999; '9999-12-31' is out of range (at column 14).",
    ),
    (
        "created_at < '0001-01-01T00:00:00+08:00'",
        (1, 14),
        "created_at takes dates from 1900 to 2999; '0001-01-01T00:00:00+08:00' is out of range "
        "(at column 14).",
    ),
    # Characters no engine stores safely (PostgreSQL refuses NUL; a surrogate has no UTF-8).
    (
        "tag = 'a\x00'",
        (1, 9),
        "The query holds a control character (U+0000) at column 9; remove it.",
    ),
    (
        "tag = '\ud800'",
        (1, 8),
        "The query holds a lone surrogate (U+D800) at column 8; remove it.",
    ),
    (
        "tag = 'vip' AND\n  tag = 'a\tb'",
        (2, 9),
        "Text values cannot hold a tab (U+0009) (the text at line 2, column 9).",
    ),
    # Fields with known values: a value matching nobody is a mistake.
    (
        "first_order_channel = 'MINI-PROGRAM'",
        (1, 23),
        "first_order_channel takes one of mini_program, web, store_pos, tmall, jd, douyin, "
        "group_buy; not 'MINI-PROGRAM' (at column 23); did you mean 'mini_program'?",
    ),
    (
        "gender IN ('male', 'mael')",
        (1, 20),
        "gender takes one of male, female, other, unknown; not 'mael' (at column 20); did you "
        "mean 'male'?",
    ),
    (
        "rfm_segment = 'whales'",
        (1, 15),
        "rfm_segment takes one of champions, loyal, potential_loyalist, new, promising, "
        "need_attention, about_to_sleep, at_risk, cannot_lose, lost, hibernating; not 'whales' "
        "(at column 15).",
    ),
    (
        "first_channel != 'mini program'",
        (1, 18),
        "first_channel takes a channel name (lowercase letters, digits and _), such as "
        "mini_program, web, store_pos, tmall, jd, douyin, group_buy; not 'mini program' (at "
        "column 18); did you mean 'mini_program'?",
    ),
]


@pytest.mark.parametrize(("query", "where", "message"), MISTAKES)
def test_mistakes_say_what_and_where(query: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(SegmentError) as caught:
        parse(query)
    assert (caught.value.line, caught.value.column) == where
    assert caught.value.message == message


def test_syntax_and_meaning_are_told_apart() -> None:
    with pytest.raises(SegmentSyntaxError):
        parse("orders_count >=")
    with pytest.raises(SegmentSemanticError):
        parse("oders_count >= 1")


def test_an_unknown_field_without_a_near_name_lists_the_fields() -> None:
    with pytest.raises(SegmentError) as caught:
        parse("zzz = 1")
    assert caught.value.message.startswith("Unknown field 'zzz' at column 1. Fields: orders_count,")
    assert "attr.<key>" in caught.value.message


# --- limits ----------------------------------------------------------------------------------


def test_a_query_is_at_most_2000_characters() -> None:
    long = " OR ".join(["tag = '" + "x" * 200 + "'"] * 9)
    parse(long + " " * (2000 - len(long)))
    with pytest.raises(SegmentSemanticError) as caught:
        parse(long + " " * (2001 - len(long)))
    assert caught.value.message == (
        "A segment query is at most 2000 characters; this one has 2001 (the limit is passed at "
        "column 2001)."
    )


def test_at_most_500_values_in_an_in_list() -> None:
    parse("orders_count IN (" + ",".join(["7"] * 500) + ")")
    query = "orders_count IN (" + ",".join(["7"] * 501) + ")"
    with pytest.raises(SegmentSemanticError) as caught:
        parse(query)
    assert caught.value.column == len("orders_count IN (") + 500 * 2 + 1
    assert caught.value.message == (
        f"An IN list takes at most 500 values; value 501 is at column {caught.value.column}."
    )


def test_at_most_50_conditions() -> None:
    parse(" OR ".join(["tag = 'a'"] * 50))
    query = " OR ".join(["tag = 'a'"] * 51)
    with pytest.raises(SegmentSemanticError) as caught:
        parse(query)
    assert caught.value.column == 50 * len("tag = 'a' OR ") + 1
    assert caught.value.message == (
        f"A segment has at most 50 conditions; condition 51 starts at column {caught.value.column}."
    )


def test_nesting_at_most_20_deep() -> None:
    def nested(depth: int) -> str:
        query = "tag = 'a'"
        for _ in range(depth - 1):
            query = f"tag = 'b' AND ({query} OR member = true)"
        return query

    parse("NOT " * 20 + "tag = 'a'")
    with pytest.raises(SegmentSemanticError) as caught:
        parse("NOT " * 21 + "tag = 'a'")
    assert caught.value.message == (
        "Conditions are nested more than 20 levels deep at column 81; simplify the query."
    )
    with pytest.raises(SegmentSemanticError):
        parse(nested(12))  # an AND and an OR per level
    # Deep but redundant parentheses add no level, and a hostile depth is refused cleanly.
    parse("(" * 900 + "tag = 'a'" + ")" * 900)
    with pytest.raises(SegmentSemanticError):
        parse("NOT " * 490 + "tag = 'a'")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("orders_count > 1234567890123456", "1234567890123456 is out of range"),
        ("total_spent > 1.1234567", "1.1234567 is out of range"),
        ("bought_sku = 'A' WITHIN -36501d", "-36501d reaches too far back: at most 36500d"),
        ("tag = '" + "x" * 201 + "'", "Text values are at most 200 characters"),
        ("member_since > -101y", "-101y reaches too far back: at most 100y"),
        ("member_since > -1201M", "-1201M reaches too far back: at most 1200m"),
        ("member_since > -5201w", "-5201w reaches too far back: at most 5200w"),
        ("member_since > -99999999999999999999d", "-99999999999999999999d reaches too far"),
        ("member_since > '1899-12-31'", "member_since takes dates from 1900 to 2999"),
        ("member_since >= '3000-01-01T00:00:00Z'", "member_since takes dates from 1900 to 2999"),
    ],
)
def test_values_out_of_range(query: str, message: str) -> None:
    with pytest.raises(SegmentSemanticError) as caught:
        parse(query)
    assert caught.value.message.startswith(message)


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "bounds"),
    [
        # 1899-12-31 in UTC
        ("created_at >= '1900-01-01T00:00:00+08:00'", [_utc(1899, 12, 31, 16)]),
        ("created_at > '2999-12-31'", [_utc(3000, 1, 1)]),  # from the next day on
        # 3000-01-01 in UTC
        ("created_at <= '2999-12-31T23:59:59-12:00'", [_utc(3000, 1, 1, 11, 59, 59)]),
        ("created_at != '1900-01-01'", [_utc(1900, 1, 1), _utc(1900, 1, 2)]),  # not that day
        ("member_since > -100y", [_utc(1926, 12, 1, 12)]),
        ("last_order_at < -1200m", [_utc(1926, 12, 1, 12)]),
        ("bought_sku = 'A' WITHIN -36500d", [_utc(1926, 12, 26, 12)]),  # 24 leap days
    ],
)
def test_dates_at_the_limits_compile_against_the_clock(query: str, bounds: list[datetime]) -> None:
    count_statement(parse(query), now=utcnow()).compile()  # no overflow at today's date
    compiled = count_statement(parse(query), now=_utc(2026, 12, 1, 12)).compile()
    assert [v for v in compiled.params.values() if isinstance(v, datetime)] == bounds


def test_known_values_are_taken_in_any_case_and_kept_as_stored() -> None:
    assert leaf("first_channel = 'MINI_PROGRAM'").values == ("mini_program",)
    # A first channel may be any channel a touch named, not only a sales channel.
    assert leaf("first_channel IN ('Xiaohongshu', ' TMALL')").values == ("xiaohongshu", "tmall")
    assert leaf("first_order_channel != 'Tmall'").values == ("tmall",)
    assert leaf("gender = 'FEMALE'").values == ("female",)
    assert leaf("rfm_segment NOT IN ('At_Risk', 'LOST')").values == ("at_risk", "lost")
    # Codes and emails are compared as stored (level codes are case-sensitive).
    assert leaf("level = 'Gold'").values == ("Gold",)


def test_tabs_and_line_breaks_may_separate_conditions() -> None:
    assert shape("tag = 'a'\tAND\r\n\ttag = 'b'") == "(tag AND tag)"
    with pytest.raises(SegmentSemanticError, match="U\\+0085"):
        parse("tag = 'a'\x85AND tag = 'b'")  # NEL is a control character, not a space here


# --- relative dates ------------------------------------------------------------------------------


def _at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "written", "expected"),
    [
        (_at(2026, 3, 31), RelativeDate(30, "d"), _at(2026, 3, 1)),
        (_at(2026, 3, 31), RelativeDate(2, "w"), _at(2026, 3, 17)),
        # Calendar months: the 31st goes to the month's last day.
        (_at(2026, 3, 31), RelativeDate(1, "m"), _at(2026, 2, 28)),
        (_at(2028, 3, 31), RelativeDate(1, "m"), _at(2028, 2, 29)),
        (_at(2026, 1, 15), RelativeDate(6, "m"), _at(2025, 7, 15)),
        (_at(2028, 2, 29), RelativeDate(1, "y"), _at(2027, 2, 28)),
        (_at(2026, 1, 15), RelativeDate(0, "d"), _at(2026, 1, 15)),
    ],
)
def test_relative_dates_count_back_from_now(
    now: datetime, written: RelativeDate, expected: datetime
) -> None:
    assert moment(written, now) == expected


def test_gross_margin_is_for_hq_only_because_it_reveals_the_brands_cost():
    from api.segments.service import QueryInvalid, check_query

    assert check_query("gross_margin > 100")  # HQ
    with pytest.raises(QueryInvalid) as refused:
        check_query("orders_count >= 1 AND gross_margin > 100", hq=False)
    assert (refused.value.line, refused.value.column) == (1, 23)
    assert "HQ only" in refused.value.problems[0].message
