"""Recording channel spend."""

from __future__ import annotations

import strawberry

from api.analytics import spend
from api.analytics.graphql.channel_spend import (
    ChannelSpend,
    ChannelSpendRecordInput,
    ChannelSpendRecordPayload,
)
from api.analytics.graphql.inputs import (
    AnalyticsError,
    key_of,
)
from api.db import utcnow
from api.errors import DomainError
from api.graphql.context import Info
from api.graphql.errors import user_errors
from api.graphql.permissions import requires


@strawberry.type
class AnalyticsMutation:
    @strawberry.mutation(
        permission_classes=[requires("spend:write")],
        description="Record channel spend (HQ only), for CAC and ROI. Idempotent per key.",
    )
    async def channel_spend_record(
        self, info: Info, input: ChannelSpendRecordInput
    ) -> ChannelSpendRecordPayload:
        ctx = info.context
        try:
            # Before the input is read: a partner-level caller learns nothing from it.
            spend.require_hq(ctx.principal)
            draft = spend.SpendDraft(
                channel=input.channel,
                partner_id=key_of(input.partner_id, "Partner", "partnerId"),
                period_start=input.period_start,
                period_end=input.period_end,
                amount=input.amount,
                currency=input.currency,
                note=input.note,
                idempotency_key=input.idempotency_key,
            )
            async with ctx.db.transaction() as session:
                result = await spend.record_channel_spend(
                    session, ctx.principal, draft, now=utcnow()
                )
        except DomainError as error:
            return ChannelSpendRecordPayload(errors=user_errors(AnalyticsError, error))
        ctx.touched(info, "ChannelSpend", result.spend.id)
        return ChannelSpendRecordPayload(
            spend=ChannelSpend.from_row(result.spend), created=result.created
        )
