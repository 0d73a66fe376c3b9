"""The coupons domain's mutations: create and update templates, claim (or grant), redeem."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import partial

import strawberry

from api.coupons import claims, errors, models, redemption, templates
from api.coupons.graphql.types import (
    CLAIM_CHANNEL_RULE,
    USE_CHANNEL_RULE,
    Coupon,
    CouponCancelPolicy,
    CouponChannel,
    CouponErrorCode,
    CouponKind,
    CouponStacking,
    CouponTemplate,
    CouponTemplateStatus,
    any_scope,
)
from api.graphql.context import Info
from api.graphql.errors import PermissionDenied, UserError
from api.graphql.ids import input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.permissions import requires

# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=errors.CouponErrorCode.INVALID)


@strawberry.type
class CouponError(UserError):
    code: CouponErrorCode


@strawberry.input(description="Amounts are in the template's currency.")
class CouponTemplateCreateInput:
    name: str
    kind: CouponKind
    claim_channel: CouponChannel
    use_channel: CouponChannel
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
    stacking: CouponStacking = models.Stacking.EXCLUSIVE
    cancel_policy: CouponCancelPolicy = models.CancelPolicy.RESTORE
    store_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    partner_ids: list[strawberry.ID] = strawberry.field(default_factory=list)


@strawberry.input(description="Pause or resume, or raise the stock (never lowered).")
class CouponTemplateUpdateInput:
    id: strawberry.ID
    status: CouponTemplateStatus | None = None
    total_stock: int | None = None


@strawberry.input
class CouponClaimInput:
    template_id: strawberry.ID
    channel: CouponChannel | None = strawberry.field(default=None, description=CLAIM_CHANNEL_RULE)
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
    channel: CouponChannel | None = strawberry.field(default=None, description=USE_CHANNEL_RULE)
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
            draft = templates.TemplateDraft(
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
            row = await templates.create_template(work.session, work.principal, draft)
            work.touched("CouponTemplate", row.id)
            return CouponTemplateCreatePayload(coupon_template=CouponTemplate.from_row(row))

        return await run_mutation(info, CouponTemplateCreatePayload, change)

    @strawberry.mutation(permission_classes=[requires("coupons:write")])
    async def coupon_template_update(
        self, info: Info, input: CouponTemplateUpdateInput
    ) -> CouponTemplateUpdatePayload:
        async def change(work: UnitOfWork) -> CouponTemplateUpdatePayload:
            row = await templates.update_template(
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
            result = await claims.claim(
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
            row = await redemption.redeem(
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
