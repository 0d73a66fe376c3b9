"""Channel spend as a node (read with analytics:read), its list filter, and what recording it
takes and answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

import strawberry

from api.analytics import arguments, loaders
from api.analytics import models as analytics_models
from api.analytics.graphql.inputs import (
    ANALYTICS_READ,
    AnalyticsError,
)
from api.analytics.graphql.types import partner_of
from api.catalog.models import SalesChannel as SalesChannelValue
from api.catalog.schema import SalesChannel
from api.graphql.context import Context, Info
from api.graphql.ids import encode_id
from api.graphql.money import Money
from api.graphql.relay import Node
from api.partners.schema import Partner


@strawberry.type(description="Money spent acquiring customers on a channel in a period.")
class ChannelSpend(Node):
    channel: SalesChannel  # type: ignore[valid-type]  # a strawberry.enum value
    period_start: date
    period_end: date = strawberry.field(description="Inclusive.")
    amount: Money
    note: str | None
    recorded_by: str | None
    created_at: datetime
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: analytics_models.ChannelSpend) -> ChannelSpend:
        return cls(
            id=strawberry.ID(encode_id("ChannelSpend", row.id)),
            channel=SalesChannelValue(row.channel),
            period_start=row.period_start,
            period_end=row.period_end,
            amount=Money(amount=row.amount, currency=row.currency),
            note=row.note,
            recorded_by=row.recorded_by,
            created_at=row.created_at,
            partner_pk=row.partner_id,
        )

    @strawberry.field(description="The partner it was spent for; null for HQ's own.")
    async def partner(self, info: Info) -> Partner | None:
        return await partner_of(info, self.partner_pk)


async def load_spends(ctx: Context, pks: Sequence[int]) -> list[ChannelSpend | None]:
    # ``node`` only needs a token: spend is analytics, readable with analytics:read alone.
    if not ctx.principal.has_scope(ANALYTICS_READ):
        return [None] * len(pks)
    rows = await ctx.loader(loaders.spends_by_pk).load_many(pks)
    return [ChannelSpend.from_row(r) if r else None for r in rows]


@strawberry.input
class ChannelSpendFilter:
    channels: list[SalesChannel] | None = None  # type: ignore[valid-type]  # a strawberry.enum value
    partner_id: strawberry.ID | None = None
    overlapping_from: date | None = strawberry.field(
        default=None, name="from", description="Periods ending on or after this day."
    )
    overlapping_to: date | None = strawberry.field(
        default=None, name="to", description="Periods starting on or before this day."
    )


@strawberry.input
class ChannelSpendRecordInput:
    channel: SalesChannel  # type: ignore[valid-type]  # a strawberry.enum value
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Spent for this partner's channel; none for HQ's own."
    )
    period_start: date = strawberry.field(description="From 2000-01-01 to 2100-12-31.")
    period_end: date = strawberry.field(
        description="Inclusive; before the same date a year after periodStart, and at the "
        "latest 2100-12-31."
    )
    amount: Decimal = strawberry.field(description="More than 0, at most 100000000.00.")
    currency: str = arguments.DEFAULT_CURRENCY
    note: str | None = None
    idempotency_key: str = strawberry.field(
        description="A retry with the same key returns the first record."
    )


@strawberry.type
class ChannelSpendRecordPayload:
    spend: ChannelSpend | None = None
    created: bool = strawberry.field(
        default=False, description="False when a retry returned the first record."
    )
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)
