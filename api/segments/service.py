"""Segments (人群): save, evaluate, explain, and start grants on them.

Plain async functions over a session; no GraphQL here. What a caller sees:

* **Segments** are HQ's (``owner_partner_id`` None) or one partner's. A partner principal
  sees and writes only its own; HQ sees every segment. Reading needs analytics:read (or
  segments:write); store staff and members have neither, so they see none.
* **Members** of a segment are live customers matching its query, and never more than the
  caller may see (``restrict`` on the customer, as ``customers`` does). A partner's segment
  only ever holds that partner's recruits, and counts only purchases made from that
  partner, whoever evaluates it; a partner evaluating a query (preview) likewise.

Each evaluation is one SQL statement (api/segments/compiler.py).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, delete, false, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.coupons import access as coupon_access
from api.coupons.models import CouponChannel, CouponTemplate
from api.customers.models import Customer
from api.db import insert_or_get
from api.errors import DomainError, Problem
from api.loyalty.adjustments import MAX_ADJUST_POINTS
from api.segments import compiler
from api.segments.expressions import Expr, conditions
from api.segments.models import (
    GrantAction,
    JobStatus,
    Segment,
    SegmentGrantJob,
    SegmentGrantMember,
)
from api.segments.parser import parse
from api.segments.query_errors import SegmentError, SegmentSemanticError
from api.text import describe_character, forbidden_character

# A job is seen where its segment is.

READ_SCOPES = ("analytics:read", "segments:write")
SAMPLE_MAX = 20
NAME_MAX = 100
DESCRIPTION_MAX = 500
CAMPAIGN_KEY_MAX = 100
REASON_MAX = 200

SEGMENT_KEYSET = (Segment.id,)
MEMBER_KEYSET = (Customer.id,)


class SegmentErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    INVALID_QUERY = "invalid_query"
    REQUIRED = "required"
    FORBIDDEN = "forbidden"
    IN_USE = "in_use"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


class QueryInvalid(DomainError):
    """The segment query is wrong, at a line and column (a payload error on ``query``),
    possibly with other problems of the same input."""

    def __init__(
        self,
        error: SegmentError,
        path: tuple[str, ...] = ("query",),
        others: Sequence[Problem] = (),
    ) -> None:
        query = Problem(SegmentErrorCode.INVALID_QUERY, error.message, path)
        super().__init__([*others, query])
        self.line = error.line
        self.column = error.column


# Fields only HQ may filter on: a partner narrowing a segment by gross margin and counting
# would learn the brand's cost, which every other surface keeps to HQ.
HQ_ONLY_FIELDS = frozenset({"gross_margin"})


def check_query(text: str, others: Sequence[Problem] = (), *, hq: bool = True) -> Expr:
    """The parsed query, or QueryInvalid pointing at the mistake (after ``others``);
    without ``hq``, a field of HQ_ONLY_FIELDS is a mistake too."""
    try:
        expr = parse(text)
        for condition in () if hq else conditions(expr):
            if condition.field in HQ_ONLY_FIELDS:
                raise SegmentSemanticError(
                    f"'{condition.field}' is for HQ only (it reveals the brand's cost) "
                    f"at column {condition.column}.",
                    condition.line,
                    condition.column,
                )
        return expr
    except SegmentError as error:
        raise QueryInvalid(error, others=others) from None


def may_read(principal: Principal) -> bool:
    return any(principal.has_scope(s) for s in READ_SCOPES)


# --- reads ---------------------------------------------------------------------------------


def segments_query(principal: Principal) -> Select[Any]:
    """Segments the principal may see: HQ all; a partner its own; anyone else none."""
    stmt = select(Segment)
    if not may_read(principal):
        return stmt.where(false())
    return restrict(stmt, Segment, principal)


async def segments_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, Segment]:
    if not ids:
        return {}
    rows = await session.scalars(segments_query(principal).where(Segment.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def get_segment(
    session: AsyncSession,
    principal: Principal,
    segment_id: int,
    *path: str,
    lock: Literal["share", "update"] | None = None,
) -> Segment:
    """The segment if the principal may see it; else NOT_FOUND (another partner's segment
    answers exactly like a missing one). ``lock``: FOR SHARE / FOR UPDATE (PostgreSQL)."""
    stmt = segments_query(principal).where(Segment.id == segment_id)
    if lock is not None:
        stmt = stmt.with_for_update(read=lock == "share")
    found = await session.scalar(stmt)
    if found is None:
        raise DomainError.one(
            SegmentErrorCode.NOT_FOUND, "No such segment.", *(path or ("segmentId",))
        )
    return found


def _partner(principal: Principal, segment: Segment | None) -> int | None:
    """Whose recruits the members are limited to: the segment's owner, else the caller's."""
    if segment is not None and segment.owner_partner_id is not None:
        return segment.owner_partner_id
    return principal.partner_id


def members_query(
    principal: Principal, expr: Expr, *, now: datetime, segment: Segment | None = None
) -> Select[Any]:
    """SELECT customer of the members the principal may see (page it by customer id)."""
    stmt = compiler.customers_statement(expr, now=now, partner_id=_partner(principal, segment))
    return restrict(stmt, Customer, principal)


async def count_members(
    session: AsyncSession,
    principal: Principal,
    expr: Expr,
    *,
    now: datetime,
    segment: Segment | None = None,
) -> int:
    stmt = compiler.count_statement(expr, now=now, partner_id=_partner(principal, segment))
    return (await session.execute(restrict(stmt, Customer, principal))).scalar_one()


@dataclass(frozen=True, slots=True)
class Preview:
    count: int
    sample: list[Customer]


async def preview(
    session: AsyncSession,
    principal: Principal,
    text: str,
    *,
    now: datetime,
    sample: int = SAMPLE_MAX,
) -> Preview:
    """How many customers a query selects and the first ``sample`` of them (by id), in one
    statement. QueryInvalid when the query is wrong."""
    expr = check_query(text, hq=principal.is_hq)
    size = max(0, min(sample, SAMPLE_MAX))
    stmt = compiler.preview_statement(
        expr, now=now, partner_id=_partner(principal, None), limit=max(size, 1)
    )
    rows = (await session.execute(restrict(stmt, Customer, principal))).all()
    total = rows[0].total if rows else 0
    return Preview(count=total, sample=[row[0] for row in rows[:size]])


@dataclass(frozen=True, slots=True)
class ClauseOutcome:
    text: str
    line: int
    column: int
    matched: bool


@dataclass(frozen=True, slots=True)
class Explanation:
    customer_id: int  # the live customer explained (a merged id's survivor)
    matches: bool
    clauses: list[ClauseOutcome]


async def explain(
    session: AsyncSession,
    principal: Principal,
    segment: Segment,
    customer_id: int,
    *,
    now: datetime,
) -> Explanation:
    """Whether the customer is a member, and which conditions it meets, in one statement.
    A customer the principal may not see is NOT_FOUND, like a missing one."""
    expr = check_query(segment.query)
    stmt = compiler.explain_statement(
        expr, customer_id, now=now, partner_id=_partner(principal, segment)
    )
    row = (await session.execute(restrict(stmt, Customer, principal))).first()
    if row is None:
        raise DomainError.one(SegmentErrorCode.NOT_FOUND, "No such customer.", "customerId")
    leaves = list(conditions(expr))
    return Explanation(
        customer_id=row.id,
        matches=bool(row.matches),
        clauses=[
            ClauseOutcome(c.text, c.line, c.column, bool(row[2 + i])) for i, c in enumerate(leaves)
        ],
    )


# --- writes --------------------------------------------------------------------------------


def _owner(principal: Principal) -> int | None:
    """Who owns what the principal saves: HQ (None) or its partner; others may not save."""
    if principal.is_hq:
        return None
    if principal.partner_id is None or principal.is_member:
        raise DomainError.one(SegmentErrorCode.FORBIDDEN, "Only HQ and partners keep segments.")
    return principal.partner_id


def _text(
    problems: list[Problem],
    value: str | None,
    name: str,
    limit: int,
    *,
    required: bool,
    breaks: bool = False,
) -> str | None:
    """The trimmed text, or a problem. Never a control character or a lone surrogate (no
    engine stores those safely); tabs and line breaks only with ``breaks``."""
    if value is None or not value.strip():
        if required:
            problems.append(Problem(SegmentErrorCode.REQUIRED, f"{name} is required.", (name,)))
        return None
    value = value.strip()
    if len(value) > limit:
        problems.append(
            Problem(SegmentErrorCode.INVALID, f"{name} is at most {limit} characters.", (name,))
        )
    bad = forbidden_character(value, breaks=breaks)
    if bad is not None:
        problems.append(
            Problem(
                SegmentErrorCode.INVALID,
                f"{name} cannot hold {describe_character(value[bad])}.",
                (name,),
            )
        )
    return value


def _checked(
    name: str | None,
    query: str | None,
    description: str | None,
    *,
    creating: bool,
    hq: bool,
) -> tuple[str | None, str | None, str | None]:
    problems: list[Problem] = []
    # A name given (even blank) must be a name; None keeps the current one.
    clean_name = _text(problems, name, "name", NAME_MAX, required=creating or name is not None)
    clean_description = _text(
        problems, description, "description", DESCRIPTION_MAX, required=False, breaks=True
    )
    clean_query = None
    if query is not None or creating:
        check_query(query or "", problems, hq=hq)
        clean_query = query
    if problems:
        raise DomainError(problems)
    return clean_name, clean_query, clean_description


async def create_segment(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    query: str,
    description: str | None,
    now: datetime,
) -> Segment:
    owner = _owner(principal)
    clean_name, clean_query, clean_description = _checked(
        name, query, description, creating=True, hq=principal.is_hq
    )
    segment = Segment(
        name=clean_name,
        query=clean_query,
        description=clean_description,
        owner_partner_id=owner,
        created_by=principal.subject,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    await session.flush()
    return segment


async def update_segment(
    session: AsyncSession,
    principal: Principal,
    segment_id: int,
    *,
    name: str | None = None,
    query: str | None = None,
    description: str | None = None,
    now: datetime,
) -> Segment:
    """Change what is given (None: keep). A running grant is unaffected: it works from the
    members it snapshotted."""
    _owner(principal)
    segment = await get_segment(session, principal, segment_id, "id")
    clean_name, clean_query, clean_description = _checked(
        name, query, description, creating=False, hq=principal.is_hq
    )
    if clean_name is not None:
        segment.name = clean_name
    if clean_query is not None:
        segment.query = clean_query
    if description is not None:
        segment.description = clean_description
    segment.updated_at = now
    await session.flush()
    return segment


async def delete_segment(session: AsyncSession, principal: Principal, segment_id: int) -> int:
    _owner(principal)
    # Locked: a grant starting on it (which holds it FOR SHARE) has committed its job before
    # the count below, or waits and then finds no segment (PostgreSQL; SQLite has one writer).
    segment = await get_segment(session, principal, segment_id, "id", lock="update")
    used = await session.scalar(
        select(func.count()).where(SegmentGrantJob.segment_id == segment.id)
    )
    if used:
        raise DomainError.one(
            SegmentErrorCode.IN_USE,
            "This segment has grants; it stays as their record.",
            "id",
        )
    await session.execute(delete(Segment).where(Segment.id == segment.id))
    return segment.id


# --- grant jobs ----------------------------------------------------------------------------


def jobs_query(principal: Principal) -> Select[Any]:
    stmt = select(SegmentGrantJob)
    if not may_read(principal):
        return stmt.where(false())
    return restrict(stmt, SegmentGrantJob, principal)


async def jobs_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, SegmentGrantJob]:
    if not ids:
        return {}
    rows = await session.scalars(jobs_query(principal).where(SegmentGrantJob.id.in_(set(ids))))
    return {row.id: row for row in rows}


@dataclass(frozen=True, slots=True)
class GrantRequest:
    segment_id: int
    campaign_key: str
    action: GrantAction
    reason: str
    template_id: int | None = None
    points: int | None = None

    def digest(self) -> str:
        """What tells a retry (same digest) from another grant reusing the campaign key."""
        body = [self.action.value, self.template_id, self.points, self.reason.strip()]
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()


REQUIRED_SCOPE = {GrantAction.COUPON: "coupons:write", GrantAction.POINTS: "points:write"}


async def _check_grant(
    session: AsyncSession, principal: Principal, request: GrantRequest
) -> list[Problem]:
    problems: list[Problem] = []
    _text(problems, request.campaign_key, "campaignKey", CAMPAIGN_KEY_MAX, required=True)
    _text(problems, request.reason, "reason", REASON_MAX, required=True)
    if request.action is GrantAction.POINTS:
        if request.template_id is not None:
            problems.append(
                Problem(
                    SegmentErrorCode.INVALID,
                    "A points grant takes no coupon.",
                    ("couponTemplateId",),
                )
            )
        points = request.points
        if points is None or isinstance(points, bool) or not 0 < points <= MAX_ADJUST_POINTS:
            problems.append(
                Problem(
                    SegmentErrorCode.INVALID,
                    f"Points per member are a whole number from 1 to {MAX_ADJUST_POINTS}.",
                    ("points",),
                )
            )
        return problems
    if request.points is not None:
        problems.append(
            Problem(SegmentErrorCode.INVALID, "A coupon grant takes no points.", ("points",))
        )
    if request.template_id is None:
        problems.append(
            Problem(SegmentErrorCode.REQUIRED, "Which coupon template?", ("couponTemplateId",))
        )
        return problems
    template = await session.scalar(
        coupon_access.templates_query(principal).where(CouponTemplate.id == request.template_id)
    )
    if template is None:
        problems.append(
            Problem(SegmentErrorCode.NOT_FOUND, "No such coupon template.", ("couponTemplateId",))
        )
    elif template.claim_channel is CouponChannel.OFFLINE:
        problems.append(
            Problem(
                SegmentErrorCode.INVALID,
                "A segment grant is issued online; this coupon is claimed offline only.",
                ("couponTemplateId",),
            )
        )
    return problems


async def start_grant(
    session: AsyncSession, principal: Principal, request: GrantRequest, *, now: datetime
) -> tuple[SegmentGrantJob, bool]:
    """Create the grant job of (segment, campaign key) and snapshot its members; return
    (job, created). A retry (same request) returns the first job; a different request under
    the same key is IDEMPOTENCY_KEY_REUSED. The caller runs the job after committing.

    The members are the segment's members the principal may see who consent to marketing
    messages, snapshotted here with one INSERT ... SELECT.
    """
    scope = REQUIRED_SCOPE[request.action]
    if not principal.has_scope("segments:write") or not principal.has_scope(scope):
        raise DomainError.one(
            SegmentErrorCode.FORBIDDEN, f"This grant needs segments:write and {scope}."
        )
    # Shared: a concurrent delete waits for this job (then IN_USE) or went first (NOT_FOUND).
    segment = await get_segment(session, principal, request.segment_id, lock="share")
    problems = await _check_grant(session, principal, request)
    if problems:
        raise DomainError(problems)
    digest = request.digest()
    job, created = await insert_or_get(
        session,
        SegmentGrantJob,
        {
            "segment_id": segment.id,
            "campaign_key": request.campaign_key.strip(),
            "action": request.action,
            "template_id": request.template_id,
            "points": request.points,
            "reason": request.reason.strip(),
            "status": JobStatus.PENDING,
            "processed": 0,
            "granted": 0,
            "skipped": 0,
            "request_digest": digest,
            "created_by": principal.subject,
            "created_at": now,
            "updated_at": now,
        },
        ["segment_id", "campaign_key"],
    )
    if not created:
        if job.request_digest != digest:
            raise DomainError.one(
                SegmentErrorCode.IDEMPOTENCY_KEY_REUSED,
                "This campaign key was used for a different grant on this segment.",
                "campaignKey",
            )
        return job, False
    expr = check_query(segment.query)
    chosen = compiler.grant_members_statement(
        expr, job.id, now=now, partner_id=_partner(principal, segment)
    )
    await session.execute(
        insert(SegmentGrantMember).from_select(
            ["job_id", "customer_id", "done"], restrict(chosen, Customer, principal)
        )
    )
    total = await session.scalar(select(func.count()).where(SegmentGrantMember.job_id == job.id))
    job.total = total
    await session.flush()
    return job, True


__all__ = [
    "MEMBER_KEYSET",
    "REQUIRED_SCOPE",
    "SEGMENT_KEYSET",
    "ClauseOutcome",
    "Explanation",
    "GrantRequest",
    "Preview",
    "QueryInvalid",
    "SegmentErrorCode",
    "check_query",
    "count_members",
    "create_segment",
    "delete_segment",
    "explain",
    "get_segment",
    "jobs_by_id",
    "jobs_query",
    "may_read",
    "members_query",
    "preview",
    "segments_by_id",
    "segments_query",
    "start_grant",
    "update_segment",
]
