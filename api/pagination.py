"""Keyset (cursor) pagination over SQLAlchemy selects, for root and nested connections.

Never OFFSET: a cursor carries the sort-key values of its row, and the next page is
``WHERE (k1, k2, id) > (:v1, :v2, :id)``, which an index over the same columns answers
directly however deep the page. Every keyset ends with a unique column so the order is total.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, UnaryExpression, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from api.errors import InputError

T = TypeVar("T")
Keyset = Sequence[InstrumentedAttribute[Any]]


@dataclass(frozen=True, slots=True)
class PageRequest:
    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    @classmethod
    def of(
        cls,
        *,
        first: int | None,
        after: str | None,
        last: int | None,
        before: str | None,
        cap: int,
        default: int,
    ) -> PageRequest:
        if first is not None and last is not None:
            raise InputError("Pass either `first` or `last`, not both.")
        for name, size in (("first", first), ("last", last)):
            if size is not None and not 0 <= size <= cap:
                raise InputError(f"`{name}` must be between 0 and {cap}; got {size}.")
        if first is None and last is None:
            first = default
        return cls(first=first, after=after, last=last, before=before)

    @property
    def backwards(self) -> bool:
        return self.last is not None

    @property
    def size(self) -> int:
        size = self.last if self.backwards else self.first
        assert size is not None
        return size


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, keyset: Keyset) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InputError(f"Invalid cursor: {cursor!r}.") from None
    if not isinstance(values, list) or len(values) != len(keyset):
        raise InputError(f"Invalid cursor for this sort order: {cursor!r}.")
    decoded = []
    for column, value in zip(keyset, values, strict=True):
        try:
            decoded.append(_cursor_value(column, value))
        except (TypeError, ValueError):
            raise InputError(f"Invalid cursor: {cursor!r}.") from None
    return tuple(decoded)


def _cursor_value(column: InstrumentedAttribute[Any], value: Any) -> Any:
    """A cursor value checked against its column: cursors come from clients."""
    column_type = column.type
    expected = getattr(column_type, "impl", column_type).python_type  # see through decorators
    if expected is datetime:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive datetime")
        return parsed
    if expected is int:
        if type(value) is not int or not -(2**63) <= value < 2**63:
            raise ValueError("not a BIGINT")
        return value
    if type(value) is not expected:
        raise TypeError(expected)
    return value


def _bound(keyset: Keyset, values: Sequence[Any]) -> ColumnElement[Any]:
    """Cursor values bound with their columns' types (so datetimes go through UTCDateTime)."""
    return tuple_(*(literal(v, c.type) for c, v in zip(keyset, values, strict=True)))


def _cursor_of(entity: Any, keyset: Keyset) -> str:
    return encode_cursor([getattr(entity, column.key) for column in keyset])


def _ordered(
    stmt: Select[Any], keyset: Keyset, request: PageRequest, *, reverse: bool
) -> tuple[Select[Any], list[UnaryExpression[Any]], bool]:
    """Apply the cursor bounds; return the statement, the ORDER BY and whether it ascends."""
    key = tuple_(*keyset)
    if request.after is not None:
        bound = _bound(keyset, decode_cursor(request.after, keyset))
        stmt = stmt.where(key < bound if reverse else key > bound)
    if request.before is not None:
        bound = _bound(keyset, decode_cursor(request.before, keyset))
        stmt = stmt.where(key > bound if reverse else key < bound)
    # Walking backwards (last/before) reads the order reversed, then flips the page back.
    ascending = reverse == request.backwards
    order = [column.asc() if ascending else column.desc() for column in keyset]
    return stmt, order, ascending


def _page(rows: list[Any], keyset: Keyset, request: PageRequest) -> Page[Any]:
    more = len(rows) > request.size
    rows = rows[: request.size]
    if request.backwards:
        rows.reverse()
        has_next, has_previous = request.before is not None, more
    else:
        has_next, has_previous = more, request.after is not None
    return Page(rows, [_cursor_of(r, keyset) for r in rows], has_next, has_previous)


async def fetch_page(
    session: AsyncSession,
    stmt: Select[Any],
    keyset: Keyset,
    request: PageRequest,
    *,
    reverse: bool = False,
) -> Page[Any]:
    """One page of ``stmt`` (a ``select(Model)``), ordered by ``keyset``."""
    stmt, order, _ = _ordered(stmt, keyset, request, reverse=reverse)
    rows = list((await session.scalars(stmt.order_by(*order).limit(request.size + 1))).all())
    return _page(rows, keyset, request)


async def fetch_grouped_pages(
    session: AsyncSession,
    stmt: Select[Any],
    model: type[Any],
    group_by: InstrumentedAttribute[Any],
    group_ids: Sequence[Hashable],
    keyset: Keyset,
    request: PageRequest,
    *,
    reverse: bool = False,
) -> dict[Hashable, Page[Any]]:
    """A page of children for each parent in ``group_ids``, in one statement.

    This is what keeps a nested connection (``partners { stores(first: 10) }``) at one
    query however many parents there are: ROW_NUMBER() numbers each parent's children in
    page order, and the outer query keeps the first ``size + 1`` of each.
    """
    stmt, order, _ = _ordered(stmt, keyset, request, reverse=reverse)
    rank = func.row_number().over(partition_by=group_by, order_by=order).label("page_rank")
    ranked = stmt.where(group_by.in_(group_ids)).add_columns(rank).subquery()
    child = aliased(model, ranked)
    query = (
        select(child)
        .where(ranked.c.page_rank <= request.size + 1)
        .order_by(ranked.c[group_by.key], ranked.c.page_rank)
    )
    rows_by_group: dict[Hashable, list[Any]] = defaultdict(list)
    for row in (await session.scalars(query)).all():
        rows_by_group[getattr(row, group_by.key)].append(row)
    return {gid: _page(rows_by_group[gid], keyset, request) for gid in group_ids}


async def count(session: AsyncSession, stmt: Select[Any]) -> int:
    counted = select(func.count()).select_from(stmt.order_by(None).subquery())
    return (await session.execute(counted)).scalar_one()


async def count_grouped(
    session: AsyncSession,
    stmt: Select[Any],
    group_by: InstrumentedAttribute[Any],
    group_ids: Sequence[Hashable],
) -> dict[Hashable, int]:
    sub = stmt.where(group_by.in_(group_ids)).order_by(None).subquery()
    column = sub.c[group_by.key]
    rows = await session.execute(select(column, func.count()).group_by(column))
    counts: dict[Hashable, int] = {gid: n for gid, n in rows}
    return {gid: counts.get(gid, 0) for gid in group_ids}


CountFn = Callable[[], Awaitable[int]]
