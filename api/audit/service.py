from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import AuditEvent
from api.auth.principal import Principal
from api.db import Database, utcnow


@dataclass(slots=True)
class AuditEntry:
    action: str
    object_type: str | None = None
    object_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None


async def record(
    db: Database, principal: Principal, ip: str | None, entries: Sequence[AuditEntry]
) -> None:
    """Write audit entries in one statement, in their own unit of work: the record of an
    attempt must survive the attempt's own rollback."""
    if not entries:
        return
    async with db.transaction() as session:
        await insert_entries(session, principal, ip, entries)


async def insert_entries(
    session: AsyncSession, principal: Principal, ip: str | None, entries: Sequence[AuditEntry]
) -> None:
    """Write audit entries in one statement, in the caller's transaction: the record of a
    change commits with the change (``api/graphql/mutations.py``)."""
    at = utcnow()
    rows = [
        {
            "at": at,
            "actor": principal.subject,
            "role": principal.role.value if principal.role else None,
            "client_id": principal.client_id,
            "ip": ip,
            "action": e.action,
            "object_type": e.object_type,
            "object_id": e.object_id,
            "detail": e.detail,
        }
        for e in entries
    ]
    await session.execute(insert(AuditEvent), rows)


def events_query(where: AuditFilter | None) -> Select[Any]:
    stmt = select(AuditEvent)
    if where is None:
        return stmt
    if where.actor:
        stmt = stmt.where(AuditEvent.actor == where.actor)
    if where.action:
        stmt = stmt.where(AuditEvent.action == where.action)
    if where.object_type:
        stmt = stmt.where(AuditEvent.object_type == where.object_type)
    if where.object_id:
        stmt = stmt.where(AuditEvent.object_id == where.object_id)
    return stmt


EVENT_KEYSET = (AuditEvent.id,)
