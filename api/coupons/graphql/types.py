"""The coupons domain's GraphQL types (优惠券): templates, coupons, their enums and stats.

``customer_coupons`` is what the customers domain wires into ``Customer.coupons``: one
ROW_NUMBER statement pages the coupons of every customer in a list. This module must not
import ``api.customers.schema`` at module level (that one imports this); the back-reference
``Coupon.customer`` is lazy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.permission import BasePermission

from api.coupons import errors, loaders, models
from api.coupons.stats import TemplateStats
from api.graphql.context import Context, Info
from api.graphql.errors import PermissionDenied, Unauthenticated
from api.graphql.ids import encode_id
from api.graphql.money import Money
from api.graphql.permissions import requires
from api.graphql.relay import Children, Node
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.customers.graphql.types import Customer


# strawberry.enum gives an enum class its GraphQL name and description and returns the class
# itself, so each GraphQL enum is an alias of its domain enum: fields annotated with it are
# checked like any other type.
CouponKind = models.CouponKind
strawberry.enum(
    CouponKind,
    description="AMOUNT_OFF_THRESHOLD 满减 (amount off over a threshold), PERCENT_OFF 折扣 "
    "(percent off, optionally capped), FIXED_OFF 直减 (fixed amount off), EXCHANGE 兑换 "
    "(one unit of a SKU).",
)
CouponChannel = models.CouponChannel
strawberry.enum(CouponChannel, description="Where a coupon is claimed or used (线上/线下).")
CouponTemplateStatus = models.TemplateStatus
strawberry.enum(CouponTemplateStatus, name="CouponTemplateStatus")
CouponStacking = models.Stacking
strawberry.enum(
    CouponStacking,
    name="CouponStacking",
    description="EXCLUSIVE: alone on an order; STACKABLE: with other stackable coupons, "
    "one per template.",
)
CouponCancelPolicy = models.CancelPolicy
strawberry.enum(
    CouponCancelPolicy,
    name="CouponCancelPolicy",
    description="On order cancel: RESTORE gives a still-valid coupon back; VOID voids it.",
)
CouponStatus = models.CouponStatus
strawberry.enum(CouponStatus)
CouponOrigin = models.CouponOrigin
strawberry.enum(CouponOrigin, description="CLAIM: the member claimed it; GRANT: HQ granted it.")
CouponErrorCode = errors.CouponErrorCode
strawberry.enum(CouponErrorCode)


def any_scope(*scopes: str) -> type[BasePermission]:
    """A permission class satisfied by any one of ``scopes``."""

    class AnyScope(BasePermission):
        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            principal = info.context.principal
            if not principal.is_authenticated:
                raise Unauthenticated("Sign in first: this needs an access token.")
            if not any(principal.has_scope(s) for s in scopes):
                raise PermissionDenied(f"This needs one of the scopes: {' '.join(scopes)}.")
            return True

    AnyScope.__name__ = AnyScope.__qualname__ = "AnyScope_" + "_".join(scopes)
    return AnyScope


# Templates are offers: marketing (coupons:write), anyone who serves customers
# (customers:read: staff, partners, members) and redeeming clients (coupons:redeem) read them.
TEMPLATE_READERS = any_scope("coupons:write", "customers:read", "coupons:redeem")


@strawberry.type
class CouponChannelCount:
    channel: str
    count: int


@strawberry.type
class CouponStoreCount:
    count: int
    store_pk: strawberry.Private[int | None]

    @strawberry.field(description="Null: used online without a store, or not yours to see.")
    async def store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None


@strawberry.type(description="How a template is doing. Counts are of coupons, now.")
class CouponTemplateStats:
    issued: int = strawberry.field(description="Coupons handed out (claimed or granted).")
    claimed: int = strawberry.field(description="Claimed by members (origin CLAIM).")
    granted: int = strawberry.field(description="Granted by HQ (origin GRANT).")
    redeemed: int
    voided: int
    expired: int = strawberry.field(description="Never redeemed, past their validity.")
    remaining: int = strawberry.field(description="Stock left to issue.")
    claims_by_channel: list[CouponChannelCount]
    redemptions_by_store: list[CouponStoreCount]

    @classmethod
    def of(cls, stats: TemplateStats) -> CouponTemplateStats:
        return cls(
            issued=stats.issued,
            claimed=stats.claimed,
            granted=stats.granted,
            redeemed=stats.redeemed,
            voided=stats.voided,
            expired=stats.expired,
            remaining=stats.remaining,
            claims_by_channel=[
                CouponChannelCount(channel=c, count=n) for c, n in stats.claims_by_channel.items()
            ],
            redemptions_by_store=[
                CouponStoreCount(store_pk=s, count=n) for s, n in stats.redemptions_by_store.items()
            ],
        )


@strawberry.type(description="A coupon template (优惠券模板): what a coupon gives, where and when.")
class CouponTemplate(Node):
    name: str
    kind: CouponKind
    status: CouponTemplateStatus
    threshold: Money | None = strawberry.field(
        description="满减: the spend that unlocks it; 折扣: an optional minimum spend."
    )
    discount: Money | None = strawberry.field(description="满减 and 直减: the amount off.")
    percent_off: int | None = strawberry.field(description="折扣: 20 means 20% off (8折).")
    max_discount: Money | None = strawberry.field(description="折扣: the cap, if any.")
    exchange_sku: str | None = strawberry.field(description="兑换: the SKU it is exchanged for.")
    claim_channel: CouponChannel
    use_channel: CouponChannel
    claim_starts_at: datetime | None
    claim_ends_at: datetime | None
    valid_from: datetime | None = strawberry.field(description="Fixed validity, if so.")
    valid_until: datetime | None
    valid_days: int | None = strawberry.field(description="Or: valid this many days after claim.")
    total_stock: int
    issued: int
    per_person_limit: int
    stacking: CouponStacking
    cancel_policy: CouponCancelPolicy
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.CouponTemplate) -> CouponTemplate:
        return cls(
            id=strawberry.ID(encode_id("CouponTemplate", row.id)),
            pk=row.id,
            name=row.name,
            kind=row.kind,
            status=row.status,
            threshold=Money.of(row.threshold_amount, row.currency),
            discount=Money.of(row.discount_amount, row.currency),
            percent_off=row.percent_off,
            max_discount=Money.of(row.max_discount, row.currency),
            exchange_sku=row.exchange_sku,
            claim_channel=row.claim_channel,
            use_channel=row.use_channel,
            claim_starts_at=row.claim_starts_at,
            claim_ends_at=row.claim_ends_at,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            valid_days=row.valid_days,
            total_stock=row.total_stock,
            issued=row.issued,
            per_person_limit=row.per_person_limit,
            stacking=row.stacking,
            cancel_policy=row.cancel_policy,
            created_at=row.created_at,
        )

    @strawberry.field(description="Used only at these stores (with `partners`: either).")
    async def stores(self, info: Info) -> list[Store]:
        store_pks, _ = await info.context.loader(loaders.restrictions_by_template).load(self.pk)
        rows = await info.context.loader(partner_loaders.stores_by_pk).load_many(store_pks)
        return [Store.from_row(r) for r in rows if r is not None]

    @strawberry.field(description="Used only at these partners' stores. Both empty: anywhere.")
    async def partners(self, info: Info) -> list[Partner]:
        _, partner_pks = await info.context.loader(loaders.restrictions_by_template).load(self.pk)
        rows = await info.context.loader(partner_loaders.partners_by_pk).load_many(partner_pks)
        return [Partner.from_row(r) for r in rows if r is not None]

    @strawberry.field(
        description="Issued, claimed, redeemed ..., by channel and store (HQ: coupons:write).",
        permission_classes=[requires("coupons:write")],
    )
    async def stats(self, info: Info) -> CouponTemplateStats:
        return CouponTemplateStats.of(
            await info.context.loader(loaders.stats_by_template).load(self.pk)
        )


def _shown_code(code: str, holder: bool) -> str:
    # The code is a bearer secret: only its holder and HQ see it whole. A partner seeing its
    # recruits' coupons must not be able to redeem them in their stead.
    return code if holder else "*" * (len(code) - 4) + code[-4:]


@strawberry.type(description="A claimed coupon (优惠券): a code redeemed once at a store (核销).")
class Coupon(Node):
    code: str = strawberry.field(
        description="Whole for its holder and HQ; others see only the last 4 characters."
    )
    status: CouponStatus
    origin: CouponOrigin
    valid_from: datetime
    valid_until: datetime
    claimed_at: datetime
    claim_channel: CouponChannel
    redeemed_at: datetime | None
    pk: strawberry.Private[int]
    template_pk: strawberry.Private[int]
    customer_pk: strawberry.Private[int]
    redeemed_store_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.Coupon, ctx: Context) -> Coupon:
        principal = ctx.principal
        holder = principal.is_hq or (
            principal.is_member and principal.customer_id == row.customer_id
        )
        return cls(
            id=strawberry.ID(encode_id("Coupon", row.id)),
            pk=row.id,
            template_pk=row.template_id,
            customer_pk=row.customer_id,
            redeemed_store_pk=row.redeemed_store_id,
            code=_shown_code(row.code, holder),
            status=row.status,
            origin=row.origin,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            claimed_at=row.claimed_at,
            claim_channel=models.CouponChannel(row.claim_channel),
            redeemed_at=row.redeemed_at,
        )

    @strawberry.field
    async def template(self, info: Info) -> CouponTemplate | None:
        row = await info.context.loader(loaders.templates_by_pk).load(self.template_pk)
        return CouponTemplate.from_row(row) if row else None

    @strawberry.field(description="Where it was redeemed; null if not, or not yours to see.")
    async def redeemed_store(self, info: Info) -> Store | None:
        if self.redeemed_store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.redeemed_store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(description="Its holder; null if you may not see the customer.")
    async def customer(
        self, info: Info
    ) -> Annotated[Customer, strawberry.lazy("api.customers.graphql.types")] | None:
        # Through the customers domain's node loader: batched and scoped like `node`.
        found = await info.context.load_node("Customer", self.customer_pk)
        return found


async def load_templates(ctx: Context, pks: Sequence[int]) -> list[CouponTemplate | None]:
    rows = await ctx.loader(loaders.templates_by_pk).load_many(pks)
    return [CouponTemplate.from_row(r) if r else None for r in rows]


async def load_coupons(ctx: Context, pks: Sequence[int]) -> list[Coupon | None]:
    rows = await ctx.loader(loaders.coupons_by_pk).load_many(pks)
    return [Coupon.from_row(r, ctx) if r else None for r in rows]


def customer_coupons(info: Info, customer_pk: int) -> Children[Coupon]:
    """``Customer.coupons``, newest first: one statement pages every customer's coupons
    (and one more counts them, only when ``totalCount`` is asked for)."""
    ctx = info.context
    return Children(
        loaders.coupon_pages_by_customer,
        loaders.coupon_counts_by_customer,
        customer_pk,
        lambda row: Coupon.from_row(row, ctx),
    )


# Channels are decided by who acts, not by what the caller says (review #9); the input
# descriptions below are the rule's documentation.
CLAIM_CHANNEL_RULE = (
    "Where the claim happens, decided by who claims: a member (mini-program) claims ONLINE, "
    "and stating OFFLINE is refused (FORBIDDEN); HQ, granting, states it (default: OFFLINE "
    "with a storeId, else ONLINE). An OFFLINE claim names its store (storeId)."
)
USE_CHANNEL_RULE = (
    "Where the use happens, decided by who redeems: store staff, a store's integration and "
    "partner admins redeem OFFLINE at the counter, and stating ONLINE is refused "
    "(FORBIDDEN); a partner-wide integration states it, always at a storeId of its partner "
    "(a POS: OFFLINE, a web shop: ONLINE); HQ states it (default: OFFLINE at a storeId, "
    "ONLINE without one; OFFLINE needs a storeId)."
)
