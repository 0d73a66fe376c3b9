"""GraphQL surface of growth: ``touchpointRecord``, ``touchpointsRecord``, ``touchpoints``,
``conversionFunnel`` and the ``Touchpoint`` node. Thin wrappers over recording.py, reads.py and
funnel.py.

Scope (see reads.py): a partner (admin or integration) records and reads its own partner's
touchpoints, store staff their store's, HQ all; members none. Recording needs growth:write,
reading (the connection, the funnel and ``node``) analytics:read, which store staff do not
hold. A touchpoint's customer, store and order load through the scoped loaders: one the
caller may not see answers null.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Annotated

import strawberry

from api.customers.graphql.types import Customer, IdentityInput
from api.db import utcnow
from api.errors import DomainError, Problem
from api.graphql.context import Context, Info
from api.graphql.errors import UserError, user_errors
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.growth import errors as growth_errors
from api.growth import funnel, loaders, models, reads, recording
from api.orders.schema import Order
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

# Reading touchpoints and funnels is analytics (recording them is growth:write).
ANALYTICS_READ = "analytics:read"

# strawberry.enum registers the GraphQL enum on the Python enum class itself (and returns
# it): fields are annotated with the class, which is a type to mypy too.
TouchpointStep = models.TouchpointStep
strawberry.enum(
    TouchpointStep,
    description="The conversion steps (公域引流 → 私域转化 → 复购), in funnel order: "
    "MARKETPLACE_PURCHASE (bought on Tmall / JD / Douyin), QR_SCAN (scanned a package-insert "
    "QR code, 包裹卡), WECOM_ADDED (added a guide on WeCom), COMMUNITY_JOINED (joined a "
    "community group), MEMBER_REGISTERED, FIRST_ORDER (first private-domain order), "
    "REPURCHASE (a later one). The last three and order-borne MARKETPLACE_PURCHASE are "
    "recorded by Qudao itself.",
)
GrowthErrorCode = growth_errors.GrowthErrorCode
strawberry.enum(GrowthErrorCode)
FunnelGroupBy = funnel.FunnelGroupBy
strawberry.enum(
    FunnelGroupBy,
    description="What splits a funnel's cohort: a dimension of the entry touch, or the week "
    "(from Monday) or month of its time in the business calendar (UTC+8, like the LTV and "
    "retention reports).",
)


@strawberry.enum(description="What became of one item of touchpointsRecord.")
class TouchpointOutcomeStatus(enum.Enum):
    CREATED = "created"
    EXISTING = "existing"  # a retry: the event id was recorded before, with the same payload
    FAILED = "failed"  # see the payload's errors under this item's index


# --- the node ------------------------------------------------------------------------------


@strawberry.type(description="One conversion step a customer took (触点).")
class Touchpoint(Node):
    step: TouchpointStep
    event_id: str = strawberry.field(description="The recorder's id of the event.")
    recorded_scope: str = strawberry.field(
        description="Whose event ids: hq, partner:<id>, store:<id>, or system (Qudao's own: "
        "order:<id>, member:<customer id>)."
    )
    source_channel: str | None
    campaign_id: str | None = strawberry.field(description="For a QR scan, its QR campaign.")
    guide_id: strawberry.ID | None = strawberry.field(description="A StaffUser id.")
    occurred_at: datetime
    recorded_by: str | None
    created_at: datetime
    pk: strawberry.Private[int]
    customer_pk: strawberry.Private[int]
    store_pk: strawberry.Private[int | None]
    partner_pk: strawberry.Private[int | None]
    order_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.Touchpoint) -> Touchpoint:
        return cls(
            id=strawberry.ID(encode_id("Touchpoint", row.id)),
            pk=row.id,
            step=row.step,
            event_id=row.event_id,
            recorded_scope=row.recorded_scope,
            source_channel=row.source_channel,
            campaign_id=row.campaign_id,
            guide_id=strawberry.ID(encode_id("StaffUser", row.guide_id)) if row.guide_id else None,
            occurred_at=row.occurred_at,
            recorded_by=row.recorded_by,
            created_at=row.created_at,
            customer_pk=row.customer_id,
            store_pk=row.store_id,
            partner_pk=row.partner_id,
            order_pk=row.order_id,
        )

    @strawberry.field(description="Null when you may not see the customer.")
    async def customer(self, info: Info) -> Customer | None:
        found = await info.context.load_node("Customer", self.customer_pk)
        return found

    @strawberry.field
    async def store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(description="The partner it counts for; null for HQ's own.")
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field(description="The order behind a system touchpoint; null if not yours.")
    async def order(self, info: Info) -> Order | None:
        if self.order_pk is None:
            return None
        found = await info.context.load_node("Order", self.order_pk)
        return found


async def _load_touchpoints(ctx: Context, pks: Sequence[int]) -> list[Touchpoint | None]:
    # ``node`` only needs a token: touchpoints are read with analytics:read, as the
    # ``touchpoints`` connection is (store staff hold growth:write without it).
    if not ctx.principal.has_scope(ANALYTICS_READ):
        return [None] * len(pks)
    rows = await ctx.loader(loaders.touchpoints_by_pk).load_many(pks)
    return [Touchpoint.from_row(r) if r else None for r in rows]


# --- errors and inputs ---------------------------------------------------------------------


@strawberry.type
class GrowthError(UserError):
    code: GrowthErrorCode


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=growth_errors.GrowthErrorCode.INVALID)


@strawberry.input(description="The customer: by id, or by identities (found, else created).")
class TouchpointCustomerInput:
    id: strawberry.ID | None = None
    identities: list[IdentityInput] | None = strawberry.field(
        default=None,
        description="HQ: found or created, and identities not on file attached (like "
        "customerUpsert). Anyone else: the customer they name, else a new one; nothing is "
        "attached to a customer on file.",
    )


@strawberry.input(
    description="One touch. A partner records for itself (its stores, its staff as guides), "
    "store staff for their store; HQ for anyone."
)
class TouchpointRecordInput:
    event_id: str = strawberry.field(
        description="Your id of the event (1-100 characters): a retry with the same id and "
        "payload returns the first touchpoint (created: false); another payload is "
        "EVENT_ID_REUSED."
    )
    step: TouchpointStep
    customer: TouchpointCustomerInput
    occurred_at: datetime = strawberry.field(
        description="With a UTC offset; not in the future, at most 5 years ago."
    )
    source_channel: str | None = strawberry.field(
        default=None,
        description="Where it happened, a short lowercase word (tmall, wecom, mini_program).",
    )
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="HQ only (default: the store's); a partner records its own."
    )
    store_id: strawberry.ID | None = strawberry.field(
        default=None, description="Store staff: default theirs."
    )
    guide_id: strawberry.ID | None = strawberry.field(
        default=None, description="A StaffUser of the store (needs a store)."
    )
    campaign_id: str | None = strawberry.field(
        default=None, description="Up to 64 characters; required for QR_SCAN (the QR code's)."
    )


def _draft(input: TouchpointRecordInput, *path: str) -> recording.TouchpointDraft:
    """The service's draft; DomainError (INVALID) for a malformed id, on its field."""
    ref = input.customer
    return recording.TouchpointDraft(
        event_id=input.event_id,
        step=input.step,
        customer=recording.CustomerRef(
            id=_pk(ref.id, "Customer", *path, "customer", "id") if ref.id else None,
            identities=[(i.kind, i.value) for i in ref.identities or ()],
        ),
        occurred_at=input.occurred_at,
        source_channel=input.source_channel,
        partner_id=_pk(input.partner_id, "Partner", *path, "partnerId")
        if input.partner_id
        else None,
        store_id=_pk(input.store_id, "Store", *path, "storeId") if input.store_id else None,
        guide_id=_pk(input.guide_id, "StaffUser", *path, "guideId") if input.guide_id else None,
        campaign_id=input.campaign_id,
    )


@strawberry.type
class TouchpointRecordPayload:
    touchpoint: Touchpoint | None = None
    created: bool = strawberry.field(
        default=False, description="false: a retry of an event id recorded before."
    )
    errors: list[GrowthError] = strawberry.field(default_factory=list)


@strawberry.input
class TouchpointsRecordInput:
    touchpoints: list[TouchpointRecordInput] = strawberry.field(
        description=f"At most {recording.MAX_BATCH}; each is recorded or refused on its own."
    )


@strawberry.type(description="What became of one item, by its index in the input.")
class TouchpointOutcome:
    index: int
    status: TouchpointOutcomeStatus
    touchpoint: Touchpoint | None


@strawberry.type
class TouchpointsRecordPayload:
    results: list[TouchpointOutcome] = strawberry.field(
        default_factory=list, description="One per item, in input order."
    )
    errors: list[GrowthError] = strawberry.field(
        default_factory=list,
        description="Every item's errors (field: input.touchpoints.<index>...), and the request's.",
    )


@strawberry.type
class GrowthMutation:
    @strawberry.mutation(
        description="Record one conversion touch (idempotent by eventId).",
        permission_classes=[requires("growth:write")],
    )
    async def touchpoint_record(
        self, info: Info, input: TouchpointRecordInput
    ) -> TouchpointRecordPayload:
        async def change(work: UnitOfWork) -> TouchpointRecordPayload:
            draft = _draft(input)
            result = await recording.record_touchpoint(
                work.session, work.principal, draft, now=utcnow()
            )
            work.touched("Touchpoint", result.touchpoint.id)
            return TouchpointRecordPayload(
                touchpoint=Touchpoint.from_row(result.touchpoint), created=result.created
            )

        return await run_mutation(info, TouchpointRecordPayload, change)

    @strawberry.mutation(
        description="Record a batch of touches (a partner system's feed): each item is "
        "recorded, found (a retry) or refused on its own, in one transaction.",
        permission_classes=[requires("growth:write")],
    )
    async def touchpoints_record(
        self, info: Info, input: TouchpointsRecordInput
    ) -> TouchpointsRecordPayload:
        items = input.touchpoints
        if len(items) > recording.MAX_BATCH:
            error = DomainError.one(
                growth_errors.GrowthErrorCode.LIMIT_EXCEEDED,
                f"At most {recording.MAX_BATCH} touchpoints at once.",
                "touchpoints",
            )
            return TouchpointsRecordPayload(errors=user_errors(GrowthError, error))
        drafts: list[recording.TouchpointDraft] = []
        positions: list[int] = []  # the input index of each draft
        refused: dict[int, DomainError] = {}
        for index, item in enumerate(items):
            try:
                drafts.append(_draft(item, "touchpoints", str(index)))
                positions.append(index)
            except DomainError as error:
                refused[index] = error

        async def change(work: UnitOfWork) -> TouchpointsRecordPayload:
            outcomes = await recording.record_touchpoints(
                work.session, work.principal, drafts, now=utcnow()
            )
            by_index = dict(zip(positions, outcomes, strict=True))
            results: list[TouchpointOutcome] = []
            problems: list[Problem] = []
            for index in range(len(items)):
                outcome = by_index.get(index)
                if outcome is None:
                    problems += refused[index].problems
                    results.append(
                        TouchpointOutcome(
                            index=index, status=TouchpointOutcomeStatus.FAILED, touchpoint=None
                        )
                    )
                    continue
                # The service numbered its drafts; put the input's index back in the path.
                problems += [
                    Problem(p.code, p.message, ("touchpoints", str(index), *(p.field or ())[2:]))
                    for p in outcome.problems
                ]
                if outcome.touchpoint is None:
                    status, node = TouchpointOutcomeStatus.FAILED, None
                else:
                    status = (
                        TouchpointOutcomeStatus.CREATED
                        if outcome.created
                        else TouchpointOutcomeStatus.EXISTING
                    )
                    node = Touchpoint.from_row(outcome.touchpoint)
                results.append(TouchpointOutcome(index=index, status=status, touchpoint=node))
            errors = user_errors(GrowthError, DomainError(problems)) if problems else []
            return TouchpointsRecordPayload(results=results, errors=errors)

        return await run_mutation(info, TouchpointsRecordPayload, change)


# --- queries -------------------------------------------------------------------------------


@strawberry.input(description="Every given condition must hold.")
class TouchpointFilter:
    customer_id: strawberry.ID | None = None
    step: list[TouchpointStep] | None = None
    campaign_id: str | None = None
    store_id: strawberry.ID | None = None
    occurred_from: datetime | None = strawberry.field(
        default=None, name="from", description="Occurred at or after (inclusive)."
    )
    occurred_to: datetime | None = strawberry.field(
        default=None, name="to", description="Occurred before (exclusive)."
    )

    def to_service(self) -> reads.TouchpointFilter:
        return reads.TouchpointFilter(
            customer_ids=[decode_id_of(self.customer_id, "Customer")] if self.customer_id else (),
            steps=self.step or (),
            campaign_ids=[self.campaign_id] if self.campaign_id else (),
            store_ids=[decode_id_of(self.store_id, "Store")] if self.store_id else (),
            occurred_from=self.occurred_from,
            occurred_to=self.occurred_to,
        )


@strawberry.type(description="One funnel step of a group.")
class FunnelStep:
    step: TouchpointStep
    customers: int = strawberry.field(description="Customers of the cohort who reached it.")
    conversion_from_previous: Decimal | None = strawberry.field(
        description="customers ÷ the previous step's (4 places); null for the first step or "
        "when the previous has none."
    )
    conversion_from_first: Decimal | None = strawberry.field(
        description="customers ÷ the first step's (4 places)."
    )
    median_hours_from_previous: Decimal | None = strawberry.field(
        description="Median hours from reaching the previous step to reaching this one (2 "
        "places); null for the first step or when nobody reached it."
    )


@strawberry.type(description="The funnel of one group of the cohort.")
class FunnelGroup:
    key: str | None = strawberry.field(
        description="The group's value: a source channel, campaign id, Partner or Store id, or "
        "the cohort's first day; null without groupBy or for entries without that value."
    )
    cohort_start: date | None = strawberry.field(
        description="COHORT_WEEK / COHORT_MONTH: the cohort's first day (a Monday or the 1st) "
        "in the business calendar (UTC+8)."
    )
    steps: list[FunnelStep]
    partner_pk: strawberry.Private[int | None]
    store_pk: strawberry.Private[int | None]

    @strawberry.field(description="groupBy PARTNER: the partner.")
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field(description="groupBy STORE: the store.")
    async def store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None


@strawberry.type
class ConversionFunnel:
    groups: list[FunnelGroup] = strawberry.field(
        default_factory=list,
        description="Without groupBy, one group. Cohorts oldest first; other groups largest first.",
    )
    truncated: bool = strawberry.field(
        default=False, description=f"More than {funnel.MAX_GROUPS} groups: the smallest left out."
    )
    errors: list[GrowthError] = strawberry.field(
        default_factory=list, description="Why there is no funnel (field: the argument)."
    )


def _group(group: funnel.FunnelGroup, group_by: funnel.FunnelGroupBy | None) -> FunnelGroup:
    key = group.key
    partner_pk = key if group_by is funnel.FunnelGroupBy.PARTNER else None
    store_pk = key if group_by is funnel.FunnelGroupBy.STORE else None
    shown: str | None
    if key is None:
        shown = None
    elif isinstance(partner_pk, int):
        shown = encode_id("Partner", partner_pk)
    elif isinstance(store_pk, int):
        shown = encode_id("Store", store_pk)
    elif isinstance(key, date):
        shown = key.isoformat()
    else:
        shown = str(key)
    return FunnelGroup(
        key=shown,
        cohort_start=key if isinstance(key, date) else None,
        steps=[
            FunnelStep(
                step=s.step,
                customers=s.customers,
                conversion_from_previous=s.conversion_from_previous,
                conversion_from_first=s.conversion_from_first,
                median_hours_from_previous=s.median_hours_from_previous,
            )
            for s in group.steps
        ],
        partner_pk=partner_pk if isinstance(partner_pk, int) else None,
        store_pk=store_pk if isinstance(store_pk, int) else None,
    )


def _argument_errors(error: DomainError) -> list[GrowthError]:
    # A query's errors name its arguments, not an input object. The funnel's problems are the
    # growth domain's codes (the member of the same value).
    return [
        GrowthError(
            field=list(p.field) if p.field else None,
            message=p.message,
            code=GrowthErrorCode(p.code.value),
        )
        for p in error.problems
    ]


@strawberry.type
class GrowthQuery:
    @connection(
        Connection[Touchpoint],
        description="Touchpoints you may see, oldest recorded first (reverse: newest first): "
        "HQ all; a partner its own partner's; store staff their store's.",
        permission_classes=[requires(ANALYTICS_READ)],
    )
    async def touchpoints(
        self, info: Info, filter: TouchpointFilter | None = None, reverse: bool = False
    ) -> Rows[Touchpoint]:
        stmt = reads.touchpoints_query(
            info.context.principal, filter.to_service() if filter else None
        )
        return Rows(stmt, reads.TOUCHPOINT_KEYSET, Touchpoint.from_row, reverse=reverse)

    @strawberry.field(
        description="The conversion funnel of the customers whose first touch of steps[0] "
        "(matching the filters) falls in [from, to): how many reached each later step in "
        "order, the conversion rates and the median time between steps. A partner sees its "
        "own touches only.",
        permission_classes=[requires(ANALYTICS_READ)],
    )
    async def conversion_funnel(
        self,
        info: Info,
        occurred_from: Annotated[datetime, strawberry.argument(name="from")],
        occurred_to: Annotated[datetime, strawberry.argument(name="to")],
        steps: Annotated[
            list[TouchpointStep] | None,
            strawberry.argument(description="2 to 7 distinct steps; default all, in order."),
        ] = None,
        source_channel: str | None = None,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
        campaign_id: str | None = None,
        group_by: FunnelGroupBy | None = None,
    ) -> ConversionFunnel:
        ctx = info.context
        try:
            query = funnel.FunnelQuery(
                start=occurred_from,
                end=occurred_to,
                steps=tuple(steps) if steps is not None else models.FUNNEL_STEPS,
                source_channel=source_channel.strip().lower() if source_channel else None,
                partner_id=_pk(partner_id, "Partner", "partnerId") if partner_id else None,
                store_id=_pk(store_id, "Store", "storeId") if store_id else None,
                campaign_id=campaign_id.strip() if campaign_id else None,
                group_by=group_by,
            )
            async with ctx.db.read() as session:
                result = await funnel.conversion_funnel(session, ctx.principal, query)
        except DomainError as error:
            return ConversionFunnel(errors=_argument_errors(error))
        return ConversionFunnel(
            groups=[_group(g, group_by) for g in result.groups], truncated=result.truncated
        )


__all__ = ["GrowthMutation", "GrowthQuery", "Touchpoint", "TouchpointStep"]


schema_parts = SchemaParts(
    query=GrowthQuery,
    mutation=GrowthMutation,
    types=[Touchpoint],
    nodes={"Touchpoint": _load_touchpoints},
)
