"""The GraphQL types of customers, members and levels (``Customer``, ``MemberLevel``, ...), and
how ``node(id:)`` loads them.

``Customer.points``, ``Customer.pointsLedger`` and ``Customer.coupons`` are resolved by the
loyalty and coupons domains (their batched functions), so a page of customers costs a fixed
number of statements whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

import strawberry
from strawberry.scalars import JSON

from api.analytics.graphql.customer_metrics import CustomerMetrics, customer_metrics
from api.audit.service import AuditEntry
from api.auth.pii import PII_SCOPE, mask_email, mask_phone
from api.coupons.graphql.types import Coupon, customer_coupons
from api.customers import customer_filter, duplicates, errors, loaders, models, profile
from api.graphql.context import Context, Info
from api.graphql.ids import encode_id
from api.graphql.relay import Children, Connection, Node, connection
from api.loyalty.schema import PointsBalance, PointsEntry, customer_points, customer_points_ledger
from api.orders.schema import Order, customer_orders
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

# strawberry.enum registers the GraphQL enum on the Python enum class itself (and returns
# it): fields are annotated with the class, which is a type to mypy too.
IdentityKind = models.IdentityKind
strawberry.enum(
    IdentityKind,
    description="A way to recognise a person. WECHAT_OPENID values are '<appid>:<openid>', "
    "MARKETPLACE_BUYER values '<marketplace>:<buyer id>' (tmall, jd, douyin, pdd, other).",
)
ConsentPurpose = models.ConsentPurpose
strawberry.enum(ConsentPurpose, description="What a consent covers (PIPL).")
CustomerStatus = models.CustomerStatus
strawberry.enum(CustomerStatus, description="MERGED customers redirect to the survivor.")
LevelMetric = models.LevelMetric
strawberry.enum(LevelMetric, description="What a level counts in its rolling window.")
Gender = profile.Gender
strawberry.enum(Gender)
CustomerErrorCode = errors.CustomerErrorCode
strawberry.enum(CustomerErrorCode)
DuplicateReason = duplicates.DuplicateReason
strawberry.enum(DuplicateReason)
CustomerSortKeys = customer_filter.CustomerSortKey
strawberry.enum(CustomerSortKeys, name="CustomerSortKeys")

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
    kind: IdentityKind
    value: str = strawberry.field(
        description="Phone numbers and emails are masked without the pii:read scope."
    )
    unionid_hint: str | None = strawberry.field(
        description="For an openid: the WeChat unionid it was seen with."
    )
    created_at: datetime


@strawberry.type(description="The latest decision about one purpose, when and where it was made.")
class CustomerConsent:
    purpose: ConsentPurpose
    granted: bool
    source: str
    decided_at: datetime


@strawberry.type(description="A member level (会员等级) and the rule that qualifies for it.")
class MemberLevel(Node):
    code: str
    name: str
    rank: int = strawberry.field(description="Higher is better; 0 is the entry level.")
    metric: LevelMetric
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
    gender: Gender | None
    birthday: date | None
    status: CustomerStatus
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
            gender=profile.Gender(row.gender) if row.gender else None,
            birthday=row.birthday,
            status=row.status,
            first_channel=row.first_channel,
            attributes=JSON(row.attributes or {}),
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

    @connection(Connection[MemberLevelChange], description="Every level change, newest first.")
    async def level_history(self) -> Children[MemberLevelChange]:
        return Children(
            loaders.level_history_pages,
            loaders.level_history_counts,
            self.pk,
            MemberLevelChange.from_row,
        )

    @strawberry.field(description="Points (积分): balance, pending and what expires soon.")
    async def points(self, info: Info) -> PointsBalance:
        return await customer_points(info, self.pk)

    @connection(Connection[PointsEntry], description="The points ledger, newest first.")
    async def points_ledger(self) -> Children[PointsEntry]:
        return customer_points_ledger(self.pk)

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

    @connection(Connection[Order], description="The customer's orders, newest first.")
    async def orders(self, info: Info) -> Children[Order]:
        return customer_orders(info, self.pk)


async def load_customers(ctx: Context, pks: Sequence[int]) -> list[Customer | None]:
    rows = await ctx.loader(loaders.customers_by_pk).load_many(pks)
    return [Customer.from_row(r) if r else None for r in rows]


async def load_levels(ctx: Context, pks: Sequence[int]) -> list[MemberLevel | None]:
    rows = await ctx.loader(loaders.levels_by_pk).load_many(pks)
    return [MemberLevel.from_row(r) if r else None for r in rows]


@strawberry.type(description="A customer that is probably the same person, and why.")
class CustomerDuplicate:
    customer: Customer
    reasons: list[DuplicateReason]
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


@strawberry.input
class IdentityInput:
    kind: IdentityKind
    value: str
