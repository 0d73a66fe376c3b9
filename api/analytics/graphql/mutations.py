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
    key_of,
)
from api.db import utcnow
from api.graphql.context import Info
from api.graphql.mutations import UnitOfWork, run_mutation
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
        async def change(work: UnitOfWork) -> ChannelSpendRecordPayload:
            # Before the input is read: a partner-level caller learns nothing from it.
            spend.require_hq(work.principal)
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
            result = await spend.record_channel_spend(
                work.session, work.principal, draft, now=utcnow()
            )
            work.touched("ChannelSpend", result.spend.id)
            return ChannelSpendRecordPayload(
                spend=ChannelSpend.from_row(result.spend), created=result.created
            )

        return await run_mutation(info, ChannelSpendRecordPayload, change)
