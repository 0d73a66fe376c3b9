"""GraphQL surface of segments (人群): thin wrappers over service.py and jobs.py.

Who may do what:

* read segments (``segments``, ``segment``, ``node``) and grant jobs: analytics:read or
  segments:write; HQ sees every segment, a partner only its own (another partner's id
  answers like a missing one);
* ``segmentPreview``, ``Segment.count``: analytics:read; the customers themselves
  (``sample``, ``Segment.members``, ``Segment.explain``) also need customers:read;
* ``segmentCreate`` / ``Update`` / ``Delete``: segments:write (HQ, or a partner on its own);
* ``segmentGrantStart``: segments:write plus coupons:write (COUPON) or points:write (POINTS).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry

from api.coupons.graphql.types import CouponTemplate, any_scope
from api.customers.graphql.types import Customer
from api.db import utcnow
from api.errors import DomainError, InputError, Problem
from api.graphql.context import Context, Info
from api.graphql.errors import PermissionDenied, UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner
from api.segments import jobs, models, service
from api.segments.expressions import Expr
from api.segments.grammar import MAX_QUERY_CHARS

SegmentErrorCode = strawberry.enum(service.SegmentErrorCode)
SegmentGrantAction = strawberry.enum(
    models.GrantAction,
    name="SegmentGrantAction",
    description="COUPON: one coupon of a template per member; POINTS: points per member.",
)
SegmentGrantJobStatus = strawberry.enum(models.JobStatus, name="SegmentGrantJobStatus")

READERS = any_scope(*service.READ_SCOPES)
ANALYTICS = requires("analytics:read")
CUSTOMER_ANALYTICS = requires("analytics:read", "customers:read")
WRITERS = requires("segments:write")


@strawberry.type(description="A mistake, with where it is when it is in the segment query.")
class SegmentError(UserError):
    code: SegmentErrorCode  # type: ignore[valid-type]  # a strawberry.enum value
    line: int | None = strawberry.field(
        default=None, description="1-based line of a query mistake."
    )
    column: int | None = strawberry.field(
        default=None, description="1-based column of a query mistake."
    )


def _errors(error: DomainError, *prefix: str) -> list[SegmentError]:
    """Payload errors; a query mistake carries its line and column."""
    line = getattr(error, "line", None)
    column = getattr(error, "column", None)
    return [_error(p, prefix, line, column) for p in error.problems]


def _refusal(error: DomainError) -> list[SegmentError]:
    return _errors(error, "input")


def _error(
    problem: Problem, prefix: Sequence[str], line: int | None, column: int | None
) -> SegmentError:
    in_query = problem.code is service.SegmentErrorCode.INVALID_QUERY
    return SegmentError(
        field=[*prefix, *problem.field] if problem.field else None,
        message=problem.message,
        code=problem.code,
        line=line if in_query else None,
        column=column if in_query else None,
    )


# --- types ---------------------------------------------------------------------------------


@strawberry.type(description="One condition of a segment's query, and whether it held.")
class SegmentClause:
    text: str = strawberry.field(description="The condition as written.")
    line: int
    column: int
    matched: bool


@strawberry.type(description="Why a customer is, or is not, a member of a segment.")
class SegmentExplanation:
    matches: bool = strawberry.field(
        description="A member: the query holds (and, for a partner's segment, the partner "
        "recruited the customer)."
    )
    clauses: list[SegmentClause] = strawberry.field(
        description="Each condition of the query in reading order (NOT is applied above "
        "them: a matched `tag = 'x'` under NOT counts against membership)."
    )
    customer_pk: strawberry.Private[int]

    @strawberry.field(description="The customer explained (a merged customer's survivor).")
    async def customer(self, info: Info) -> Customer | None:
        return await info.context.load_node("Customer", self.customer_pk)


@strawberry.type(description="A saved segment (人群): a query over customers.")
class Segment(Node):
    name: str
    description: str | None
    query: str = strawberry.field(description="In the segment language (see the docs).")
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[int]
    owner_pk: strawberry.Private[int | None]
    row: strawberry.Private[models.Segment]

    @classmethod
    def from_row(cls, row: models.Segment) -> Segment:
        return cls(
            id=strawberry.ID(encode_id("Segment", row.id)),
            pk=row.id,
            name=row.name,
            description=row.description,
            query=row.query,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            owner_pk=row.owner_partner_id,
            row=row,
        )

    @strawberry.field(description="The partner whose segment it is; null for HQ's.")
    async def owner(self, info: Info) -> Partner | None:
        if self.owner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.owner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field(
        description="How many members it has now (among the customers you may see).",
        permission_classes=[ANALYTICS],
    )
    async def count(self, info: Info) -> int:
        ctx = info.context
        expr = _saved_query(self.row)
        async with ctx.db.read() as session:
            return await service.count_members(
                session, ctx.principal, expr, now=utcnow(), segment=self.row
            )

    @connection(
        Connection[Customer],
        description="Its members now, by customer id (among the customers you may see).",
        permission_classes=[CUSTOMER_ANALYTICS],
    )
    async def members(self, info: Info) -> Rows[Customer]:
        stmt = service.members_query(
            info.context.principal, _saved_query(self.row), now=utcnow(), segment=self.row
        )
        return Rows(stmt, service.MEMBER_KEYSET, Customer.from_row)

    @strawberry.field(
        description="Which of the query's conditions a customer meets; null when the customer "
        "does not exist or is not yours.",
        permission_classes=[CUSTOMER_ANALYTICS],
    )
    async def explain(self, info: Info, customer_id: strawberry.ID) -> SegmentExplanation | None:
        ctx = info.context
        pk = decode_id_of(customer_id, "Customer")
        try:
            async with ctx.db.read() as session:
                found = await service.explain(session, ctx.principal, self.row, pk, now=utcnow())
        except DomainError as error:
            if isinstance(error, service.QueryInvalid):
                raise InputError(f"The saved query is no longer valid: {error}") from None
            return None  # NOT_FOUND: missing, or not yours
        return SegmentExplanation(
            matches=found.matches,
            clauses=[
                SegmentClause(text=c.text, line=c.line, column=c.column, matched=c.matched)
                for c in found.clauses
            ],
            customer_pk=found.customer_id,
        )


def _saved_query(row: models.Segment) -> Expr:
    try:
        return service.check_query(row.query)
    except service.QueryInvalid as error:
        raise InputError(f"The saved query is no longer valid: {error}") from None


@strawberry.type(description="A grant of coupons or points to a segment's consenting members.")
class SegmentGrantJob(Node):
    campaign_key: str
    action: SegmentGrantAction  # type: ignore[valid-type]  # a strawberry.enum value
    points: int | None = strawberry.field(description="POINTS: per member.")
    reason: str
    status: SegmentGrantJobStatus  # type: ignore[valid-type]  # a strawberry.enum value
    total: int | None = strawberry.field(
        description="Members snapshotted when it started: those who consent to marketing messages."
    )
    processed: int
    granted: int
    skipped: int = strawberry.field(
        description="Consent withdrawn since, over the person limit, out of stock, or "
        "granted already (a merged duplicate)."
    )
    error: str | None = strawberry.field(
        description="Why it FAILED (run it again to resume), or that it was interrupted by a "
        "stop of the API (PENDING again: it resumes when the API starts)."
    )
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    segment_pk: strawberry.Private[int]
    template_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.SegmentGrantJob) -> SegmentGrantJob:
        return cls(
            id=strawberry.ID(encode_id("SegmentGrantJob", row.id)),
            campaign_key=row.campaign_key,
            action=row.action,
            points=row.points,
            reason=row.reason,
            status=row.status,
            total=row.total,
            processed=row.processed,
            granted=row.granted,
            skipped=row.skipped,
            error=row.error,
            created_by=row.created_by,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            segment_pk=row.segment_id,
            template_pk=row.template_id,
        )

    @strawberry.field
    async def segment(self, info: Info) -> Segment | None:
        (found,) = await _load_segments(info.context, [self.segment_pk])
        return found

    @strawberry.field(description="COUPON: the template granted.")
    async def coupon_template(self, info: Info) -> CouponTemplate | None:
        if self.template_pk is None:
            return None
        return await info.context.load_node("CouponTemplate", self.template_pk)


async def _segments_by_pk(ctx: Context, keys: Sequence[int]) -> list[models.Segment | None]:
    async with ctx.db.read() as session:
        found = await service.segments_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def _jobs_by_pk(ctx: Context, keys: Sequence[int]) -> list[models.SegmentGrantJob | None]:
    async with ctx.db.read() as session:
        found = await service.jobs_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


async def _load_segments(ctx: Context, pks: Sequence[int]) -> list[Segment | None]:
    rows = await ctx.loader(_segments_by_pk).load_many(pks)
    return [Segment.from_row(r) if r else None for r in rows]


async def _load_jobs(ctx: Context, pks: Sequence[int]) -> list[SegmentGrantJob | None]:
    rows = await ctx.loader(_jobs_by_pk).load_many(pks)
    return [SegmentGrantJob.from_row(r) if r else None for r in rows]


@strawberry.type(description="What a query selects now: how many, and the first few.")
class SegmentPreview:
    count: int
    sample: list[Customer] = strawberry.field(
        description="The first 20 members by id (empty without customers:read)."
    )
    errors: list[SegmentError] = strawberry.field(
        description="The query's mistakes, with line and column; then count is 0."
    )


# --- queries -------------------------------------------------------------------------------


@strawberry.type
class SegmentQuery:
    @connection(
        Connection[Segment],
        description="Saved segments, oldest first: HQ sees all, a partner its own.",
        permission_classes=[READERS],
    )
    async def segments(self, info: Info) -> Rows[Segment]:
        stmt = service.segments_query(info.context.principal)
        return Rows(stmt, service.SEGMENT_KEYSET, Segment.from_row)

    @strawberry.field(
        description="A segment by ID; null when missing or not yours.",
        permission_classes=[READERS],
    )
    async def segment(self, info: Info, id: strawberry.ID) -> Segment | None:
        return (await _load_segments(info.context, [decode_id_of(id, "Segment")]))[0]

    @strawberry.field(
        description="Try a query: how many customers it selects and the first of them, or "
        "its mistakes with line and column. A partner's preview holds its recruits only.",
        permission_classes=[ANALYTICS],
    )
    async def segment_preview(self, info: Info, query: str) -> SegmentPreview:
        ctx = info.context
        with_sample = ctx.principal.has_scope("customers:read")
        try:
            async with ctx.db.read() as session:
                found = await service.preview(
                    session,
                    ctx.principal,
                    query,
                    now=utcnow(),
                    sample=service.SAMPLE_MAX if with_sample else 0,
                )
        except DomainError as error:
            return SegmentPreview(count=0, sample=[], errors=_errors(error))
        return SegmentPreview(
            count=found.count, sample=[Customer.from_row(c) for c in found.sample], errors=[]
        )

    @strawberry.field(
        description="A grant job and its progress; null when missing or not yours.",
        permission_classes=[READERS],
    )
    async def segment_grant_job(self, info: Info, id: strawberry.ID) -> SegmentGrantJob | None:
        return (await _load_jobs(info.context, [decode_id_of(id, "SegmentGrantJob")]))[0]


# --- mutations -----------------------------------------------------------------------------


@strawberry.input
class SegmentCreateInput:
    name: str
    query: str = strawberry.field(
        description=f"In the segment language, at most {MAX_QUERY_CHARS} characters."
    )
    description: str | None = None


@strawberry.type
class SegmentCreatePayload:
    segment: Segment | None = None
    errors: list[SegmentError] = strawberry.field(default_factory=list)


@strawberry.input
class SegmentUpdateInput:
    id: strawberry.ID
    name: str | None = None
    query: str | None = None
    description: str | None = strawberry.field(
        default=None, description="An empty string clears it."
    )


@strawberry.type
class SegmentUpdatePayload:
    segment: Segment | None = None
    errors: list[SegmentError] = strawberry.field(default_factory=list)


@strawberry.input
class SegmentDeleteInput:
    id: strawberry.ID


@strawberry.type
class SegmentDeletePayload:
    deleted_segment_id: strawberry.ID | None = None
    errors: list[SegmentError] = strawberry.field(default_factory=list)


@strawberry.input
class SegmentGrantStartInput:
    segment_id: strawberry.ID
    campaign_key: str = strawberry.field(
        description="Once per (segment, campaign key): a retry returns the same job."
    )
    action: SegmentGrantAction  # type: ignore[valid-type]  # a strawberry.enum value
    reason: str
    coupon_template_id: strawberry.ID | None = strawberry.field(
        default=None, description="COUPON: the template (claimable online)."
    )
    points: int | None = strawberry.field(default=None, description="POINTS: per member.")


@strawberry.type
class SegmentGrantStartPayload:
    job: SegmentGrantJob | None = None
    created: bool = strawberry.field(
        default=False, description="False: a retry, answered with the first job."
    )
    errors: list[SegmentError] = strawberry.field(default_factory=list)


def _pk(global_id: str, type_name: str, *path: str) -> int:
    return input_pk(global_id, type_name, *path, invalid=service.SegmentErrorCode.INVALID)


@strawberry.type
class SegmentMutation:
    @strawberry.mutation(
        description="Save a segment: HQ's, or (for a partner) the partner's own.",
        permission_classes=[WRITERS],
    )
    async def segment_create(self, info: Info, input: SegmentCreateInput) -> SegmentCreatePayload:
        async def change(work: UnitOfWork) -> SegmentCreatePayload:
            row = await service.create_segment(
                work.session,
                work.principal,
                name=input.name,
                query=input.query,
                description=input.description,
                now=utcnow(),
            )
            work.touched("Segment", row.id)
            return SegmentCreatePayload(segment=Segment.from_row(row))

        return await run_mutation(info, SegmentCreatePayload, change, refusal=_refusal)

    @strawberry.mutation(permission_classes=[WRITERS])
    async def segment_update(self, info: Info, input: SegmentUpdateInput) -> SegmentUpdatePayload:
        async def change(work: UnitOfWork) -> SegmentUpdatePayload:
            pk = _pk(input.id, "Segment", "id")
            row = await service.update_segment(
                work.session,
                work.principal,
                pk,
                name=input.name,
                query=input.query,
                description=input.description,
                now=utcnow(),
            )
            work.touched("Segment", row.id)
            return SegmentUpdatePayload(segment=Segment.from_row(row))

        return await run_mutation(info, SegmentUpdatePayload, change, refusal=_refusal)

    @strawberry.mutation(
        description="Delete a segment that has no grants.", permission_classes=[WRITERS]
    )
    async def segment_delete(self, info: Info, input: SegmentDeleteInput) -> SegmentDeletePayload:
        async def change(work: UnitOfWork) -> SegmentDeletePayload:
            pk = _pk(input.id, "Segment", "id")
            deleted = await service.delete_segment(work.session, work.principal, pk)
            work.touched("Segment", deleted)
            return SegmentDeletePayload(deleted_segment_id=strawberry.ID(input.id))

        return await run_mutation(info, SegmentDeletePayload, change, refusal=_refusal)

    @strawberry.mutation(
        description="Grant a coupon or points to every member of a segment who consents to "
        "marketing messages, as a background job (follow it with segmentGrantJob). Needs "
        "segments:write and coupons:write (COUPON) or points:write (POINTS).",
        permission_classes=[WRITERS],
    )
    async def segment_grant_start(
        self, info: Info, input: SegmentGrantStartInput
    ) -> SegmentGrantStartPayload:
        ctx = info.context
        scope = service.REQUIRED_SCOPE[input.action]
        if not ctx.principal.has_scope(scope):
            raise PermissionDenied(f"This grant needs the {scope} scope.")
        unfinished: list[int] = []

        async def change(work: UnitOfWork) -> SegmentGrantStartPayload:
            request = service.GrantRequest(
                segment_id=_pk(input.segment_id, "Segment", "segmentId"),
                campaign_key=input.campaign_key,
                action=input.action,
                reason=input.reason,
                template_id=_pk(input.coupon_template_id, "CouponTemplate", "couponTemplateId")
                if input.coupon_template_id
                else None,
                points=input.points,
            )
            job, created = await service.start_grant(
                work.session, work.principal, request, now=utcnow()
            )
            if job.status is not models.JobStatus.COMPLETED:
                unfinished.append(job.id)
            work.touched("SegmentGrantJob", job.id)
            return SegmentGrantStartPayload(job=SegmentGrantJob.from_row(job), created=created)

        answer = await run_mutation(info, SegmentGrantStartPayload, change, refusal=_refusal)
        for job_id in unfinished:
            # After the commit; a retry of an unfinished job resumes it (runners are safe
            # to overlap: see jobs.py).
            jobs.launch(ctx.db, job_id, ctx.settings.points_policy)
        return answer


__all__ = ["Segment", "SegmentGrantJob", "SegmentMutation", "SegmentQuery"]


schema_parts = SchemaParts(
    query=SegmentQuery,
    mutation=SegmentMutation,
    types=[Segment, SegmentGrantJob],
    nodes={"Segment": _load_segments, "SegmentGrantJob": _load_jobs},
)
