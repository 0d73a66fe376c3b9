"""GraphQL surface of stock: levels, the movement log, low-stock alerts and ``stockAdjust``.

Stock is its location's partner's business (HQ's for HQ-run locations): staff and partner
systems read their own through the same scope as everything else; members read none of it
(``Sku.pickupAvailable`` answers their one question, yes or no). ``StockAlert`` is also what
the ``stockAlerts(storeId)`` subscription streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

import strawberry

from api.catalog import loaders as catalog_loaders
from api.catalog.schema import Sku
from api.db import utcnow
from api.graphql.context import Context, Info
from api.graphql.errors import PermissionDenied, Unauthenticated, UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.inventory import adjusting, loaders, models, movements, queries
from api.partners import loaders as partner_loaders
from api.partners.schema import Store

StockMovementKind = strawberry.enum(
    models.MovementKind,
    name="StockMovementKind",
    description="ADJUST: counted or corrected; RESERVE / RELEASE: a pickup order holds units "
    "or gives them back; SALE: units sold; RESTOCK: a refund put units back; DISPATCH / "
    "RECEIPT: units sent to or taken in from another location (a purchase order shipped, "
    "received).",
)
StockAdjustMode = strawberry.enum(
    adjusting.AdjustMode,
    name="StockAdjustMode",
    description="SET: a count, on hand is now `quantity`; DELTA: a correction by `quantity`.",
)
StockErrorCode = strawberry.enum(adjusting.StockErrorCode)


class StockReaders(strawberry.permission.BasePermission):
    """Who reads stock: whoever reads partner data (staff, partners) or writes stock (a
    partner's stock system). Members are refused: stock counts are not theirs to know."""

    def has_permission(self, source: object, info: Info, **kwargs: object) -> bool:
        principal = info.context.principal
        if not principal.is_authenticated:
            raise Unauthenticated("Sign in first: this needs an access token.")
        if not (principal.has_scope("partners:read") or principal.has_scope("stock:write")):
            raise PermissionDenied("This needs the partners:read or stock:write scope.")
        return True


# --- types ----------------------------------------------------------------------------------


async def _store(info: Info, store_pk: int) -> Store | None:
    row = await info.context.loader(partner_loaders.stores_by_pk).load(store_pk)
    return Store.from_row(row) if row else None


async def _sku(info: Info, sku_pk: int) -> Sku:
    row = await info.context.loader(catalog_loaders.skus_by_pk).load(sku_pk)
    return Sku.from_row(row, info.context)


@strawberry.type(description="What a location holds of a SKU.")
class StockLevel(Node):
    on_hand: int
    reserved: int = strawberry.field(description="Held for pickup orders not yet picked up.")
    available: int = strawberry.field(description="onHand - reserved: what can be sold now.")
    safety_level: int = strawberry.field(description="安全库存: below it, an alert is raised.")
    below_safety: bool
    updated_at: datetime
    store_pk: strawberry.Private[int]
    sku_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.StockLevel) -> StockLevel:
        available = row.on_hand - row.reserved
        return cls(
            id=strawberry.ID(encode_id("StockLevel", row.id)),
            store_pk=row.store_id,
            sku_pk=row.sku_id,
            on_hand=row.on_hand,
            reserved=row.reserved,
            available=available,
            safety_level=row.safety_level,
            below_safety=available < row.safety_level,
            updated_at=row.updated_at,
        )

    @strawberry.field(description="The location (a store or a warehouse).")
    async def store(self, info: Info) -> Store | None:
        return await _store(info, self.store_pk)

    @strawberry.field
    async def sku(self, info: Info) -> Sku:
        return await _sku(info, self.sku_pk)


@strawberry.type(description="One change of a stock level, with the level after it.")
class StockMovement(Node):
    kind: StockMovementKind  # type: ignore[valid-type]  # strawberry.enum() value
    on_hand_delta: int
    reserved_delta: int
    on_hand_after: int
    reserved_after: int
    safety_level_set: int | None = strawberry.field(
        description="The safety level an adjustment set; null when it kept the level."
    )
    reason: str
    source_type: str = strawberry.field(
        description="What made it: `order`, `refund`, `adjust.set`, `adjust.delta` ..."
    )
    source_id: str = strawberry.field(
        description="The order's or refund's number, or the adjustment's scoped idempotency key."
    )
    actor: str | None
    created_at: datetime
    store_pk: strawberry.Private[int]
    sku_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.StockMovement) -> StockMovement:
        return cls(
            id=strawberry.ID(encode_id("StockMovement", row.id)),
            store_pk=row.store_id,
            sku_pk=row.sku_id,
            kind=row.kind,
            on_hand_delta=row.on_hand_delta,
            reserved_delta=row.reserved_delta,
            on_hand_after=row.on_hand_after,
            reserved_after=row.reserved_after,
            safety_level_set=row.safety_level_set,
            reason=row.reason,
            source_type=row.source_type,
            source_id=row.source_id,
            actor=row.actor,
            created_at=row.created_at,
        )

    @strawberry.field
    async def store(self, info: Info) -> Store | None:
        return await _store(info, self.store_pk)

    @strawberry.field
    async def sku(self, info: Info) -> Sku:
        return await _sku(info, self.sku_pk)


@strawberry.type(
    description="库存预警: available stock fell below the safety level. One is open per "
    "location and SKU at a time; it resolves when available stock is back at the level."
)
class StockAlert(Node):
    available: int = strawberry.field(description="Available units when it was raised.")
    safety_level: int
    raised_at: datetime
    resolved_at: datetime | None
    open: bool
    store_pk: strawberry.Private[int]
    sku_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.StockAlert) -> StockAlert:
        return cls(
            id=strawberry.ID(encode_id("StockAlert", row.id)),
            store_pk=row.store_id,
            sku_pk=row.sku_id,
            available=row.available,
            safety_level=row.safety_level,
            raised_at=row.raised_at,
            resolved_at=row.resolved_at,
            open=row.resolved_at is None,
        )

    @strawberry.field
    async def store(self, info: Info) -> Store | None:
        return await _store(info, self.store_pk)

    @strawberry.field
    async def sku(self, info: Info) -> Sku:
        return await _sku(info, self.sku_pk)


async def _load_levels(ctx: Context, pks: Sequence[int]) -> list[StockLevel | None]:
    rows = await ctx.loader(loaders.levels_by_pk).load_many(pks)
    return [StockLevel.from_row(r) if r else None for r in rows]


async def _load_movements(ctx: Context, pks: Sequence[int]) -> list[StockMovement | None]:
    rows = await ctx.loader(loaders.movements_by_pk).load_many(pks)
    return [StockMovement.from_row(r) if r else None for r in rows]


async def _load_alerts(ctx: Context, pks: Sequence[int]) -> list[StockAlert | None]:
    rows = await ctx.loader(loaders.alerts_by_pk).load_many(pks)
    return [StockAlert.from_row(r) if r else None for r in rows]


# --- queries --------------------------------------------------------------------------------


def _pks(ids: list[strawberry.ID] | None, type_name: str) -> list[int]:
    return [decode_id_of(i, type_name) for i in ids or ()]


@strawberry.input
class StockLevelFilter:
    store_ids: list[strawberry.ID] | None = None
    sku_ids: list[strawberry.ID] | None = None
    below_safety: bool | None = strawberry.field(
        default=None, description="true: only levels whose available stock is below safety."
    )

    def to_service(self) -> queries.LevelFilter:
        return queries.LevelFilter(
            store_ids=_pks(self.store_ids, "Store"),
            sku_ids=_pks(self.sku_ids, "Sku"),
            below_safety=self.below_safety,
        )


@strawberry.input
class StockMovementFilter:
    store_ids: list[strawberry.ID] | None = None
    sku_ids: list[strawberry.ID] | None = None
    kinds: list[StockMovementKind] | None = None  # type: ignore[valid-type]  # strawberry.enum() value

    def to_service(self) -> queries.MovementFilter:
        return queries.MovementFilter(
            store_ids=_pks(self.store_ids, "Store"),
            sku_ids=_pks(self.sku_ids, "Sku"),
            kinds=self.kinds or (),
        )


@strawberry.input
class StockAlertFilter:
    store_ids: list[strawberry.ID] | None = None
    sku_ids: list[strawberry.ID] | None = None
    include_resolved: bool = strawberry.field(
        default=False, description="true: resolved alerts too (default: open ones only)."
    )

    def to_service(self) -> queries.AlertFilter:
        return queries.AlertFilter(
            store_ids=_pks(self.store_ids, "Store"),
            sku_ids=_pks(self.sku_ids, "Sku"),
            include_resolved=self.include_resolved,
        )


@strawberry.type
class InventoryQuery:
    @connection(
        Connection[StockLevel],
        description="Stock levels of the locations you may see, by id.",
        permission_classes=[StockReaders],
    )
    async def stock_levels(
        self,
        info: Info,
        filter: StockLevelFilter | None = None,
    ) -> Rows[StockLevel]:
        ctx = info.context
        stmt = queries.levels_query(ctx.principal, filter.to_service() if filter else None)
        return Rows(stmt, queries.LEVEL_KEYSET, StockLevel.from_row)

    @connection(
        Connection[StockMovement],
        description="The movement log of the locations you may see, newest first.",
        permission_classes=[StockReaders],
    )
    async def stock_movements(
        self,
        info: Info,
        filter: StockMovementFilter | None = None,
    ) -> Rows[StockMovement]:
        ctx = info.context
        stmt = queries.movements_query(ctx.principal, filter.to_service() if filter else None)
        return Rows(stmt, queries.MOVEMENT_KEYSET, StockMovement.from_row, reverse=True)

    @connection(
        Connection[StockAlert],
        description="Low-stock alerts of the locations you may see, newest first: open ones, "
        "or with `includeResolved` all.",
        permission_classes=[StockReaders],
    )
    async def stock_alerts(
        self,
        info: Info,
        filter: StockAlertFilter | None = None,
    ) -> Rows[StockAlert]:
        ctx = info.context
        stmt = queries.alerts_query(ctx.principal, filter.to_service() if filter else None)
        return Rows(stmt, queries.ALERT_KEYSET, StockAlert.from_row, reverse=True)


# --- mutations ------------------------------------------------------------------------------


@strawberry.type
class StockError(UserError):
    code: StockErrorCode  # type: ignore[valid-type]  # strawberry.enum() value


@strawberry.input
class StockAdjustInput:
    store_id: strawberry.ID = strawberry.field(
        description="A location of yours (store staff: their store)."
    )
    sku_id: strawberry.ID
    mode: StockAdjustMode  # type: ignore[valid-type]  # strawberry.enum() value
    quantity: int = strawberry.field(
        description="SET: the units on hand now (≥ 0). DELTA: the change (≠ 0; 0 only with "
        "a safetyLevel). On hand never goes below what is reserved: BELOW_RESERVED."
    )
    reason: str = strawberry.field(description=f"Why, at most {movements.MAX_REASON} characters.")
    idempotency_key: str = strawberry.field(
        description="Retrying with the same key returns the first adjustment (replayed: true); "
        "the same key with another location, SKU, mode, quantity, safety level or reason is "
        f"IDEMPOTENCY_KEY_REUSED. Keys are yours alone (per partner, or HQ). At most "
        f"{adjusting.MAX_KEY} printable ASCII characters."
    )
    safety_level: int | None = strawberry.field(
        default=None, description="安全库存: set it too (omit to keep it)."
    )


@strawberry.type
class StockAdjustPayload:
    stock_level: StockLevel | None = strawberry.field(default=None, description="As it is now.")
    movement: StockMovement | None = strawberry.field(
        default=None, description="The adjustment, as first made."
    )
    replayed: bool = strawberry.field(
        default=False, description="true: a retry with the same key; nothing changed."
    )
    errors: list[StockError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=adjusting.StockErrorCode.INVALID)


@strawberry.type
class InventoryMutation:
    @strawberry.mutation(
        description="Count (SET) or correct (DELTA) a location's stock of a SKU, with a reason; "
        "HQ for every location, a partner (stock:write) for its own, store staff for theirs.",
        permission_classes=[requires("stock:write")],
    )
    async def stock_adjust(self, info: Info, input: StockAdjustInput) -> StockAdjustPayload:
        async def change(work: UnitOfWork) -> StockAdjustPayload:
            draft = adjusting.AdjustDraft(
                store_id=_pk(input.store_id, "Store", "storeId"),
                sku_id=_pk(input.sku_id, "Sku", "skuId"),
                mode=input.mode,
                quantity=input.quantity,
                reason=input.reason,
                idempotency_key=input.idempotency_key,
                safety_level=input.safety_level,
            )
            result = await adjusting.adjust(work.session, work.principal, draft, now=utcnow())
            work.touched("StockMovement", result.movement.id)
            return StockAdjustPayload(
                stock_level=StockLevel.from_row(result.level),
                movement=StockMovement.from_row(result.movement),
                replayed=result.replayed,
            )

        return await run_mutation(info, StockAdjustPayload, change)


__all__ = ["InventoryMutation", "InventoryQuery", "StockAlert", "StockLevel", "StockMovement"]


# Last: the subscription reads this module's StockAlert and StockReaders.
from api.inventory.subscriptions import InventorySubscription  # noqa: E402

schema_parts = SchemaParts(
    query=InventoryQuery,
    mutation=InventoryMutation,
    subscription=InventorySubscription,
    types=[StockLevel, StockMovement, StockAlert],
    nodes={
        "StockLevel": _load_levels,
        "StockMovement": _load_movements,
        "StockAlert": _load_alerts,
    },
)
