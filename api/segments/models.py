"""Saved segments and the grant jobs run on them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, enum_column, utcnow


class Segment(Base):
    __tablename__ = "segment"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    query: Mapped[str] = mapped_column(Text)
    # None: an HQ segment over every customer. A partner's segment only ever contains the
    # members attributed to that partner (recruited by it), whatever the query says.
    owner_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GrantAction(enum.Enum):
    COUPON = "coupon"  # issue a coupon of a template to each member
    POINTS = "points"  # credit points to each member


class JobStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class SegmentGrantJob(Base):
    """A grant to a segment's consenting members, once per (segment, campaign key).

    The members are snapshotted when the job starts (``segment_grant_member``), so granting
    points cannot change who the job reaches; each grant is idempotent by its source, so a
    job resumed after a crash grants nobody twice.
    """

    __tablename__ = "segment_grant_job"
    __table_args__ = (UniqueConstraint("segment_id", "campaign_key", name="uq_segment_grant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segment.id"))
    campaign_key: Mapped[str] = mapped_column(String(100))
    action: Mapped[GrantAction] = mapped_column(enum_column(GrantAction))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_template.id"))
    points: Mapped[int | None]
    reason: Mapped[str] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(enum_column(JobStatus), default=JobStatus.PENDING)
    total: Mapped[int | None]  # members snapshotted (with consent)
    processed: Mapped[int] = mapped_column(default=0)
    granted: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)  # e.g. template out of stock, person limit
    error: Mapped[str | None] = mapped_column(Text)
    request_digest: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SegmentGrantMember(Base):
    __tablename__ = "segment_grant_member"
    __table_args__ = (Index("ix_segment_grant_member_todo", "job_id", "done", "customer_id"),)

    job_id: Mapped[int] = mapped_column(
        ForeignKey("segment_grant_job.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    done: Mapped[bool] = mapped_column(default=False)
    outcome: Mapped[str | None] = mapped_column(String(32))  # granted / skipped:<reason>
