"""`viewer` (who is calling and what they may do) and the audit log."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from sqlalchemy import select
from strawberry.scalars import JSON

from api.audit import service as audit
from api.auth.models import AuditEvent as AuditEventRow
from api.auth.principal import Role
from api.graphql.context import Context, Info
from api.graphql.ids import encode_id
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.customers.graphql.types import Customer

# strawberry.enum makes the enum class itself the GraphQL enum (and returns it): fields are
# annotated with the class, a type mypy can read, where a variable holding it is not one.
strawberry.enum(Role)


@strawberry.enum
class PrincipalKind(enum.Enum):
    ANONYMOUS = "anonymous"
    STAFF = "staff"
    INTEGRATION = "integration"
    MEMBER = "member"


@strawberry.type(description="The caller of this request and what it may do.")
class Viewer:
    kind: PrincipalKind
    subject: str
    role: Role | None
    scopes: list[str]
    client_id: str | None
    partner_pk: strawberry.Private[int | None]
    store_pk: strawberry.Private[int | None]
    customer_pk: strawberry.Private[int | None]

    @strawberry.field(description='Whether the caller holds a scope, e.g. can(scope: "pii:read").')
    def can(self, scope: str) -> bool:
        return scope in self.scopes

    @strawberry.field(description="The partner a partner-level caller acts for.")
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field(description="The store a store-level caller works at.")
    async def store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="A member's own customer profile (null for anyone else).",
    )
    async def customer(
        self, info: Info
    ) -> Annotated[Customer, strawberry.lazy("api.customers.graphql.types")] | None:
        if self.customer_pk is None:
            return None
        # Through the customers domain's node loader: scoped like `node`, so the token's
        # customer is the only one it can return.
        found = await info.context.load_node("Customer", self.customer_pk)
        return found


def _kind(role: Role | None) -> PrincipalKind:
    if role is None:
        return PrincipalKind.ANONYMOUS
    if role is Role.INTEGRATION:
        return PrincipalKind.INTEGRATION
    if role is Role.MEMBER:
        return PrincipalKind.MEMBER
    return PrincipalKind.STAFF


@strawberry.type(description="One audited action.")
class AuditEvent(Node):
    at: datetime
    actor: str
    role: str | None
    client_id: str | None
    ip: str | None
    action: str
    object_type: str | None
    object_id: str | None = strawberry.field(description="The object's global ID, when known.")
    detail: JSON

    @classmethod
    def from_row(cls, row: AuditEventRow) -> AuditEvent:
        object_id = (
            encode_id(row.object_type, int(row.object_id))
            if row.object_type and row.object_id and row.object_id.isdigit()
            else row.object_id
        )
        return cls(
            id=strawberry.ID(encode_id("AuditEvent", row.id)),
            at=row.at,
            actor=row.actor,
            role=row.role,
            client_id=row.client_id,
            ip=row.ip,
            action=row.action,
            object_type=row.object_type,
            object_id=object_id,
            detail=JSON(row.detail),
        )


async def _load_events(ctx: Context, pks: Sequence[int]) -> list[AuditEvent | None]:
    if not ctx.principal.has_scope("audit:read"):
        return [None] * len(pks)
    async with ctx.db.read() as session:
        rows = {
            r.id: r
            for r in await session.scalars(select(AuditEventRow).where(AuditEventRow.id.in_(pks)))
        }
    return [AuditEvent.from_row(rows[pk]) if pk in rows else None for pk in pks]


@strawberry.input
class AuditEventFilter:
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = strawberry.field(
        default=None, description="A database id as recorded (not a global ID)."
    )


@strawberry.type
class AuthQuery:
    @strawberry.field(description="Who is calling, with which role, scopes and partner.")
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        return Viewer(
            kind=_kind(principal.role),
            subject=principal.subject,
            role=principal.role,
            scopes=sorted(principal.scopes),
            client_id=principal.client_id,
            partner_pk=principal.partner_id,
            store_pk=principal.store_id,
            customer_pk=principal.customer_id if principal.is_member else None,
        )

    @connection(
        Connection[AuditEvent],
        permission_classes=[requires("audit:read")],
        description="The audit log, newest first.",
    )
    async def audit_events(self, filter: AuditEventFilter | None = None) -> Rows[AuditEvent]:
        where = (
            audit.AuditFilter(filter.actor, filter.action, filter.object_type, filter.object_id)
            if filter
            else None
        )
        stmt = audit.events_query(where)
        return Rows(stmt, audit.EVENT_KEYSET, AuditEvent.from_row, reverse=True)


schema_parts = SchemaParts(query=AuthQuery, types=[AuditEvent], nodes={"AuditEvent": _load_events})
