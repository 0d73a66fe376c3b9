"""Membership hooks: what other domains keep in step when a customer becomes a member
(conversion touchpoints, referral rewards) without the customers domain knowing them.

Like the order hooks (api/orders/hooks.py): a domain registers a hook when its service module
is imported, and hooks run inside the enrolment's transaction, after the membership is
written, so what they write commits or rolls back with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class MemberJoined:
    customer_id: int
    store_id: int  # the recruiting store
    partner_id: int | None  # its partner (None: an HQ-run store)
    guide_id: int | None  # the recruiting guide, if any
    now: datetime  # member_since


MemberHook = Callable[[AsyncSession, MemberJoined], Awaitable[None]]

MEMBER_HOOKS: dict[str, MemberHook] = {}


def register_member_hook(name: str, hook: MemberHook) -> None:
    # Keyed by name: re-importing a module (tests, reloads) replaces rather than duplicates.
    MEMBER_HOOKS[name] = hook


async def run_member_hooks(session: AsyncSession, joined: MemberJoined) -> None:
    # Every domain's hooks, whatever imported the customers service (the API, a CLI job, a
    # test): a hook that is missing would silently let touchpoints or rewards fall behind.
    from api.domains import load_services

    load_services()
    for hook in MEMBER_HOOKS.values():
        await hook(session, joined)
