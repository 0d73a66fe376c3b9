"""GraphQL surface of channel conflict: ``channelViolations`` and the ``ChannelViolation``
node, for HQ only. A violation is evidence about a partner, so no partner principal reads
them: the root field refuses (FORBIDDEN) and ``node`` answers null, like for a missing one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import strawberry

from api.catalog import loaders as catalog_loaders
from api.catalog.models import SalesChannel
from api.catalog.schema import Sku
from api.conflicts import models, service
from api.graphql.context import Context, Info
from api.graphql.errors import PermissionDenied
from api.graphql.ids import decode_id_of, encode_id
from api.graphql.money import Money
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.orders import loaders as order_loaders
from api.orders.schema import Order
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.coupons.graphql.types import Coupon

# strawberry.enum makes the enum class itself the GraphQL enum (and returns it): fields are
# annotated with the class, a type mypy can read, where a variable holding it is not one.
strawberry.enum(
    models.ViolationKind,
    description="PRICE_BELOW_FLOOR / PRICE_ABOVE_CEILING (乱价: a price outside the channel's "
    "band), CROSS_REGION_SALE / CROSS_REGION_REDEMPTION (窜货: a sale or a coupon redemption "
    "outside the partner's territories), EXCLUSIVE_SKU (a channel-exclusive SKU sold elsewhere).",
)

_HQ_ONLY = "Channel violations are HQ's: they are evidence about partners."


async def _violations_by_pk(
    ctx: Context, keys: Sequence[int]
) -> list[models.ChannelViolation | None]:
    async with ctx.db.read() as session:
        found = await service.violations_by_id(session, ctx.principal, keys)
    return [found.get(k) for k in keys]


@strawberry.type(description="One detected channel violation (渠道冲突).")
class ChannelViolation(Node):
    kind: models.ViolationKind
    detail: str
    channel: SalesChannel | None
    region_code: str | None = strawberry.field(description="Where the sale or redemption was.")
    detected_at: datetime
    pk: strawberry.Private[int]
    partner_pk: strawberry.Private[int | None]
    store_pk: strawberry.Private[int | None]
    order_pk: strawberry.Private[int | None]
    coupon_pk: strawberry.Private[int | None]
    sku_pk: strawberry.Private[int | None]
    expected: strawberry.Private[Decimal | None]
    actual: strawberry.Private[Decimal | None]

    @classmethod
    def from_row(cls, row: models.ChannelViolation) -> ChannelViolation:
        return cls(
            id=strawberry.ID(encode_id("ChannelViolation", row.id)),
            pk=row.id,
            kind=row.kind,
            detail=row.detail,
            channel=row.channel,
            region_code=row.region_code,
            detected_at=row.detected_at,
            partner_pk=row.partner_id,
            store_pk=row.store_id,
            order_pk=row.order_id,
            coupon_pk=row.coupon_id,
            sku_pk=row.sku_id,
            expected=row.expected_amount,
            actual=row.actual_amount,
        )

    async def _currency(self, info: Info) -> str:
        # Amounts are in the order's currency (a price violation always names its order).
        if self.order_pk is not None:
            order = await info.context.loader(order_loaders.orders_by_pk).load(self.order_pk)
            if order is not None:
                return order.currency
        return "CNY"

    @strawberry.field(description="乱价: the band's limit that was crossed (floor or ceiling).")
    async def expected_amount(self, info: Info) -> Money | None:
        if self.expected is None:
            return None
        return Money(amount=self.expected, currency=await self._currency(info))

    @strawberry.field(description="乱价: the price the SKU was sold at.")
    async def actual_amount(self, info: Info) -> Money | None:
        if self.actual is None:
            return None
        return Money(amount=self.actual, currency=await self._currency(info))

    @strawberry.field(description="The partner at fault.")
    async def partner(self, info: Info) -> Partner | None:
        if self.partner_pk is None:
            return None
        row = await info.context.loader(partner_loaders.partners_by_pk).load(self.partner_pk)
        return Partner.from_row(row) if row else None

    @strawberry.field
    async def store(self, info: Info) -> Store | None:
        if self.store_pk is None:
            return None
        row = await info.context.loader(partner_loaders.stores_by_pk).load(self.store_pk)
        return Store.from_row(row) if row else None

    @strawberry.field(description="The order it was found in, if any.")
    async def order(self, info: Info) -> Order | None:
        if self.order_pk is None:
            return None
        row = await info.context.loader(order_loaders.orders_by_pk).load(self.order_pk)
        return Order.from_row(row, info.context) if row else None

    @strawberry.field(description="The coupon redeemed out of region, if that is what it was.")
    async def coupon(
        self, info: Info
    ) -> Annotated[Coupon, strawberry.lazy("api.coupons.graphql.types")] | None:
        if self.coupon_pk is None:
            return None
        found = await info.context.load_node("Coupon", self.coupon_pk)
        return found

    @strawberry.field
    async def sku(self, info: Info) -> Sku | None:
        if self.sku_pk is None:
            return None
        row = await info.context.loader(catalog_loaders.skus_by_pk).load(self.sku_pk)
        return Sku.from_row(row, info.context) if row else None


async def _load_violations(ctx: Context, pks: Sequence[int]) -> list[ChannelViolation | None]:
    rows = await ctx.loader(_violations_by_pk).load_many(pks)
    return [ChannelViolation.from_row(r) if r else None for r in rows]


@strawberry.input
class ChannelViolationFilter:
    kinds: list[models.ViolationKind] | None = None
    partner_id: strawberry.ID | None = None
    store_id: strawberry.ID | None = None
    detected_from: datetime | None = strawberry.field(
        default=None, name="from", description="Detected at or after (inclusive)."
    )
    detected_to: datetime | None = strawberry.field(
        default=None, name="to", description="Detected before (exclusive)."
    )

    def to_service(self) -> service.ViolationFilter:
        return service.ViolationFilter(
            kinds=self.kinds or (),
            partner_ids=[decode_id_of(self.partner_id, "Partner")] if self.partner_id else (),
            store_ids=[decode_id_of(self.store_id, "Store")] if self.store_id else (),
            detected_from=self.detected_from,
            detected_to=self.detected_to,
        )


@strawberry.type
class ConflictQuery:
    @connection(
        Connection[ChannelViolation],
        description="Channel violations (乱价, 窜货), oldest first (reverse: newest first). HQ "
        "staff with orders:read only; anyone else is refused.",
        permission_classes=[requires("orders:read")],
    )
    async def channel_violations(
        self,
        info: Info,
        filter: ChannelViolationFilter | None = None,
        reverse: bool = False,
    ) -> Rows[ChannelViolation]:
        ctx = info.context
        if not ctx.principal.is_hq:
            raise PermissionDenied(_HQ_ONLY)
        stmt = service.violations_query(ctx.principal, filter.to_service() if filter else None)
        return Rows(stmt, service.VIOLATION_KEYSET, ChannelViolation.from_row, reverse=reverse)


__all__ = ["ChannelViolation", "ConflictQuery"]


schema_parts = SchemaParts(
    query=ConflictQuery, types=[ChannelViolation], nodes={"ChannelViolation": _load_violations}
)
