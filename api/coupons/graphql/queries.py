"""The coupons domain's queries: templates (a connection) and a code's lookup before
redeeming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from api.coupons import access, redemption
from api.coupons.graphql.types import (
    TEMPLATE_READERS,
    USE_CHANNEL_RULE,
    CouponChannel,
    CouponErrorCode,
    CouponKind,
    CouponStatus,
    CouponTemplate,
    CouponTemplateStatus,
)
from api.db import utcnow
from api.errors import DomainError, InputError
from api.graphql.context import Info
from api.graphql.ids import decode_id_of
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Rows, connection


@strawberry.type(
    description="A coupon as the redeeming store sees it before redeeming: its validity and "
    "whether it would redeem here now. The holder is masked."
)
class CouponLookup:
    code: str
    status: CouponStatus
    valid_from: datetime
    valid_until: datetime
    template: CouponTemplate
    redeemable: bool = strawberry.field(description="It would redeem here, now.")
    problem: CouponErrorCode | None = strawberry.field(
        description="Why it would not (EXPIRED, ALREADY_REDEEMED, WRONG_CHANNEL, ...)."
    )
    holder_name: str | None = strawberry.field(description="Masked: 王*.")
    holder_phone: str | None = strawberry.field(description="Masked: 138****1234.")


@strawberry.input
class CouponTemplateFilter:
    statuses: list[CouponTemplateStatus] | None = None
    kinds: list[CouponKind] | None = None
    claimable: bool | None = strawberry.field(
        default=None,
        description="true: only those active, inside their claim window, with stock left.",
    )
    search: str | None = strawberry.field(default=None, description="Part of the name.")

    def to_service(self) -> access.TemplateFilter:
        return access.TemplateFilter(
            statuses=self.statuses or (),
            kinds=self.kinds or (),
            claimable_at=utcnow() if self.claimable else None,
            search=self.search,
        )


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
        stmt = access.templates_query(
            info.context.principal, filter.to_service() if filter else None
        )
        return Rows(stmt, access.TEMPLATE_KEYSET, CouponTemplate.from_row, reverse=reverse)

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
            CouponChannel | None,
            strawberry.argument(description=USE_CHANNEL_RULE),
        ] = None,
    ) -> CouponLookup | None:
        ctx = info.context
        store_pk = decode_id_of(store_id, "Store") if store_id else None
        try:
            async with ctx.db.read() as session:
                found = await redemption.check_coupon(
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
