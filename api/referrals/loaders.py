"""Batch loads of the referrals domain. Each batch opens its own session: strawberry resolves
sibling fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from api.graphql.context import Context
from api.referrals.campaigns import campaigns_by_id
from api.referrals.models import ReferralCampaign


async def campaigns_by_pk(ctx: Context, keys: Sequence[int]) -> list[ReferralCampaign | None]:
    """Campaigns by id, for HQ and members; None for anyone else (see may_see_campaigns)."""
    async with ctx.db.read() as session:
        found = await campaigns_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]
