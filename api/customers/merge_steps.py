"""The merge step: each domain that holds customer data moves it in its own step.

The customers domain owns the merge (locks, redirects, identities, tags, membership); the
other domains' steps are listed, in the order they run, by the composition root
(``api/wiring.py``). All steps run inside the merge's one transaction, so a merge is complete
or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class MergeMove:
    """Something that moves to the target, e.g. ("points", 1200, "1200 points in 3 lots")."""

    kind: str
    count: int
    description: str


@dataclass(frozen=True, slots=True)
class MergeConflict:
    """A difference the merge resolves by a rule; the preview shows it so a person can check."""

    field: str
    message: str


@dataclass(slots=True)
class MergePlan:
    session: AsyncSession
    target_id: int
    source_ids: list[int]
    actor: str | None
    now: datetime


class MergeStep(Protocol):
    name: str

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]: ...

    async def apply(self, plan: MergePlan) -> None: ...
