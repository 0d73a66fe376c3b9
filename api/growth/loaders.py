"""Batch loads of this domain. Each batch opens its own session: strawberry resolves sibling
fields concurrently, and an AsyncSession must not be shared between them."""

from __future__ import annotations

from collections.abc import Sequence

from api.graphql.context import Context
from api.growth.models import Touchpoint
from api.growth.reads import touchpoints_by_id


async def touchpoints_by_pk(ctx: Context, keys: Sequence[int]) -> list[Touchpoint | None]:
    async with ctx.db.read() as session:
        found = await touchpoints_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]
