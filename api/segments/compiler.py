"""Segment tree → one SQL statement (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Every value a marketer wrote becomes a bound parameter (never ``literal_binds``, never
``text()``), and field names only ever select an entry of ``_FIELD_SQL``: no input reaches
the SQL text. Even the constants this module adds (JSON type names, ``false``) are bound, so
a compiled segment's SQL holds no literal at all (the fuzz tests check exactly that).

Every condition compiles to an expression that is never NULL: a missing value (no orders,
no gender, no such attribute) makes a comparison false, never unknown. So ``NOT`` is the
exact complement of its condition, ``!=`` of ``=`` and ``NOT IN`` of ``IN``, and an explanation
can say of each condition whether it matched.

The FROM is ``segment_base()``: the customer, left-joined to its metrics row and its points
account (both keyed by the customer, so PostgreSQL and SQLite drop the join when the query
does not use it). Only live customers are members.
"""

from __future__ import annotations

import calendar
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    FromClause,
    Numeric,
    Select,
    SQLColumnExpression,
    String,
    and_,
    cast,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.sqltypes import NullType

from api.analytics.models import CustomerMetrics
from api.auth.models import StaffUser
from api.catalog.models import Product, Sku
from api.customers.models import (
    ConsentPurpose,
    Customer,
    CustomerConsent,
    CustomerStatus,
    CustomerTag,
    MemberLevel,
)
from api.loyalty.models import PointsAccount
from api.orders.models import COUNTED_STATUSES, Order, OrderLine
from api.partners.models import Partner, Store
from api.segments.expressions import (
    ATTRIBUTE_PREFIX,
    And,
    Condition,
    Expr,
    Kind,
    Not,
    Op,
    RelativeDate,
    conditions,
)

# --- the FROM ------------------------------------------------------------------------------


def segment_base() -> FromClause:
    """customer ⟕ customer_metrics ⟕ points_account: what every condition reads from."""
    return Customer.__table__.outerjoin(
        CustomerMetrics.__table__, CustomerMetrics.customer_id == Customer.id
    ).outerjoin(PointsAccount.__table__, PointsAccount.customer_id == Customer.id)


def _bound(value: Any) -> ColumnElement[Any]:
    """A value as a typed bound parameter: decimals as NUMERIC (a PostgreSQL integer column
    would otherwise type the parameter as an integer), whole numbers as BIGINT."""
    if isinstance(value, bool):
        return literal(value, Boolean())
    if isinstance(value, Decimal):
        return literal(value, Numeric(30, 6))
    if isinstance(value, int):
        return literal(value, BigInteger())
    return literal(value, String())


def _false() -> ColumnElement[bool]:
    """A bound false, where SQL needs a constant (the statement text stays literal-free)."""
    return literal(False, Boolean())


# --- relative dates and days ---------------------------------------------------------------


def _months_before(now: datetime, months: int) -> datetime:
    """The same moment ``months`` calendar months earlier (the 31st → the month's last day)."""
    index = now.year * 12 + (now.month - 1) - months
    year, month = divmod(index, 12)
    day = min(now.day, calendar.monthrange(year, month + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def moment(value: RelativeDate, now: datetime) -> datetime:
    """The moment a relative date names: -30d is 30 days before ``now``."""
    if value.unit == "d":
        return now - timedelta(days=value.amount)
    if value.unit == "w":
        return now - timedelta(weeks=value.amount)
    months = value.amount * (12 if value.unit == "y" else 1)
    return _months_before(now, months)


def _day(value: date) -> tuple[datetime, datetime]:
    start = datetime.combine(value, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


# --- conditions ----------------------------------------------------------------------------

Positive = ColumnElement[bool]


def _present(column: SQLColumnExpression[Any], condition: ColumnElement[bool]) -> Positive:
    """``condition`` where the column has a value, false (not unknown) where it has none."""
    return and_(column.is_not(None), condition)


# The positive form of each operator: = for != and IN for NOT IN (negated afterwards).
_OPERATORS: dict[Op, Callable[[Any, Any], Any]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.eq,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def _compare(
    column: SQLColumnExpression[Any], op: Op, values: Sequence[Any]
) -> ColumnElement[bool]:
    """The positive form of a column's comparison with the written values."""
    if op in (Op.IN, Op.NOT_IN):
        return column.in_([_bound(v) for v in values])
    return _OPERATORS[op](column, _bound(values[0]))


def _holds(op: Op, value: Any, values: Sequence[Any]) -> bool:
    """The positive form, in Python, for a known value."""
    if op in (Op.IN, Op.NOT_IN):
        return value in values
    return bool(_OPERATORS[op](value, values[0]))


def _dated(column: SQLColumnExpression[Any], op: Op, value: Any, now: datetime) -> Positive:
    """A date field against a relative date, a whole day or a moment."""
    if isinstance(value, RelativeDate):
        value = moment(value, now)
    if isinstance(value, datetime):
        start = end = value
        inclusive_end = True
    else:
        start, end = _day(value)
        inclusive_end = False
    if op in (Op.EQ, Op.NE):
        condition = column == start if inclusive_end else and_(column >= start, column < end)
    elif op is Op.LT:
        condition = column < start
    elif op is Op.GE:
        condition = column >= start
    elif op is Op.LE:
        condition = column <= end if inclusive_end else column < end
    else:  # GT
        condition = column > end if inclusive_end else column >= end
    return _present(column, condition)


def _one_of(column: SQLColumnExpression[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    return column == _bound(values[0]) if len(values) == 1 else column.in_(values)


def _lookup(
    target: Any, key: SQLColumnExpression[Any], code: SQLColumnExpression[Any]
) -> Callable[[Sequence[Any]], Positive]:
    """Has a referenced row (a level, a store ...) whose code is one of the values."""
    return lambda values: exists().where(target.id == key, _one_of(code, values))


_NUMBERS: dict[str, tuple[SQLColumnExpression[Any], int | None]] = {
    # field: (column, its value when the row is missing). A customer without a metrics row
    # has 0 orders and 0 spent, and no RFM scores; without a points account, 0 points.
    "orders_count": (CustomerMetrics.orders_count, 0),
    "total_spent": (CustomerMetrics.total_spent, 0),
    "avg_order_value": (CustomerMetrics.avg_order_value, 0),
    "gross_margin": (CustomerMetrics.gross_margin, 0),
    "points_balance": (PointsAccount.balance, 0),
    "rfm_recency": (CustomerMetrics.rfm_recency, None),
    "rfm_frequency": (CustomerMetrics.rfm_frequency, None),
    "rfm_monetary": (CustomerMetrics.rfm_monetary, None),
}


def _number(
    column: SQLColumnExpression[Any], default: int | None, op: Op, values: Sequence[Any]
) -> Positive:
    """A number field whose row may be missing. Rather than COALESCE (which no index can
    serve), decide in Python whether the missing row's value matches: ``orders_count >= 3``
    becomes ``orders_count IS NOT NULL AND orders_count >= 3``, which an index serves and
    which turns the outer join inner; ``orders_count < 3`` keeps the customers without one
    (``IS NULL OR ...``)."""
    compared = _compare(column, op, values)
    if default is not None and _holds(op, default, values):
        return or_(column.is_(None), compared)
    return _present(column, compared)


_DATES: dict[str, SQLColumnExpression[Any]] = {
    "first_order_at": CustomerMetrics.first_order_at,
    "last_order_at": CustomerMetrics.last_order_at,
    "member_since": Customer.member_since,
    "created_at": Customer.created_at,
}
_TEXTS: dict[str, SQLColumnExpression[Any]] = {
    "first_channel": Customer.first_channel,
    "first_order_channel": CustomerMetrics.first_order_channel,
    "gender": Customer.gender,
    "rfm_segment": CustomerMetrics.rfm_segment,
}
_LOOKUPS: dict[str, Callable[[Sequence[Any]], Positive]] = {
    "level": _lookup(MemberLevel, Customer.level_id, MemberLevel.code),
    "recruiting_store": _lookup(Store, Customer.recruited_store_id, Store.code),
    "recruiting_partner": _lookup(Partner, Customer.recruited_partner_id, Partner.code),
    # Staff emails are stored lowercase.
    "recruiting_guide": lambda values: exists().where(
        StaffUser.id == Customer.recruited_guide_id,
        _one_of(StaffUser.email, [v.strip().lower() for v in values]),
    ),
}
_CONSENTS = {
    "consent.marketing_messages": ConsentPurpose.MARKETING_MESSAGES,
    "consent.profiling": ConsentPurpose.PROFILING,
}


def consented(purpose: ConsentPurpose) -> Positive:
    """The customer has granted ``purpose`` (refused or never asked: false)."""
    return exists().where(
        CustomerConsent.customer_id == Customer.id,
        CustomerConsent.purpose == purpose,
        CustomerConsent.granted == literal(True, Boolean()),
    )


def _bought(
    field: str, values: Sequence[Any], since: datetime | None, partner_id: int | None
) -> Positive:
    """A counted order of the customer with a line, not wholly refunded, of the SKU or
    product (placed since ``since``). For a partner, only its own orders: the ones
    ``orders`` shows it (``Order.partner_id``, see api/orders/placing.py), never what its
    recruits bought from another partner or from HQ."""
    where = [
        Order.customer_id == Customer.id,
        Order.status.in_(COUNTED_STATUSES),
        OrderLine.order_id == Order.id,
        OrderLine.refunded_quantity < OrderLine.quantity,
    ]
    if partner_id is not None:
        where.append(Order.partner_id == _bound(partner_id))
    # Through the SKU ids, not order_line.sku_code / product_id: only sku_id is indexed on the
    # lines (5.5x slower on the 5M-order benchmark otherwise). SKU codes never change, so it
    # is the same condition.
    if field == "bought_sku":
        skus = select(Sku.id).where(_one_of(Sku.code, values))
    else:
        skus = select(Sku.id).join(Product, Product.id == Sku.product_id)
        skus = skus.where(_one_of(Product.code, values))
    where.append(OrderLine.sku_id.in_(skus.scalar_subquery()))
    if since is not None:
        where.append(Order.placed_at >= since)
    return exists().where(*where)


# --- customer attributes (JSON): extraction differs per engine -------------------------------


class _JsonText(FunctionElement[str]):
    """The attribute's value as text (PostgreSQL ``->>``, SQLite ``json_extract``).

    Arguments: the JSON column, the key and the SQLite path to it, both bound.
    """

    type = String()
    name = "segment_json_text"
    inherit_cache = True


class _JsonIs(FunctionElement[Any]):
    """Whether the attribute holds a value of one JSON type, never NULL.

    Arguments: column, key, path, the PostgreSQL type name, two SQLite type names (a number
    is 'integer' or 'real' there) and false: every constant is bound. Untyped, so SQLite
    does not get a literal ``= 1`` appended (its SQL stays free of literals).
    """

    type = NullType()
    name = "segment_json_is"
    inherit_cache = True


class _When(FunctionElement[Any]):
    """``CASE WHEN guard THEN condition ELSE false END``, untyped like ``_JsonIs``."""

    type = NullType()
    name = "segment_when"
    inherit_cache = True


def _args(element: FunctionElement[Any], compiler: SQLCompiler, *used: int, **kw: Any) -> list[str]:
    """The SQL of the arguments at ``used``, in that order. Only what is rendered may be
    processed: a processed bind counts as a positional parameter even if left out."""
    clauses = list(element.clauses)
    return [compiler.process(clauses[i], **kw) for i in used]


@compiles(_When)
def _render_when(element: _When, compiler: SQLCompiler, **kw: Any) -> str:
    guard, condition, otherwise = _args(element, compiler, 0, 1, 2, **kw)
    return f"CASE WHEN {guard} THEN {condition} ELSE {otherwise} END"


# _JsonText(column, key, path) and _JsonIs(column, key, path, pg type, sqlite type, sqlite
# type, false): each engine renders the arguments it needs.


@compiles(_JsonText, "postgresql")
def _pg_json_text(element: _JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _args(element, compiler, 0, 1, **kw)
    return f"({column} ->> {key})"


@compiles(_JsonText)
def _sqlite_json_text(element: _JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = _args(element, compiler, 0, 2, **kw)
    return f"json_extract({column}, {path})"


@compiles(_JsonIs, "postgresql")
def _pg_json_is(element: _JsonIs, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, kind, false = _args(element, compiler, 0, 1, 3, 6, **kw)
    return f"COALESCE(json_typeof({column} -> {key}) = {kind}, {false})"


@compiles(_JsonIs)
def _sqlite_json_is(element: _JsonIs, compiler: SQLCompiler, **kw: Any) -> str:
    column, path, one, other, false = _args(element, compiler, 0, 2, 4, 5, 6, **kw)
    return f"COALESCE(json_type({column}, {path}) IN ({one}, {other}), {false})"


def _attribute(key: str, op: Op, values: Sequence[Any]) -> Positive:
    key_bound, path_bound = literal(key, String()), literal(f'$."{key}"', String())
    column = Customer.attributes
    text = _JsonText(column, key_bound, path_bound)
    if isinstance(values[0], str):
        is_text = _JsonIs(
            column,
            key_bound,
            path_bound,
            _bound("string"),
            _bound("text"),
            _bound("text"),
            _false(),
        )
        return and_(is_text, _one_of(text, values))
    is_number = _JsonIs(
        column,
        key_bound,
        path_bound,
        _bound("number"),
        _bound("integer"),
        _bound("real"),
        _false(),
    )
    number = cast(text, Numeric())
    compared = _compare(number, op, values)
    # CASE, not AND: PostgreSQL may evaluate AND's sides in any order, and the cast of a
    # text attribute would fail.
    return _When(is_number, compared, _false())


# --- compiling -----------------------------------------------------------------------------


def _positive(condition: Condition, now: datetime, partner_id: int | None) -> Positive:
    """The condition's = / IN / ordering form; != and NOT IN are its negation."""
    field, op, values = condition.field, condition.op, condition.values
    kind = condition.kind
    if kind is Kind.NUMBER:
        column, default = _NUMBERS[field]
        return _number(column, default, op, values)
    if kind is Kind.DATE:
        return _dated(_DATES[field], op, values[0], now)
    if kind is Kind.TEXT:
        if field in _LOOKUPS:
            return _LOOKUPS[field](values)
        column = _TEXTS[field]
        return _present(column, _one_of(column, values))
    if kind is Kind.BOOL:
        has = (
            Customer.member_since.is_not(None) if field == "member" else consented(_CONSENTS[field])
        )
        return has if values[0] else not_(has)
    if kind is Kind.TAG:
        return exists().where(
            CustomerTag.customer_id == Customer.id, _one_of(CustomerTag.tag, values)
        )
    if kind is Kind.PURCHASE:
        since = moment(condition.within, now) if condition.within else None
        return _bought(field, values, since, partner_id)
    return _attribute(field[len(ATTRIBUTE_PREFIX) :], op, values)


def compile_condition(
    condition: Condition, *, now: datetime, partner_id: int | None = None
) -> ColumnElement[bool]:
    """One condition as a boolean expression over ``segment_base()``, never NULL; for a
    partner (``partner_id``), purchases count only at that partner."""
    positive = _positive(condition, now, partner_id)
    return not_(positive) if condition.op in (Op.NE, Op.NOT_IN) else positive


def compile_where(
    expr: Expr, *, now: datetime, partner_id: int | None = None
) -> ColumnElement[bool]:
    """The whole query as a boolean expression over ``segment_base()``; relative dates are
    taken back from ``now``; for a partner, purchases count only at that partner."""
    if isinstance(expr, Condition):
        return compile_condition(expr, now=now, partner_id=partner_id)
    if isinstance(expr, Not):
        return not_(compile_where(expr.part, now=now, partner_id=partner_id))
    parts = [compile_where(part, now=now, partner_id=partner_id) for part in expr.parts]
    return and_(*parts) if isinstance(expr, And) else or_(*parts)


def _scope(expr: Expr, now: datetime, partner_id: int | None) -> list[ColumnElement[bool]]:
    """Live customers matching ``expr``; a partner's segment only ever holds its members
    and sees only the purchases made from it."""
    where = [
        Customer.status == CustomerStatus.ACTIVE,
        compile_where(expr, now=now, partner_id=partner_id),
    ]
    if partner_id is not None:
        where.append(Customer.recruited_partner_id == _bound(partner_id))
    return where


def members_statement(expr: Expr, *, now: datetime, partner_id: int | None = None) -> Select[Any]:
    """SELECT customer.id of the members (unordered; page by customer.id)."""
    return select(Customer.id).select_from(segment_base()).where(*_scope(expr, now, partner_id))


def count_statement(expr: Expr, *, now: datetime, partner_id: int | None = None) -> Select[Any]:
    """SELECT count(*) of the members."""
    return select(func.count()).select_from(segment_base()).where(*_scope(expr, now, partner_id))


def customers_statement(expr: Expr, *, now: datetime, partner_id: int | None = None) -> Select[Any]:
    """SELECT customer (the ORM entity) of the members, for keyset pages on customer.id."""
    return select(Customer).select_from(segment_base()).where(*_scope(expr, now, partner_id))


def preview_statement(
    expr: Expr, *, now: datetime, partner_id: int | None = None, limit: int = 20
) -> Select[Customer, int]:
    """The first ``limit`` members (by id), each with the total count, in one statement: the
    window count is taken over every match before LIMIT applies. No rows: count 0."""
    total = func.count().over().label("total")
    return (
        select(Customer, total)
        .select_from(segment_base())
        .where(*_scope(expr, now, partner_id))
        .order_by(Customer.id)
        .limit(limit)
    )


def explain_statement(
    expr: Expr, customer_id: int, *, now: datetime, partner_id: int | None = None
) -> Select[*tuple[Any, ...]]:
    """One row for the live customer ``customer_id`` names (a merged id: its survivor): the
    customer's id, whether it matches (``matches``, partner scope included) and each
    condition's outcome (``c0``, ``c1`` ... in reading order). No row: no such live customer."""
    asked = aliased(Customer)
    whole = compile_where(expr, now=now, partner_id=partner_id)
    if partner_id is not None:
        whole = and_(whole, Customer.recruited_partner_id == _bound(partner_id))
    leaves = [
        compile_condition(c, now=now, partner_id=partner_id).label(f"c{i}")
        for i, c in enumerate(conditions(expr))
    ]
    return (
        select(Customer.id, whole.label("matches"), *leaves)
        .select_from(segment_base())
        .join(asked, func.coalesce(asked.merged_into_id, asked.id) == Customer.id)
        .where(asked.id == _bound(customer_id), Customer.status == CustomerStatus.ACTIVE)
    )


def grant_members_statement(
    expr: Expr, job_id: int, *, now: datetime, partner_id: int | None = None
) -> Select[Any]:
    """SELECT (job_id, customer.id, false) of the members who consent to marketing messages:
    the rows of ``segment_grant_member`` a grant job starts from (INSERT ... FROM SELECT)."""
    return (
        select(_bound(job_id), Customer.id, _false())
        .select_from(segment_base())
        .where(*_scope(expr, now, partner_id), consented(ConsentPurpose.MARKETING_MESSAGES))
    )


__all__ = [
    "compile_condition",
    "compile_where",
    "consented",
    "count_statement",
    "customers_statement",
    "explain_statement",
    "grant_members_statement",
    "members_statement",
    "moment",
    "preview_statement",
    "segment_base",
]
