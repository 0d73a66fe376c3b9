"""GraphQL surface of customers, members and levels: thin wrappers over the services.

``Customer.points``, ``Customer.pointsLedger`` and ``Customer.coupons`` are resolved by the
loyalty and coupons domains (their batched functions), so a page of customers costs a fixed
number of statements whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import strawberry
from strawberry import UNSET as GQL_UNSET
from strawberry.scalars import JSON

from api.analytics.schema import CustomerMetrics, customer_metrics
from api.audit.service import AuditEntry
from api.auth.pii import PII_SCOPE, mask_email, mask_phone
from api.coupons.schema import Coupon, customer_coupons
from api.customers import levels, loaders, merge, models, service
from api.errors import DomainError, InputError
from api.graphql.context import Context, Info
from api.graphql.errors import UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Children, Connection, Node, connection, page_request, to_connection
from api.loyalty.schema import (
    PointsBalance,
    PointsEntry,
    customer_points,
    customer_points_ledger,
    root_connection,
)
from api.orders.schema import Order, customer_orders
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

IdentityKind = strawberry.enum(
    models.IdentityKind,
    description="A way to recognise a person. WECHAT_OPENID values are '<appid>:<openid>', "
    "MARKETPLACE_BUYER values '<marketplace>:<buyer id>' (tmall, jd, douyin, pdd, other).",
)
ConsentPurpose = strawberry.enum(models.ConsentPurpose, description="What a consent covers (PIPL).")
CustomerStatus = strawberry.enum(
    models.CustomerStatus, description="MERGED customers redirect to the survivor."
)
LevelMetric = strawberry.enum(
    models.LevelMetric, description="What a level counts in its rolling window."
)
Gender = strawberry.enum(service.Gender)
CustomerErrorCode = strawberry.enum(service.CustomerErrorCode)
DuplicateReason = strawberry.enum(merge.DuplicateReason)
CustomerSortKeys = strawberry.enum(service.CustomerSortKey, name="CustomerSortKeys")

_PII_KINDS = frozenset({models.IdentityKind.PHONE, models.IdentityKind.EMAIL})


def _audit_pii(info: Info, pk: int, field: str) -> None:
    info.context.audit(AuditEntry("pii.read", "Customer", str(pk), {"fields": [field]}))


def _masked(kind: models.IdentityKind, value: str) -> str:
    if kind is models.IdentityKind.PHONE:
        return mask_phone(value) or value
    if kind is models.IdentityKind.EMAIL:
        return mask_email(value) or value
    return value


# --- types ----------------------------------------------------------------------------------


@strawberry.type(description="One identity of a customer; unique per kind across customers.")
class CustomerIdentity:
    kind: IdentityKind  # type: ignore[valid-type]
    value: str = strawberry.field(
        description="Phone numbers and emails are masked without the pii:read scope."
    )
    unionid_hint: str | None = strawberry.field(
        description="For an openid: the WeChat unionid it was seen with."
    )
    created_at: datetime


@strawberry.type(description="The latest decision about one purpose, when and where it was made.")
class CustomerConsent:
    purpose: ConsentPurpose  # type: ignore[valid-type]
    granted: bool
    source: str
    decided_at: datetime


@strawberry.type(description="A member level (会员等级) and the rule that qualifies for it.")
class MemberLevel(Node):
    code: str
    name: str
    rank: int = strawberry.field(description="Higher is better; 0 is the entry level.")
    metric: LevelMetric  # type: ignore[valid-type]
    threshold: Decimal = strawberry.field(
        description="Yuan of qualifying spend (SPEND) or points earned (POINTS) in the window."
    )
    window_days: int
    grace_days: int
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.MemberLevel) -> MemberLevel:
        return cls(
            id=strawberry.ID(encode_id("MemberLevel", row.id)),
            pk=row.id,
            code=row.code,
            name=row.name,
            rank=row.rank,
            metric=row.metric,
            threshold=row.threshold,
            window_days=row.window_days,
            grace_days=row.grace_days,
            created_at=row.created_at,
        )


async def _level(info: Info, pk: int | None) -> MemberLevel | None:
    if pk is None:
        return None
    row = await info.context.loader(loaders.levels_by_pk).load(pk)
    return MemberLevel.from_row(row) if row else None


@strawberry.type(description="One change of a member's level, with why.")
class MemberLevelChange:
    reason: str = strawberry.field(
        description="join, upgrade, downgrade, manual (a floor set by staff) or merge."
    )
    actor: str | None
    created_at: datetime
    from_pk: strawberry.Private[int | None]
    to_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.MemberLevelChange) -> MemberLevelChange:
        return cls(
            reason=row.reason,
            actor=row.actor,
            created_at=row.created_at,
            from_pk=row.from_level_id,
            to_pk=row.to_level_id,
        )

    @strawberry.field
    async def from_level(self, info: Info) -> MemberLevel | None:
        return await _level(info, self.from_pk)

    @strawberry.field
    async def to_level(self, info: Info) -> MemberLevel | None:
        return await _level(info, self.to_pk)


@strawberry.type(description="Membership (会员): who recruited the member, and their level.")
class Membership:
    since: datetime
    recruited_guide_id: strawberry.ID | None = strawberry.field(
        description="The guide (导购) who recruited the member: a staff user's ID."
    )
    period_ends_at: datetime | None = strawberry.field(
        description="When the level comes up for review (null: the lowest level, never)."
    )
    grace_ends_at: datetime | None = strawberry.field(
        description="Set while the member no longer qualifies: the level drops then unless "
        "they qualify again."
    )
    level_pk: strawberry.Private[int | None]
    manual_level_pk: strawberry.Private[int | None]
    store_pk: strawberry.Private[int | None]
    partner_pk: strawberry.Private[int | None]

    @strawberry.field
    async def level(self, info: Info) -> MemberLevel | None:
        return await _level(info, self.level_pk)

    @strawberry.field(description="A level set by staff: the member never drops below it.")
    async def manual_level(self, info: Info) -> MemberLevel | None:
        return await _level(info, self.manual_level_pk)

    @strawberry.field(description="The recruiting store (归属门店), kept for life.")
    async def recruited_store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(description="The recruiting store's partner.")
    async def recruited_partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None


@strawberry.type(description="One person across every channel (客户).")
class Customer(Node):
    name: str | None
    gender: Gender | None  # type: ignore[valid-type]
    birthday: date | None
    status: CustomerStatus  # type: ignore[valid-type]
    first_channel: str | None
    attributes: JSON
    membership: Membership | None = strawberry.field(
        description="Null unless the customer joined the private domain."
    )
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[int]
    raw_contact_phone: strawberry.Private[str | None]
    raw_contact_email: strawberry.Private[str | None]

    @classmethod
    def from_row(cls, row: models.Customer) -> Customer:
        membership = None
        if row.member_since is not None:
            membership = Membership(
                since=row.member_since,
                recruited_guide_id=strawberry.ID(encode_id("StaffUser", row.recruited_guide_id))
                if row.recruited_guide_id
                else None,
                period_ends_at=row.level_period_ends_at,
                grace_ends_at=row.level_grace_ends_at,
                level_pk=row.level_id,
                manual_level_pk=row.manual_level_id,
                store_pk=row.recruited_store_id,
                partner_pk=row.recruited_partner_id,
            )
        return cls(
            id=strawberry.ID(encode_id("Customer", row.id)),
            pk=row.id,
            name=row.name,
            gender=service.Gender(row.gender) if row.gender else None,
            birthday=row.birthday,
            status=row.status,
            first_channel=row.first_channel,
            attributes=row.attributes or {},
            membership=membership,
            created_at=row.created_at,
            updated_at=row.updated_at,
            raw_contact_phone=row.contact_phone,
            raw_contact_email=row.contact_email,
        )

    @strawberry.field(
        description="Phone and email values are masked without pii:read; unmasked reads are "
        "audited."
    )
    async def identities(self, info: Info) -> list[CustomerIdentity]:
        rows = await info.context.loader(loaders.identities_by_customer).load(self.pk)
        unmasked = info.context.principal.has_scope(PII_SCOPE)
        if unmasked and any(r.kind in _PII_KINDS for r in rows):
            _audit_pii(info, self.pk, "identities")
        return [
            CustomerIdentity(
                kind=r.kind,
                value=r.value if unmasked else _masked(r.kind, r.value),
                unionid_hint=r.unionid_hint,
                created_at=r.created_at,
            )
            for r in rows
        ]

    @strawberry.field(
        description="A phone reported by a channel, not a login identity. Masked "
        "without pii:read; unmasked reads are audited."
    )
    def contact_phone(self, info: Info) -> str | None:
        if not info.context.principal.has_scope(PII_SCOPE):
            return mask_phone(self.raw_contact_phone)
        if self.raw_contact_phone:
            _audit_pii(info, self.pk, "contactPhone")
        return self.raw_contact_phone

    @strawberry.field(description="Masked without pii:read; unmasked reads are audited.")
    def contact_email(self, info: Info) -> str | None:
        if not info.context.principal.has_scope(PII_SCOPE):
            return mask_email(self.raw_contact_email)
        if self.raw_contact_email:
            _audit_pii(info, self.pk, "contactEmail")
        return self.raw_contact_email

    @strawberry.field
    async def consents(self, info: Info) -> list[CustomerConsent]:
        rows = await info.context.loader(loaders.consents_by_customer).load(self.pk)
        return [
            CustomerConsent(
                purpose=r.purpose, granted=r.granted, source=r.source, decided_at=r.decided_at
            )
            for r in rows
        ]

    @strawberry.field
    async def tags(self, info: Info) -> list[str]:
        return await info.context.loader(loaders.tags_by_customer).load(self.pk)

    @strawberry.field(description="The member's level (null for non-members).")
    async def level(self, info: Info) -> MemberLevel | None:
        return await _level(info, self.membership.level_pk if self.membership else None)

    @strawberry.field(description="Every level change, newest first.")
    async def level_history(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[MemberLevelChange]:
        request = page_request(info, first, after, last, before)
        page = await info.context.loader(loaders.level_history_pages, request).load(self.pk)
        counts = info.context.loader(loaders.level_history_counts)
        return to_connection(page, MemberLevelChange.from_row, lambda: counts.load(self.pk))

    @strawberry.field(description="Points (积分): balance, pending and what expires soon.")
    async def points(self, info: Info) -> PointsBalance:
        return await customer_points(info, self.pk)

    @strawberry.field(description="The points ledger, newest first.")
    async def points_ledger(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[PointsEntry]:
        return await customer_points_ledger(info, self.pk, first, after, last, before)

    @connection(Connection[Coupon], description="The customer's coupons, newest first.")
    async def coupons(self, info: Info) -> Children[Coupon]:
        return customer_coupons(info, self.pk)

    @strawberry.field(
        description="Orders, spend, margin and RFM scores (null before a first counted order). "
        "Needs analytics:read: null without it, and for members (even about themselves); "
        "grossMargin is HQ only."
    )
    async def metrics(self, info: Info) -> CustomerMetrics | None:
        return await customer_metrics(info, self.pk)

    @strawberry.field(description="The customer's orders, newest first.")
    async def orders(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Order]:
        return await customer_orders(info, self.pk, first, after, last, before)


async def _load_customers(ctx: Context, pks: Sequence[int]) -> list[Customer | None]:
    rows = await ctx.loader(loaders.customers_by_pk).load_many(pks)
    return [Customer.from_row(r) if r else None for r in rows]


async def _load_levels(ctx: Context, pks: Sequence[int]) -> list[MemberLevel | None]:
    rows = await ctx.loader(loaders.levels_by_pk).load_many(pks)
    return [MemberLevel.from_row(r) if r else None for r in rows]


@strawberry.type(description="A customer that is probably the same person, and why.")
class CustomerDuplicate:
    customer: Customer
    reasons: list[DuplicateReason]  # type: ignore[valid-type]
    score: float = strawberry.field(
        description="0-1: how likely the same person (signals combine as independent evidence)."
    )


@strawberry.type(description="Something a merge moves onto the target.")
class MergeMove:
    kind: str
    count: int
    description: str


@strawberry.type(description="A difference a merge resolves by a rule, shown for review.")
class MergeConflict:
    field: str
    message: str


# --- queries --------------------------------------------------------------------------------


@strawberry.input
class IdentityInput:
    kind: IdentityKind  # type: ignore[valid-type]
    value: str


@strawberry.input(description="A time range: from (inclusive) to (exclusive).")
class DateTimeRangeInput:
    start: datetime | None = strawberry.field(default=None, name="from")
    end: datetime | None = strawberry.field(default=None, name="to")

    def to_service(self) -> service.DateTimeRange:
        return service.DateTimeRange(self.start, self.end)


@strawberry.input
class ConsentFilterInput:
    purpose: ConsentPurpose  # type: ignore[valid-type]
    granted: bool = True


@strawberry.input(
    description=f"Every list takes at most {service.MAX_FILTER_VALUES} values; more is a "
    "BAD_USER_INPUT error."
)
class CustomerFilter:
    identity: IdentityInput | None = strawberry.field(
        default=None, description="The customer with this identity (the value is normalized)."
    )
    tags: list[str] | None = strawberry.field(default=None, description="Has every one.")
    any_tags: list[str] | None = strawberry.field(default=None, description="Has at least one.")
    level_ids: list[strawberry.ID] | None = None
    level_codes: list[str] | None = None
    recruited_store_ids: list[strawberry.ID] | None = None
    recruited_guide_ids: list[strawberry.ID] | None = None
    recruited_partner_ids: list[strawberry.ID] | None = None
    is_member: bool | None = None
    created_at: DateTimeRangeInput | None = None
    member_since: DateTimeRangeInput | None = None
    search: str | None = strawberry.field(
        default=None,
        description=f"Part of the name (at most {service.MAX_SEARCH_CHARS} characters).",
    )
    consent: ConsentFilterInput | None = strawberry.field(
        default=None, description="Customers who granted (or did not grant) a purpose."
    )

    def to_service(self) -> service.CustomerFilter:
        """The service's filter; InputError (a top-level BAD_USER_INPUT) for a list over
        the cap or an over-long search, checked before a single id is decoded."""
        sizes = {
            "tags": self.tags,
            "anyTags": self.any_tags,
            "levelIds": self.level_ids,
            "levelCodes": self.level_codes,
            "recruitedStoreIds": self.recruited_store_ids,
            "recruitedGuideIds": self.recruited_guide_ids,
            "recruitedPartnerIds": self.recruited_partner_ids,
        }
        oversized = service.filter_size_problems(
            {name: len(values or ()) for name, values in sizes.items()}, self.search
        )
        if oversized:
            raise InputError(" ".join(message for _, message in oversized))
        return service.CustomerFilter(
            identity=(self.identity.kind, self.identity.value) if self.identity else None,
            tags=self.tags or (),
            any_tags=self.any_tags or (),
            level_ids=[decode_id_of(i, "MemberLevel") for i in self.level_ids or ()],
            level_codes=self.level_codes or (),
            recruited_store_ids=[decode_id_of(i, "Store") for i in self.recruited_store_ids or ()],
            recruited_guide_ids=[
                decode_id_of(i, "StaffUser") for i in self.recruited_guide_ids or ()
            ],
            recruited_partner_ids=[
                decode_id_of(i, "Partner") for i in self.recruited_partner_ids or ()
            ],
            is_member=self.is_member,
            created=self.created_at.to_service() if self.created_at else None,
            member_since=self.member_since.to_service() if self.member_since else None,
            search=self.search,
            consent=(self.consent.purpose, self.consent.granted) if self.consent else None,
        )


@strawberry.type
class CustomerQuery:
    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="Customers you may see: HQ all; a partner those it recruited; a store its "
        "own; a member themself.",
    )
    async def customers(
        self,
        info: Info,
        filter: CustomerFilter | None = None,
        sort_key: CustomerSortKeys = service.CustomerSortKey.ID,  # type: ignore[valid-type]
        reverse: bool = False,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Customer]:
        ctx = info.context
        request = page_request(info, first, after, last, before)
        try:
            stmt = service.customers_query(ctx.principal, filter.to_service() if filter else None)
        except DomainError as error:
            raise InputError(str(error)) from None
        return await root_connection(
            ctx,
            stmt,
            service.CUSTOMER_KEYSETS[sort_key],
            request,
            Customer.from_row,
            reverse=reverse,
        )

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="A customer by ID; a merged customer's ID returns the survivor.",
    )
    async def customer(self, info: Info, id: strawberry.ID) -> Customer | None:
        return (await _load_customers(info.context, [decode_id_of(id, "Customer")]))[0]

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="Customers that are probably the same person as this one, best first "
        "(within what you may see). Merge them with customersMerge.",
    )
    async def customer_duplicates(
        self, info: Info, customer_id: strawberry.ID, first: int = 10
    ) -> list[CustomerDuplicate]:
        ctx = info.context
        pk = decode_id_of(customer_id, "Customer")
        if not 1 <= first <= merge.MAX_CANDIDATES:
            raise InputError(f"`first` must be between 1 and {merge.MAX_CANDIDATES}.")
        try:
            async with ctx.db.read() as session:
                found = await merge.find_duplicates(session, ctx.principal, pk, first)
        except DomainError:
            return []  # not found, or not yours: the same empty answer
        return [
            CustomerDuplicate(
                customer=Customer.from_row(c.customer), reasons=c.reasons, score=c.score
            )
            for c in found
        ]

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="The member levels, lowest rank first.",
    )
    async def member_levels(self, info: Info) -> list[MemberLevel]:
        async with info.context.db.read() as session:
            rows = await levels.all_levels(session)
        return [MemberLevel.from_row(r) for r in rows]


# --- mutations ------------------------------------------------------------------------------


@strawberry.type
class CustomerError(UserError):
    code: CustomerErrorCode  # type: ignore[valid-type]


@strawberry.input
class ConsentInput:
    purpose: ConsentPurpose  # type: ignore[valid-type]
    granted: bool
    source: str = strawberry.field(description="Where it was given: mini_program, store, ...")
    decided_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; an older decision never replaces a newer."
    )


@strawberry.input
class CustomerUpsertInput:
    identities: list[IdentityInput] = strawberry.field(
        description="Finds the customer by any of them; the ones not on file are attached."
    )
    name: str | None = None
    gender: Gender | None = None  # type: ignore[valid-type]
    birthday: date | None = None
    contact_phone: str | None = None
    contact_email: str | None = None
    first_channel: str | None = strawberry.field(
        default=None, description="Only set on a customer without one (the first contact)."
    )
    consents: list[ConsentInput] = strawberry.field(default_factory=list)
    tags: list[str] = strawberry.field(default_factory=list, description="Tags to add.")
    attributes: JSON | None = strawberry.field(
        default=None, description="Merged shallowly: a given key replaces that key."
    )
    unionid_hint: str | None = strawberry.field(
        default=None, description="The WeChat unionid a given openid was seen with."
    )
    fill_only: bool = strawberry.field(
        default=False, description="Only fill blank profile fields (channel imports)."
    )


@strawberry.type
class CustomerUpsertPayload:
    customer: Customer | None = None
    created: bool = False
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change; null clears an optional field.")
class CustomerUpdateInput:
    id: strawberry.ID
    name: str | None = GQL_UNSET
    gender: Gender | None = GQL_UNSET  # type: ignore[valid-type]
    birthday: date | None = GQL_UNSET
    contact_phone: str | None = GQL_UNSET
    contact_email: str | None = GQL_UNSET
    tags_add: list[str] = strawberry.field(default_factory=list)
    tags_remove: list[str] = strawberry.field(default_factory=list)
    attributes_set: JSON | None = strawberry.field(
        default=None, description="Keys to set (merged shallowly)."
    )
    attributes_unset: list[str] = strawberry.field(default_factory=list)
    consents: list[ConsentInput] = strawberry.field(default_factory=list)
    identities_add: list[IdentityInput] = strawberry.field(default_factory=list)
    identities_remove: list[IdentityInput] = strawberry.field(default_factory=list)


@strawberry.type
class CustomerUpdatePayload:
    customer: Customer | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input
class CustomersMergeInput:
    target_id: strawberry.ID = strawberry.field(description="The customer that survives.")
    source_ids: list[strawberry.ID] = strawberry.field(
        description="Up to 10 customers merged into the target; their ids then redirect."
    )
    dry_run: bool = strawberry.field(
        default=False, description="Only preview: what would move, and the conflicts."
    )


@strawberry.type
class CustomersMergePayload:
    customer: Customer | None = strawberry.field(
        default=None, description="The target (after the merge, unless a dry run)."
    )
    dry_run: bool = False
    moves: list[MergeMove] = strawberry.field(default_factory=list)
    conflicts: list[MergeConflict] = strawberry.field(default_factory=list)
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input(
    description="Enrol a member: an existing customer by customerId, or by identities (a "
    "clerk enrolling a walk-in by phone). Store staff recruit for their store (and as its "
    "guide); HQ and partner callers name the store."
)
class MemberJoinInput:
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="A customer you can see."
    )
    identities: list[IdentityInput] | None = strawberry.field(
        default=None,
        description="HQ: find or create the customer by any of them, attaching the new ones. "
        "Anyone else: exactly one PHONE (WeChat and other identities come from the member's "
        "own login).",
    )
    name: str | None = None
    consents: list[ConsentInput] = strawberry.field(default_factory=list)
    store_id: strawberry.ID | None = None
    guide_id: strawberry.ID | None = strawberry.field(
        default=None, description="A staff user of the store who recruited the member."
    )


@strawberry.type
class MemberJoinPayload:
    customer: Customer | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input
class MemberLevelCreateInput:
    code: str
    name: str
    rank: int = strawberry.field(description="0 is the entry level; higher is better.")
    metric: LevelMetric  # type: ignore[valid-type]
    threshold: Decimal
    window_days: int = 365
    grace_days: int = 30


@strawberry.type
class MemberLevelCreatePayload:
    member_level: MemberLevel | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change.")
class MemberLevelUpdateInput:
    id: strawberry.ID
    name: str | None = None
    threshold: Decimal | None = None
    window_days: int | None = None
    grace_days: int | None = None


@strawberry.type
class MemberLevelUpdatePayload:
    member_level: MemberLevel | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input
class MemberLevelSetInput:
    customer_id: strawberry.ID
    level_id: strawberry.ID | None = strawberry.field(
        description="A manual level (a floor the member never drops below); null clears it."
    )


@strawberry.type
class MemberLevelSetPayload:
    customer: Customer | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=service.CustomerErrorCode.INVALID)


def _identities(given: Sequence[IdentityInput]) -> list[tuple[models.IdentityKind, str]]:
    return [(i.kind, i.value) for i in given]


def _consents(given: Sequence[ConsentInput]) -> list[service.ConsentDecision]:
    return [service.ConsentDecision(c.purpose, c.granted, c.source, c.decided_at) for c in given]


def _attributes(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DomainError.one(
            service.CustomerErrorCode.INVALID, "Attributes are a JSON object.", path
        )
    return value


def _given(value: Any) -> bool:
    return value is not GQL_UNSET


@strawberry.type
class CustomerMutation:
    @strawberry.mutation(
        permission_classes=[requires("customers:write")],
        description="Find a customer by any identity or create one; attach new identities.",
    )
    async def customer_upsert(
        self, info: Info, input: CustomerUpsertInput
    ) -> CustomerUpsertPayload:
        async def change(work: UnitOfWork) -> CustomerUpsertPayload:
            draft = service.CustomerDraft(
                identities=_identities(input.identities),
                name=input.name,
                gender=input.gender,
                birthday=input.birthday,
                contact_phone=input.contact_phone,
                contact_email=input.contact_email,
                first_channel=input.first_channel,
                consents=_consents(input.consents),
                tags=input.tags,
                attributes=_attributes(input.attributes, "attributes"),
                unionid_hint=input.unionid_hint,
                fill_only=input.fill_only,
            )
            result = await service.upsert_for(work.session, work.principal, draft)
            work.touched("Customer", result.customer.id)
            return CustomerUpsertPayload(
                customer=Customer.from_row(result.customer), created=result.created
            )

        return await run_mutation(info, CustomerUpsertPayload, change)

    @strawberry.mutation(permission_classes=[requires("customers:write")])
    async def customer_update(
        self, info: Info, input: CustomerUpdateInput
    ) -> CustomerUpdatePayload:
        async def change(work: UnitOfWork) -> CustomerUpdatePayload:
            changes = service.CustomerChanges(
                tags_add=input.tags_add,
                tags_remove=input.tags_remove,
                attributes_set=_attributes(input.attributes_set, "attributesSet"),
                attributes_unset=input.attributes_unset,
                consents=_consents(input.consents),
                identities_add=_identities(input.identities_add),
                identities_remove=_identities(input.identities_remove),
            )
            for name in ("name", "gender", "birthday", "contact_phone", "contact_email"):
                value = getattr(input, name)
                if _given(value):
                    setattr(changes, name, value)
            customer_pk = _pk(input.id, "Customer", "id")
            row = await service.update_customer(work.session, work.principal, customer_pk, changes)
            work.touched("Customer", row.id)
            return CustomerUpdatePayload(customer=Customer.from_row(row))

        return await run_mutation(info, CustomerUpdatePayload, change)

    @strawberry.mutation(
        permission_classes=[requires("customers:write")],
        description="Merge duplicates into one customer, in one transaction; dryRun previews.",
    )
    async def customers_merge(
        self, info: Info, input: CustomersMergeInput
    ) -> CustomersMergePayload:
        async def change(work: UnitOfWork) -> CustomersMergePayload:
            if len(input.source_ids) > merge.MAX_SOURCES:
                # Refused before decoding: the list is the caller's, its length is not.
                raise DomainError.one(
                    service.CustomerErrorCode.MERGE_INVALID,
                    f"At most {merge.MAX_SOURCES} sources per merge.",
                    "sourceIds",
                )
            target = _pk(input.target_id, "Customer", "targetId")
            sources = [
                _pk(s, "Customer", "sourceIds", str(i)) for i, s in enumerate(input.source_ids)
            ]
            outcome = await merge.merge_customers(
                work.session,
                work.principal,
                target,
                sources,
                dry_run=input.dry_run,
                wiring=work.context.wiring.customers,
            )
            if input.dry_run:
                # The preview read a locked, stable picture; roll back and let go.
                work.preview()
            else:
                work.touched("Customer", outcome.target.id)
                work.audit(
                    AuditEntry(
                        "customers.merged",
                        "Customer",
                        str(outcome.target.id),
                        {
                            "sources": outcome.source_ids,
                            "moves": [[m.kind, m.count, m.description] for m in outcome.moves],
                            "conflicts": [[c.field, c.message] for c in outcome.conflicts],
                        },
                    )
                )
            return CustomersMergePayload(
                customer=Customer.from_row(outcome.target),
                dry_run=input.dry_run,
                moves=[
                    MergeMove(kind=m.kind, count=m.count, description=m.description)
                    for m in outcome.moves
                ],
                conflicts=[
                    MergeConflict(field=c.field, message=c.message) for c in outcome.conflicts
                ],
            )

        answer = await run_mutation(info, CustomersMergePayload, change)
        answer.dry_run = input.dry_run  # a refusal says which it refused, too
        return answer

    @strawberry.mutation(
        permission_classes=[requires("members:write")],
        description="Enrol a member, recruited by a store (and guide) for life.\n\n"
        "Partners, stores and partner integrations enrol a walk-in by exactly one phone "
        "number. A new number creates the customer with it. A number on file of a customer "
        "who is not a member yet enrols that customer: they become this store's member, "
        "and the store sees them from then on. No identity is ever added to a customer on "
        "file this way. A number of someone who is a member already answers ALREADY_MEMBER, "
        "with the same message whichever store recruited them: that a phone is a member's "
        "is a fact of the brand, and the one thing a store learns about a phone it enrols. "
        "HQ may enrol by several identities (attaching the new ones).\n\n"
        "Next step (not built yet): a code-verified enrolment, where the member confirms "
        "with a code texted to the phone.",
    )
    async def member_join(self, info: Info, input: MemberJoinInput) -> MemberJoinPayload:
        async def change(work: UnitOfWork) -> MemberJoinPayload:
            draft = None
            if input.identities is not None:
                draft = service.CustomerDraft(
                    identities=_identities(input.identities),
                    name=input.name,
                    consents=_consents(input.consents),
                    first_channel="store" if work.principal.store_id else None,
                )
            request = levels.JoinRequest(
                customer_id=_pk(input.customer_id, "Customer", "customerId")
                if input.customer_id
                else None,
                draft=draft,
                store_id=_pk(input.store_id, "Store", "storeId") if input.store_id else None,
                guide_id=_pk(input.guide_id, "StaffUser", "guideId") if input.guide_id else None,
            )
            row = await levels.join(
                work.session, work.principal, request, wiring=work.context.wiring.customers
            )
            work.touched("Customer", row.id)
            return MemberJoinPayload(customer=Customer.from_row(row))

        return await run_mutation(info, MemberJoinPayload, change)

    @strawberry.mutation(permission_classes=[requires("loyalty:write")])
    async def member_level_create(
        self, info: Info, input: MemberLevelCreateInput
    ) -> MemberLevelCreatePayload:
        async def change(work: UnitOfWork) -> MemberLevelCreatePayload:
            draft = levels.LevelDraft(
                code=input.code,
                name=input.name,
                rank=input.rank,
                metric=input.metric,
                threshold=input.threshold,
                window_days=input.window_days,
                grace_days=input.grace_days,
            )
            row = await levels.create_level(work.session, work.principal, draft)
            work.touched("MemberLevel", row.id)
            return MemberLevelCreatePayload(member_level=MemberLevel.from_row(row))

        return await run_mutation(info, MemberLevelCreatePayload, change)

    @strawberry.mutation(permission_classes=[requires("loyalty:write")])
    async def member_level_update(
        self, info: Info, input: MemberLevelUpdateInput
    ) -> MemberLevelUpdatePayload:
        async def change(work: UnitOfWork) -> MemberLevelUpdatePayload:
            changes = levels.LevelChanges(
                name=input.name,
                threshold=input.threshold,
                window_days=input.window_days,
                grace_days=input.grace_days,
            )
            level_pk = _pk(input.id, "MemberLevel", "id")
            row = await levels.update_level(work.session, work.principal, level_pk, changes)
            work.touched("MemberLevel", row.id)
            return MemberLevelUpdatePayload(member_level=MemberLevel.from_row(row))

        return await run_mutation(info, MemberLevelUpdatePayload, change)

    @strawberry.mutation(
        permission_classes=[requires("members:write")],
        description="Set a manual level: a floor the member never drops below (null clears).",
    )
    async def member_level_set(
        self, info: Info, input: MemberLevelSetInput
    ) -> MemberLevelSetPayload:
        async def change(work: UnitOfWork) -> MemberLevelSetPayload:
            customer_pk = _pk(input.customer_id, "Customer", "customerId")
            level_pk = _pk(input.level_id, "MemberLevel", "levelId") if input.level_id else None
            row = await levels.set_manual_level(work.session, work.principal, customer_pk, level_pk)
            work.touched("Customer", row.id)
            return MemberLevelSetPayload(customer=Customer.from_row(row))

        return await run_mutation(info, MemberLevelSetPayload, change)


__all__ = ["CustomerMutation", "CustomerQuery"]


schema_parts = SchemaParts(
    query=CustomerQuery,
    mutation=CustomerMutation,
    types=[Customer, MemberLevel],
    nodes={"Customer": _load_customers, "MemberLevel": _load_levels},
)
