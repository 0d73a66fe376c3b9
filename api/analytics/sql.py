"""SQL pieces the analytics modules share: money in whole cents, which orders count, and the
engine's own INSERT ... ON CONFLICT."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ColumnElement, cast, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.models import Customer, CustomerStatus
from api.orders.models import COUNTED_STATUSES, Order


def in_cents(yuan: Any) -> ColumnElement[int]:
    """A Numeric(14, 2) amount as whole cents. SQLite keeps Numeric as floating point, where
    sums drift (0.1 + 0.2); the float is close to the amount, so times 100 and rounded it is
    the exact integer again, and summed as integer cents the amounts are exact on both
    engines."""
    return cast(func.round(yuan * 100), BigInteger)


def counted_of_live_customers() -> list[ColumnElement[bool]]:
    """Counted orders of live customers (join ``Customer`` on the order's customer)."""
    return [Order.status.in_(COUNTED_STATUSES), Customer.status == CustomerStatus.ACTIVE]


def rows_written(result: Any) -> int:
    """The rows a statement wrote, to report them: nothing is decided on it (api/db.py: that
    is what a returned row is for). Without RETURNING, both drivers count exactly."""
    return int(result.rowcount)


def insert_for(session: AsyncSession) -> Any:
    """The engine's ``insert`` (with ``on_conflict_do_update``/``_do_nothing``)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name
