"""What other domains do when a customer becomes a member or two customers merge, and how
the customers domain tells them.

The reactions and merge steps are the composition root's table (``api/wiring.py``), handed
in as ``CustomersWiring``; the customers domain never imports the domains that react. Both
run inside the enrolment's or the merge's one transaction, so what they write commits or
rolls back with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.customers.merge_steps import MergeStep


@dataclass(frozen=True, slots=True)
class MemberJoined:
    customer_id: int
    store_id: int  # the recruiting store
    partner_id: int | None  # its partner (None: an HQ-run store)
    guide_id: int | None  # the recruiting guide, if any
    now: datetime  # member_since


MemberReaction = Callable[[AsyncSession, MemberJoined], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CustomersWiring:
    """What the customers domain is handed by the composition root: the reactions to a new
    member, and the other domains' merge steps, each in the order they run."""

    member_reactions: tuple[MemberReaction, ...] = ()
    merge_steps: tuple[MergeStep, ...] = ()

    async def member_joined(self, session: AsyncSession, joined: MemberJoined) -> None:
        for react in self.member_reactions:
            await react(session, joined)
