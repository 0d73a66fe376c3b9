"""Scratch tables for tests/test_db.py.

They live on their own DeclarativeBase and MetaData, not on ``api.db.Base``: the app's
migrations never see them, so the "models match migrations" check is unaffected. The tests
create them with ``metadata.create_all`` and drop them afterwards.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from api.db import NAMING_CONVENTION, UTCDateTime


class ScratchBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class Stock(ScratchBase):
    """Goods on hand, some of them reserved; the invariant is ``reserved <= on_hand``."""

    __tablename__ = "scratch_stock"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(32))
    on_hand: Mapped[int]
    reserved: Mapped[int] = mapped_column(default=0)


class Payment(ScratchBase):
    """A request that clients retry: the idempotency key makes the retries one payment."""

    __tablename__ = "scratch_payment"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    amount: Mapped[int]


class Appointment(ScratchBase):
    """Something that happens at an instant, entered in whatever time zone the user is in."""

    __tablename__ = "scratch_appointment"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime]
