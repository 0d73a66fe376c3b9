"""The checked tree of a segment query: conditions on fields of known kinds, joined by AND, OR
and NOT. What the parser builds and the compiler reads."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


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
