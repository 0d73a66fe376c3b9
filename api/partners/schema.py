"""GraphQL surface of partners and stores: thin wrappers over service.py and loaders.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from functools import partial
from typing import Any

import strawberry
from strawberry import UNSET as GQL_UNSET

from api.audit.service import AuditEntry
from api.auth.pii import PII_SCOPE, mask_email, mask_phone
from api.errors import DomainError
from api.graphql.context import Context, Info
from api.graphql.errors import UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Children, Connection, Node, Rows, connection
from api.partners import loaders, models, service

# strawberry.enum makes the enum class itself the GraphQL enum (and returns it): fields are
# annotated with the class, a type mypy can read, where a variable holding it is not one.
strawberry.enum(models.PartnerType, description="渠道类型: the kind of channel partner.")
strawberry.enum(
    models.PartnerStatus, description="Lifecycle: PROSPECT → ACTIVE ⇄ PROBATION → TERMINATED."
)
strawberry.enum(models.PartnerTier, description="分级: the partner's tier.")
strawberry.enum(models.StoreStatus)
strawberry.enum(
    models.StoreKind,
    description="STORE: sells to customers and may offer pickup; WAREHOUSE: holds stock and "
    "ships deliveries, no counter.",
)
strawberry.enum(service.PartnerErrorCode)
strawberry.enum(service.PartnerSortKey, name="PartnerSortKeys")


@strawberry.type
class PartnerContact:
    name: str | None
    phone: str | None
    email: str | None


@strawberry.type(description="A channel partner (渠道伙伴): distributor, agent, store, shop.")
class Partner(Node):
    code: str
    name: str
    type: models.PartnerType
    status: models.PartnerStatus
    tier: models.PartnerTier | None
    contract_starts_on: date | None
    contract_ends_on: date | None
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[int]
    parent_pk: strawberry.Private[int | None]
    raw_contact: strawberry.Private[PartnerContact]

    @classmethod
    def from_row(cls, row: models.Partner) -> Partner:
        return cls(
            id=strawberry.ID(encode_id("Partner", row.id)),
            pk=row.id,
            parent_pk=row.parent_id,
            code=row.code,
            name=row.name,
            type=row.type,
            status=row.status,
            tier=row.tier,
            raw_contact=PartnerContact(
                name=row.contact_name, phone=row.contact_phone, email=row.contact_email
            ),
            contract_starts_on=row.contract_starts_on,
            contract_ends_on=row.contract_ends_on,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @strawberry.field(
        description="The contact person. Phone and email are masked (138****1234) without the "
        "pii:read scope; unmasked reads are audited."
    )
    def contact(self, info: Info) -> PartnerContact:
        raw = self.raw_contact
        if not info.context.principal.has_scope(PII_SCOPE):
            return PartnerContact(
                name=raw.name, phone=mask_phone(raw.phone), email=mask_email(raw.email)
            )
        if raw.phone or raw.email:
            info.context.audit(
                AuditEntry("pii.read", "Partner", str(self.pk), {"fields": ["contact"]})
            )
        return raw

    @strawberry.field(description="Protected sales regions (区域保护), GB/T 2260 codes.")
    async def territories(self, info: Info) -> list[str]:
        return await info.context.loader(loaders.territories_by_partner).load(self.pk)

    @strawberry.field(description="The upstream partner in multi-level distribution (上级).")
    async def parent(self, info: Info) -> Partner | None:
        if self.parent_pk is None:
            return None
        row = await info.context.loader(loaders.partners_by_pk).load(self.parent_pk)
        return Partner.from_row(row) if row else None

    @connection(
        "Connection[Partner]",
        description="Downstream partners (下级), e.g. a distributor's agents.",
    )
    async def children(self) -> Children[Partner]:
        return Children(
            loaders.child_pages_by_parent, loaders.child_counts_by_parent, self.pk, Partner.from_row
        )

    @connection("Connection[Store]")
    async def stores(self) -> Children[Store]:
        return Children(
            loaders.store_pages_by_partner, loaders.store_counts_by_partner, self.pk, Store.from_row
        )


@strawberry.type(description="A store or other location (门店); HQ-run when it has no partner.")
class Store(Node):
    code: str
    name: str
    region_code: str
    address: str
    kind: models.StoreKind
    offers_pickup: bool
    status: models.StoreStatus
    created_at: datetime
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.Store) -> Store:
        return cls(
            id=strawberry.ID(encode_id("Store", row.id)),
            partner_pk=row.partner_id,
            code=row.code,
            name=row.name,
            region_code=row.region_code,
            address=row.address,
            kind=row.kind,
            offers_pickup=row.offers_pickup,
            status=row.status,
            created_at=row.created_at,
        )

    @strawberry.field
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None


async def _load_partners(ctx: Context, pks: Sequence[int]) -> list[Partner | None]:
    rows = await ctx.loader(loaders.partners_by_pk).load_many(pks)
    return [Partner.from_row(r) if r else None for r in rows]


async def _load_stores(ctx: Context, pks: Sequence[int]) -> list[Store | None]:
    rows = await ctx.loader(loaders.stores_by_pk).load_many(pks)
    return [Store.from_row(r) if r else None for r in rows]


# --- queries -------------------------------------------------------------------------------


@strawberry.input
class PartnerFilter:
    types: list[models.PartnerType] | None = None
    tiers: list[models.PartnerTier] | None = None
    statuses: list[models.PartnerStatus] | None = None
    region_code: str | None = strawberry.field(
        default=None, description="Partners protecting this region or a region containing it."
    )
    parent_id: strawberry.ID | None = None
    search: str | None = strawberry.field(default=None, description="Part of a name or code.")

    def to_service(self) -> service.PartnerFilter:
        return service.PartnerFilter(
            types=self.types or (),
            tiers=self.tiers or (),
            statuses=self.statuses or (),
            region_code=self.region_code,
            parent_id=decode_id_of(self.parent_id, "Partner") if self.parent_id else None,
            search=self.search,
        )


@strawberry.input
class StoreFilter:
    partner_ids: list[strawberry.ID] | None = None
    region_code: str | None = strawberry.field(
        default=None, description="A district, or a city/province code (…00) for all within it."
    )
    offers_pickup: bool | None = None
    statuses: list[models.StoreStatus] | None = None

    def to_service(self) -> service.StoreFilter:
        return service.StoreFilter(
            partner_ids=[decode_id_of(i, "Partner") for i in self.partner_ids or ()],
            region_code=self.region_code,
            offers_pickup=self.offers_pickup,
            statuses=self.statuses or (),
        )


@strawberry.type
class PartnerQuery:
    @connection(Connection[Partner], permission_classes=[requires("partners:read")])
    async def partners(
        self,
        info: Info,
        filter: PartnerFilter | None = None,
        sort_key: service.PartnerSortKey = service.PartnerSortKey.ID,
        reverse: bool = False,
    ) -> Rows[Partner]:
        stmt = service.partners_query(
            info.context.principal, filter.to_service() if filter else None
        )
        return Rows(stmt, service.PARTNER_KEYSETS[sort_key], Partner.from_row, reverse=reverse)

    @strawberry.field(permission_classes=[requires("partners:read")])
    async def partner(self, info: Info, id: strawberry.ID) -> Partner | None:
        return (await _load_partners(info.context, [decode_id_of(id, "Partner")]))[0]

    @connection(Connection[Store], permission_classes=[requires("partners:read")])
    async def stores(self, info: Info, filter: StoreFilter | None = None) -> Rows[Store]:
        stmt = service.stores_query(info.context.principal, filter.to_service() if filter else None)
        return Rows(stmt, service.STORE_KEYSET, Store.from_row)

    @strawberry.field(permission_classes=[requires("partners:read")])
    async def store(self, info: Info, id: strawberry.ID) -> Store | None:
        return (await _load_stores(info.context, [decode_id_of(id, "Store")]))[0]


# --- mutations -----------------------------------------------------------------------------


@strawberry.type
class PartnerError(UserError):
    code: service.PartnerErrorCode


@strawberry.input
class PartnerContactInput:
    name: str | None = None
    phone: str | None = None
    email: str | None = None


@strawberry.input
class PartnerCreateInput:
    code: str
    name: str
    type: models.PartnerType
    status: models.PartnerStatus = models.PartnerStatus.PROSPECT
    tier: models.PartnerTier | None = None
    parent_id: strawberry.ID | None = None
    territories: list[str] = strawberry.field(default_factory=list)
    contact: PartnerContactInput | None = None
    contract_starts_on: date | None = None
    contract_ends_on: date | None = None


@strawberry.input(description="Only the fields given change; null clears an optional field.")
class PartnerUpdateInput:
    id: strawberry.ID
    name: str | None = GQL_UNSET
    status: models.PartnerStatus | None = GQL_UNSET
    tier: models.PartnerTier | None = GQL_UNSET
    parent_id: strawberry.ID | None = GQL_UNSET
    territories: list[str] | None = GQL_UNSET
    contact: PartnerContactInput | None = GQL_UNSET
    contract_starts_on: date | None = GQL_UNSET
    contract_ends_on: date | None = GQL_UNSET


@strawberry.input
class StoreCreateInput:
    code: str
    name: str
    region_code: str
    address: str
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omit for an HQ-operated location."
    )
    kind: models.StoreKind = models.StoreKind.STORE
    offers_pickup: bool = strawberry.field(
        default=False, description="Members may pick orders up here. Never a WAREHOUSE's."
    )
    status: models.StoreStatus = models.StoreStatus.OPEN


@strawberry.type
class PartnerCreatePayload:
    partner: Partner | None = None
    errors: list[PartnerError] = strawberry.field(default_factory=list)


@strawberry.type
class PartnerUpdatePayload:
    partner: Partner | None = None
    errors: list[PartnerError] = strawberry.field(default_factory=list)


@strawberry.type
class StoreCreatePayload:
    store: Store | None = None
    errors: list[PartnerError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=service.PartnerErrorCode.INVALID)


# Optional in the input (omit to keep), but a value is required: null is refused.
_REQUIRED_ON_UPDATE = frozenset({"name", "status", "territories"})


def _given(value: Any) -> bool:
    return value is not GQL_UNSET


@strawberry.type
class PartnerMutation:
    @strawberry.mutation(permission_classes=[requires("partners:write")])
    async def partner_create(self, info: Info, input: PartnerCreateInput) -> PartnerCreatePayload:
        async def change(work: UnitOfWork) -> PartnerCreatePayload:
            contact = input.contact or PartnerContactInput()
            draft = service.PartnerDraft(
                code=input.code,
                name=input.name,
                type=input.type,
                status=input.status,
                tier=input.tier,
                parent_id=_pk(input.parent_id, "Partner", "parentId") if input.parent_id else None,
                territories=input.territories,
                contact_name=contact.name,
                contact_phone=contact.phone,
                contact_email=contact.email,
                contract_starts_on=input.contract_starts_on,
                contract_ends_on=input.contract_ends_on,
            )
            row = await service.create_partner(work.session, work.principal, draft)
            work.touched("Partner", row.id)
            return PartnerCreatePayload(partner=Partner.from_row(row))

        return await run_mutation(info, PartnerCreatePayload, change)

    @strawberry.mutation(permission_classes=[requires("partners:write")])
    async def partner_update(self, info: Info, input: PartnerUpdateInput) -> PartnerUpdatePayload:
        async def change(work: UnitOfWork) -> PartnerUpdatePayload:
            changes = service.PartnerChanges()
            partner_pk = _pk(input.id, "Partner", "id")
            for name in ("name", "status", "tier", "territories"):
                value = getattr(input, name)
                if not _given(value):
                    continue
                if value is None and name in _REQUIRED_ON_UPDATE:
                    raise DomainError.one(
                        service.PartnerErrorCode.REQUIRED,
                        f"{name} cannot be null.",
                        name,
                    )
                setattr(changes, name, value)
            if _given(input.parent_id):
                changes.parent_id = (
                    _pk(input.parent_id, "Partner", "parentId") if input.parent_id else None
                )
            if _given(input.contact):
                contact = input.contact or PartnerContactInput()
                changes.contact_name = contact.name
                changes.contact_phone = contact.phone
                changes.contact_email = contact.email
            if _given(input.contract_starts_on):
                changes.contract_starts_on = input.contract_starts_on
            if _given(input.contract_ends_on):
                changes.contract_ends_on = input.contract_ends_on
            row = await service.update_partner(work.session, work.principal, partner_pk, changes)
            work.touched("Partner", row.id)
            return PartnerUpdatePayload(partner=Partner.from_row(row))

        return await run_mutation(info, PartnerUpdatePayload, change)

    @strawberry.mutation(permission_classes=[requires("partners:write")])
    async def store_create(self, info: Info, input: StoreCreateInput) -> StoreCreatePayload:
        async def change(work: UnitOfWork) -> StoreCreatePayload:
            draft = service.StoreDraft(
                code=input.code,
                name=input.name,
                region_code=input.region_code,
                address=input.address,
                partner_id=_pk(input.partner_id, "Partner", "partnerId")
                if input.partner_id
                else None,
                kind=input.kind,
                offers_pickup=input.offers_pickup,
                status=input.status,
            )
            row = await service.create_store(work.session, work.principal, draft)
            work.touched("Store", row.id)
            return StoreCreatePayload(store=Store.from_row(row))

        return await run_mutation(info, StoreCreatePayload, change)


__all__ = ["PartnerMutation", "PartnerQuery"]


schema_parts = SchemaParts(
    query=PartnerQuery,
    mutation=PartnerMutation,
    types=[Partner, Store],
    nodes={"Partner": _load_partners, "Store": _load_stores},
)
