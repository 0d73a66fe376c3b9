"""GraphQL surface of coupons (优惠券): thin wrappers over service.py and loaders.py.

``customer_coupons`` is what the customers domain wires into ``Customer.coupons``: one
ROW_NUMBER statement pages the coupons of every customer in a list. This module must not
import ``api.customers.graphql`` at module level (that one imports this); the back-reference
``Coupon.customer`` is lazy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.permission import BasePermission

from api.coupons import loaders, models, service
from api.db import utcnow
from api.errors import DomainError, InputError
from api.graphql.context import Context, Info
from api.graphql.errors import PermissionDenied, Unauthenticated, UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.money import Money
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Children, Connection, Node, Rows, connection
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.customers.graphql.types import Customer

CouponKind = strawberry.enum(
    models.CouponKind,
    description="AMOUNT_OFF_THRESHOLD 满减 (amount off over a threshold), PERCENT_OFF 折扣 "
    "(percent off, optionally capped), FIXED_OFF 直减 (fixed amount off), EXCHANGE 兑换 "
    "(one unit of a SKU).",
)
CouponChannel = strawberry.enum(
    models.CouponChannel, description="Where a coupon is claimed or used (线上/线下)."
)
CouponTemplateStatus = strawberry.enum(models.TemplateStatus, name="CouponTemplateStatus")
CouponStacking = strawberry.enum(
    models.Stacking,
    name="CouponStacking",
    description="EXCLUSIVE: alone on an order; STACKABLE: with other stackable coupons, "
    "one per template.",
)
CouponCancelPolicy = strawberry.enum(
    models.CancelPolicy,
    name="CouponCancelPolicy",
    description="On order cancel: RESTORE gives a still-valid coupon back; VOID voids it.",
)
CouponStatus = strawberry.enum(models.CouponStatus)
CouponOrigin = strawberry.enum(
    models.CouponOrigin, description="CLAIM: the member claimed it; GRANT: HQ granted it."
)
CouponErrorCode = strawberry.enum(service.CouponErrorCode)


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


# --- types ---------------------------------------------------------------------------------


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
    def of(cls, stats: service.TemplateStats) -> CouponTemplateStats:
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
    kind: CouponKind  # type: ignore[valid-type]
    status: CouponTemplateStatus  # type: ignore[valid-type]
    threshold: Money | None = strawberry.field(
        description="满减: the spend that unlocks it; 折扣: an optional minimum spend."
    )
    discount: Money | None = strawberry.field(description="满减 and 直减: the amount off.")
    percent_off: int | None = strawberry.field(description="折扣: 20 means 20% off (8折).")
    max_discount: Money | None = strawberry.field(description="折扣: the cap, if any.")
    exchange_sku: str | None = strawberry.field(description="兑换: the SKU it is exchanged for.")
    claim_channel: CouponChannel  # type: ignore[valid-type]
    use_channel: CouponChannel  # type: ignore[valid-type]
    claim_starts_at: datetime | None
    claim_ends_at: datetime | None
    valid_from: datetime | None = strawberry.field(description="Fixed validity, if so.")
    valid_until: datetime | None
    valid_days: int | None = strawberry.field(description="Or: valid this many days after claim.")
    total_stock: int
    issued: int
    per_person_limit: int
    stacking: CouponStacking  # type: ignore[valid-type]
    cancel_policy: CouponCancelPolicy  # type: ignore[valid-type]
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
    status: CouponStatus  # type: ignore[valid-type]
    origin: CouponOrigin  # type: ignore[valid-type]
    valid_from: datetime
    valid_until: datetime
    claimed_at: datetime
    claim_channel: CouponChannel  # type: ignore[valid-type]
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
        return found  # type: ignore[return-value]


async def _load_templates(ctx: Context, pks: Sequence[int]) -> list[CouponTemplate | None]:
    rows = await ctx.loader(loaders.templates_by_pk).load_many(pks)
    return [CouponTemplate.from_row(r) if r else None for r in rows]


async def _load_coupons(ctx: Context, pks: Sequence[int]) -> list[Coupon | None]:
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


@strawberry.type(
    description="A coupon as the redeeming store sees it before redeeming: its validity and "
    "whether it would redeem here now. The holder is masked."
)
class CouponLookup:
    code: str
    status: CouponStatus  # type: ignore[valid-type]
    valid_from: datetime
    valid_until: datetime
    template: CouponTemplate
    redeemable: bool = strawberry.field(description="It would redeem here, now.")
    problem: CouponErrorCode | None = strawberry.field(  # type: ignore[valid-type]
        description="Why it would not (EXPIRED, ALREADY_REDEEMED, WRONG_CHANNEL, ...)."
    )
    holder_name: str | None = strawberry.field(description="Masked: 王*.")
    holder_phone: str | None = strawberry.field(description="Masked: 138****1234.")


# Channels are decided by who acts, not by what the caller says (review #9); the input
# descriptions below are the rule's documentation.
_CLAIM_CHANNEL_RULE = (
    "Where the claim happens, decided by who claims: a member (mini-program) claims ONLINE, "
    "and stating OFFLINE is refused (FORBIDDEN); HQ, granting, states it (default: OFFLINE "
    "with a storeId, else ONLINE). An OFFLINE claim names its store (storeId)."
)
_USE_CHANNEL_RULE = (
    "Where the use happens, decided by who redeems: store staff, a store's integration and "
    "partner admins redeem OFFLINE at the counter, and stating ONLINE is refused "
    "(FORBIDDEN); a partner-wide integration states it, always at a storeId of its partner "
    "(a POS: OFFLINE, a web shop: ONLINE); HQ states it (default: OFFLINE at a storeId, "
    "ONLINE without one; OFFLINE needs a storeId)."
)


# --- queries -------------------------------------------------------------------------------


@strawberry.input
class CouponTemplateFilter:
    statuses: list[CouponTemplateStatus] | None = None  # type: ignore[valid-type]
    kinds: list[CouponKind] | None = None  # type: ignore[valid-type]
    claimable: bool | None = strawberry.field(
        default=None,
        description="true: only those active, inside their claim window, with stock left.",
    )
    search: str | None = strawberry.field(default=None, description="Part of the name.")

    def to_service(self) -> service.TemplateFilter:
        return service.TemplateFilter(
            statuses=self.statuses or (),
            kinds=self.kinds or (),
            claimable_at=utcnow() if self.claimable else None,
            search=self.search,
        )


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=service.CouponErrorCode.INVALID)


@strawberry.type
class CouponQuery:
    @connection(
        Connection[CouponTemplate],
        description="Coupon templates you may see: HQ all; a partner those usable at its "
        "stores; members all (they are offers).",
        permission_classes=[TEMPLATE_READERS],
    )
    async def coupon_templates(
        self, info: Info, filter: CouponTemplateFilter | None = None, reverse: bool = False
    ) -> Rows[CouponTemplate]:
        stmt = service.templates_query(
            info.context.principal, filter.to_service() if filter else None
        )
        return Rows(stmt, service.TEMPLATE_KEYSET, CouponTemplate.from_row, reverse=reverse)

    @strawberry.field(
        description="Look a code up before redeeming it (核销): validity, whether it would "
        "redeem at `storeId` (default: your store) now, the holder masked. Null for an unknown "
        "code or one that can never be used at your stores.",
        permission_classes=[requires("coupons:redeem")],
    )
    async def coupon(
        self,
        info: Info,
        code: str,
        store_id: strawberry.ID | None = None,
        channel: Annotated[
            CouponChannel | None,  # type: ignore[valid-type]
            strawberry.argument(description=_USE_CHANNEL_RULE),
        ] = None,
    ) -> CouponLookup | None:
        ctx = info.context
        store_pk = decode_id_of(store_id, "Store") if store_id else None
        try:
            async with ctx.db.read() as session:
                found = await service.check_coupon(
                    session, ctx.principal, code, store_id=store_pk, channel=channel
                )
        except DomainError as error:
            raise InputError(str(error)) from None
        if found is None:
            return None
        return CouponLookup(
            code=found.coupon.code,
            status=found.coupon.status,
            valid_from=found.coupon.valid_from,
            valid_until=found.coupon.valid_until,
            template=CouponTemplate.from_row(found.template),
            redeemable=found.problem is None,
            problem=found.problem,
            holder_name=found.holder_name,
            holder_phone=found.holder_phone,
        )


# --- mutations -----------------------------------------------------------------------------


@strawberry.type
class CouponError(UserError):
    code: CouponErrorCode  # type: ignore[valid-type]


@strawberry.input(description="Amounts are in the template's currency.")
class CouponTemplateCreateInput:
    name: str
    kind: CouponKind  # type: ignore[valid-type]
    claim_channel: CouponChannel  # type: ignore[valid-type]
    use_channel: CouponChannel  # type: ignore[valid-type]
    total_stock: int
    currency: str = "CNY"
    threshold_amount: Decimal | None = None
    discount_amount: Decimal | None = None
    percent_off: int | None = None
    max_discount: Decimal | None = None
    exchange_sku: str | None = None
    claim_starts_at: datetime | None = None
    claim_ends_at: datetime | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int | None = None
    per_person_limit: int = 1
    stacking: CouponStacking = models.Stacking.EXCLUSIVE  # type: ignore[valid-type]
    cancel_policy: CouponCancelPolicy = models.CancelPolicy.RESTORE  # type: ignore[valid-type]
    store_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    partner_ids: list[strawberry.ID] = strawberry.field(default_factory=list)


@strawberry.input(description="Pause or resume, or raise the stock (never lowered).")
class CouponTemplateUpdateInput:
    id: strawberry.ID
    status: CouponTemplateStatus | None = None  # type: ignore[valid-type]
    total_stock: int | None = None


@strawberry.input
class CouponClaimInput:
    template_id: strawberry.ID
    channel: CouponChannel | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description=_CLAIM_CHANNEL_RULE
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Whom HQ grants it to (coupons:write). A member claims for themself: "
        "omit it, or give their own id.",
    )
    store_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The store an OFFLINE claim happens at (required then), or the store an "
        "online claim came through. Either way one where the template may be used (its "
        "stores or partners); else WRONG_STORE.",
    )
    claim_key: str | None = strawberry.field(
        default=None,
        description="Retrying with the same key returns the first coupon, also when the "
        "retry names the person by another of their ids (after a merge).",
    )


@strawberry.input
class CouponRedeemInput:
    code: str
    store_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A store of yours (default: your store). Only HQ may omit it, for an "
        "online use.",
    )
    channel: CouponChannel | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description=_USE_CHANNEL_RULE
    )
    order_ref: str | None = strawberry.field(
        default=None,
        description="Your reference for the sale it is used on (free text, for your records). "
        "Coupons used through orderCreate are released by that order's cancel or refund.",
    )


@strawberry.type
class CouponTemplateCreatePayload:
    coupon_template: CouponTemplate | None = None
    errors: list[CouponError] = strawberry.field(default_factory=list)


@strawberry.type
class CouponTemplateUpdatePayload:
    coupon_template: CouponTemplate | None = None
    errors: list[CouponError] = strawberry.field(default_factory=list)


@strawberry.type
class CouponClaimPayload:
    coupon: Coupon | None = None
    created: bool = strawberry.field(
        default=False, description="false: a retry with the same claimKey, the first coupon."
    )
    errors: list[CouponError] = strawberry.field(default_factory=list)


@strawberry.type
class CouponRedeemPayload:
    coupon: Coupon | None = None
    errors: list[CouponError] = strawberry.field(default_factory=list)


@strawberry.type
class CouponMutation:
    @strawberry.mutation(permission_classes=[requires("coupons:write")])
    async def coupon_template_create(
        self, info: Info, input: CouponTemplateCreateInput
    ) -> CouponTemplateCreatePayload:
        async def change(work: UnitOfWork) -> CouponTemplateCreatePayload:
            draft = service.TemplateDraft(
                name=input.name,
                kind=input.kind,
                claim_channel=input.claim_channel,
                use_channel=input.use_channel,
                total_stock=input.total_stock,
                currency=input.currency,
                threshold_amount=input.threshold_amount,
                discount_amount=input.discount_amount,
                percent_off=input.percent_off,
                max_discount=input.max_discount,
                exchange_sku=input.exchange_sku,
                claim_starts_at=input.claim_starts_at,
                claim_ends_at=input.claim_ends_at,
                valid_from=input.valid_from,
                valid_until=input.valid_until,
                valid_days=input.valid_days,
                per_person_limit=input.per_person_limit,
                stacking=input.stacking,
                cancel_policy=input.cancel_policy,
                store_ids=[
                    _pk(s, "Store", "storeIds", str(i)) for i, s in enumerate(input.store_ids)
                ],
                partner_ids=[
                    _pk(p, "Partner", "partnerIds", str(i)) for i, p in enumerate(input.partner_ids)
                ],
            )
            row = await service.create_template(work.session, work.principal, draft)
            work.touched("CouponTemplate", row.id)
            return CouponTemplateCreatePayload(coupon_template=CouponTemplate.from_row(row))

        return await run_mutation(info, CouponTemplateCreatePayload, change)

    @strawberry.mutation(permission_classes=[requires("coupons:write")])
    async def coupon_template_update(
        self, info: Info, input: CouponTemplateUpdateInput
    ) -> CouponTemplateUpdatePayload:
        async def change(work: UnitOfWork) -> CouponTemplateUpdatePayload:
            row = await service.update_template(
                work.session,
                work.principal,
                _pk(input.id, "CouponTemplate", "id"),
                status=input.status,
                total_stock=input.total_stock,
            )
            work.touched("CouponTemplate", row.id)
            return CouponTemplateUpdatePayload(coupon_template=CouponTemplate.from_row(row))

        return await run_mutation(info, CouponTemplateUpdatePayload, change)

    @strawberry.mutation(
        description="A member (coupons:claim) claims for themself; HQ (coupons:write) grants "
        "to any customer.",
        permission_classes=[any_scope("coupons:claim", "coupons:write")],
    )
    async def coupon_claim(self, info: Info, input: CouponClaimInput) -> CouponClaimPayload:
        ctx = info.context
        principal = ctx.principal
        origin = models.CouponOrigin.CLAIM if principal.is_member else models.CouponOrigin.GRANT
        if origin is models.CouponOrigin.GRANT and not principal.has_scope("coupons:write"):
            raise PermissionDenied("Granting coupons needs the coupons:write scope.")

        async def change(work: UnitOfWork) -> CouponClaimPayload:
            result = await service.claim(
                work.session,
                principal,
                _pk(input.template_id, "CouponTemplate", "templateId"),
                _pk(input.customer_id, "Customer", "customerId") if input.customer_id else None,
                channel=input.channel,
                store_id=_pk(input.store_id, "Store", "storeId") if input.store_id else None,
                claim_key=input.claim_key,
                origin=origin,
            )
            work.touched("Coupon", result.coupon.id)
            return CouponClaimPayload(
                coupon=Coupon.from_row(result.coupon, ctx), created=result.created
            )

        return await run_mutation(info, CouponClaimPayload, change)

    @strawberry.mutation(
        description="Redeem (核销) a coupon at a store, exactly once.",
        permission_classes=[requires("coupons:redeem")],
    )
    async def coupon_redeem(self, info: Info, input: CouponRedeemInput) -> CouponRedeemPayload:
        async def change(work: UnitOfWork) -> CouponRedeemPayload:
            row = await service.redeem(
                work.session,
                work.principal,
                input.code,
                store_id=_pk(input.store_id, "Store", "storeId") if input.store_id else None,
                channel=input.channel,
                order_ref=input.order_ref,
            )
            work.touched("Coupon", row.id)
            return CouponRedeemPayload(coupon=Coupon.from_row(row, work.context))

        return await run_mutation(info, CouponRedeemPayload, change)


__all__ = ["Coupon", "CouponMutation", "CouponQuery", "CouponTemplate", "customer_coupons"]


schema_parts = SchemaParts(
    query=CouponQuery,
    mutation=CouponMutation,
    types=[Coupon, CouponTemplate],
    nodes={"CouponTemplate": _load_templates, "Coupon": _load_coupons},
)
