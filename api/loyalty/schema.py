"""GraphQL surface of the points ledger: thin wrappers over its services and loaders.py.

``customer_points`` and ``customer_points_ledger`` are what the customers domain wires into
``Customer.points`` and ``Customer.pointsLedger``; both batch through DataLoaders, so a page
of customers costs a fixed number of statements. This module must not import
``api.customers.graphql`` at module level (that one imports this).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial

import strawberry

from api.db import utcnow
from api.errors import DomainError, InputError
from api.graphql.context import Context, Info
from api.graphql.errors import UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Children, Connection, Node, Rows, connection
from api.loyalty import adjustments, balances, earning, errors, loaders, models, rules

# strawberry.enum gives an enum class its GraphQL name and description and returns the class
# itself, so each GraphQL enum is an alias of its domain enum: fields annotated with it are
# checked like any other type.
PointsEntryKind = models.EntryKind
strawberry.enum(
    PointsEntryKind,
    name="PointsEntryKind",
    description="What a ledger entry records: EARN, RELEASE (pending points unlocked), REDEEM, "
    "EXPIRE, REVERSE (an earning undone), ADJUST (manual), TRANSFER (a customer merge), "
    "RETURN (points an order spent, given back when it is cancelled, expires or is refunded).",
)
PointsErrorCode = errors.PointsErrorCode
strawberry.enum(PointsErrorCode)


@strawberry.type(
    description="A customer's points right now. Lots past their expiry do not count even "
    "before the expiry job has run; pending points whose return window has passed count as "
    "spendable even before the release job has run."
)
class PointsBalance:
    balance: int = strawberry.field(description="Spendable points.")
    pending: int = strawberry.field(description="Earned, unlocking after the return window.")
    expiring_soon: int = strawberry.field(
        description="Spendable points that expire within 30 days."
    )
    next_expires_at: datetime | None = strawberry.field(
        description="When the next spendable points expire (null: none do)."
    )
    debt: int = strawberry.field(
        description="Points owed from reversed earnings already spent; settled from the "
        "next points."
    )

    @classmethod
    def of(cls, balance: balances.Balance) -> PointsBalance:
        return cls(
            balance=balance.balance,
            pending=balance.pending,
            expiring_soon=balance.expiring_soon,
            next_expires_at=balance.next_expires_at,
            debt=balance.debt,
        )


@strawberry.type(description="One line of a customer's points ledger (append-only).")
class PointsEntry(Node):
    kind: PointsEntryKind
    amount: int = strawberry.field(description="Change of the spendable balance.")
    pending_delta: int = strawberry.field(description="Change of the pending points.")
    debt_delta: int = strawberry.field(description="Change of the points owed.")
    balance_after: int
    reason: str
    source_type: str = strawberry.field(description="What caused it: order, adjust, lot, ...")
    source_id: str
    actor: str | None
    created_at: datetime
    expires_at: datetime | None = strawberry.field(
        description="When the points of this entry's lot expire, for entries of one lot."
    )
    pk: strawberry.Private[int]
    customer_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: tuple[models.PointsEntry, datetime | None]) -> PointsEntry:
        entry, expires_at = row
        return cls(
            id=strawberry.ID(encode_id("PointsEntry", entry.id)),
            pk=entry.id,
            customer_pk=entry.customer_id,
            kind=entry.kind,
            amount=entry.amount,
            pending_delta=entry.pending_delta,
            debt_delta=entry.debt_delta,
            balance_after=entry.balance_after,
            reason=entry.reason,
            source_type=entry.source_type,
            source_id=entry.source_id,
            actor=entry.actor,
            created_at=entry.created_at,
            expires_at=expires_at,
        )


@strawberry.type(
    description="How purchases earn points: the highest priority matching rule, then the "
    "most specific, prices each line at amount × pointsPerYuan × multiplier, rounded down. "
    "Empty conditions match everything."
)
class PointsEarningRule(Node):
    name: str
    channel: str | None
    store_id: strawberry.ID | None
    sku: str | None
    level_id: strawberry.ID | None
    points_per_yuan: Decimal
    multiplier: Decimal
    priority: int
    starts_at: datetime | None
    ends_at: datetime | None
    active: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.PointsEarningRule) -> PointsEarningRule:
        return cls(
            id=strawberry.ID(encode_id("PointsEarningRule", row.id)),
            name=row.name,
            channel=row.channel,
            store_id=strawberry.ID(encode_id("Store", row.store_id)) if row.store_id else None,
            sku=row.sku,
            level_id=strawberry.ID(encode_id("MemberLevel", row.level_id))
            if row.level_id
            else None,
            points_per_yuan=row.points_per_yuan,
            multiplier=row.multiplier,
            priority=row.priority,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            active=row.active,
            created_at=row.created_at,
        )


async def customer_points(info: Info, customer_pk: int) -> PointsBalance:
    """``Customer.points``: batched, one statement for all customers of a request."""
    balance = await info.context.loader(loaders.balances_by_customer).load(customer_pk)
    return PointsBalance.of(balance)


def customer_points_ledger(customer_pk: int) -> Children[PointsEntry]:
    """``Customer.pointsLedger``, newest first: one statement pages every customer's ledger
    (and one more counts them, only when ``totalCount`` is asked for)."""
    return Children(
        loaders.entry_pages_by_customer,
        loaders.entry_counts_by_customer,
        customer_pk,
        PointsEntry.from_row,
    )


async def _load_entries(ctx: Context, pks: Sequence[int]) -> list[PointsEntry | None]:
    # Ledger lines are customer data: the same scope as reading the customer.
    if not ctx.principal.has_scope("customers:read"):
        return [None] * len(pks)
    rows = await ctx.loader(loaders.entries_by_pk).load_many(pks)
    return [PointsEntry.from_row(r) if r else None for r in rows]


async def _load_rules(ctx: Context, pks: Sequence[int]) -> list[PointsEarningRule | None]:
    if not ctx.principal.has_scope("customers:read"):
        return [None] * len(pks)
    rows = await ctx.loader(loaders.earning_rules_by_pk).load_many(pks)
    return [PointsEarningRule.from_row(r) if r else None for r in rows]


# --- queries ----------------------------------------------------------------------------------


@strawberry.input
class PointsQuoteLineInput:
    sku: str
    amount: Decimal = strawberry.field(description="What the line costs, in yuan.")


@strawberry.type
class PointsQuoteLine:
    sku: str
    amount: Decimal
    points: int
    rule: PointsEarningRule | None = strawberry.field(
        description="The rule that priced the line; null when none matched."
    )


@strawberry.type(description="What a cart would earn now (nothing is written).")
class PointsQuote:
    points: int
    lines: list[PointsQuoteLine]


@strawberry.type
class LoyaltyQuery:
    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="How many points a cart would earn for a customer now; null when the "
        "customer does not exist or is not yours. A storeId that does not exist or is not "
        "yours is a BAD_USER_INPUT error.",
    )
    async def points_quote(
        self,
        info: Info,
        customer_id: strawberry.ID,
        channel: str,
        lines: list[PointsQuoteLineInput],
        store_id: strawberry.ID | None = None,
    ) -> PointsQuote | None:
        ctx = info.context
        customer_pk = decode_id_of(customer_id, "Customer")
        store_pk = decode_id_of(store_id, "Store") if store_id else None
        now = utcnow()
        async with ctx.db.read() as session:
            live = await balances.visible_customer_id(session, ctx.principal, customer_pk)
            if live is None:
                return None
            # A store the caller may not see is a missing store: never price a cart with
            # another partner's store rules (the total would reveal them).
            if store_pk is not None and (
                await balances.visible_store_id(session, ctx.principal, store_pk) is None
            ):
                raise InputError("No such store.")
            level_id = await balances.customer_level_id(session, live)
            purchase = rules.Purchase(
                source_id="quote",
                channel=channel,
                store_id=store_pk,
                level_id=level_id,
                lines=[rules.PurchaseLine(line.sku, line.amount) for line in lines],
            )
            try:
                quoted = await earning.quote_purchase(session, purchase, now)
            except DomainError as error:
                raise InputError(str(error)) from None
            rule_rows = await earning.earning_rules_by_id(
                session, ctx.principal, [q.rule_id for q in quoted.lines if q.rule_id]
            )
        return PointsQuote(
            points=quoted.points,
            lines=[
                PointsQuoteLine(
                    sku=q.sku,
                    amount=q.amount,
                    points=q.points,
                    rule=PointsEarningRule.from_row(rule_rows[q.rule_id])
                    if q.rule_id in rule_rows
                    else None,
                )
                for q in quoted.lines
            ],
        )

    @connection(
        Connection[PointsEarningRule],
        permission_classes=[requires("customers:read")],
        description="The points earning rules, oldest first.",
    )
    async def points_earning_rules(self, info: Info) -> Rows[PointsEarningRule]:
        stmt = earning.earning_rules_query(info.context.principal)
        return Rows(stmt, earning.RULE_KEYSET, PointsEarningRule.from_row)


# --- mutations --------------------------------------------------------------------------------


@strawberry.type
class PointsError(UserError):
    code: PointsErrorCode


MAX_KEY_LENGTH = 64


@strawberry.input
class PointsAdjustInput:
    customer_id: strawberry.ID
    amount: int = strawberry.field(
        description=f"Points to grant (> 0) or deduct (< 0); at most "
        f"{adjustments.MAX_ADJUST_POINTS} either way."
    )
    reason: str
    idempotency_key: str = strawberry.field(
        description="Retrying with the same key returns the first result; the same key with "
        f"other arguments is IDEMPOTENCY_KEY_REUSED. At most {MAX_KEY_LENGTH} characters."
    )


@strawberry.type
class PointsAdjustPayload:
    entry: PointsEntry | None = None
    balance: PointsBalance | None = None
    errors: list[PointsError] = strawberry.field(default_factory=list)


@strawberry.input
class PointsEarningRuleCreateInput:
    name: str
    points_per_yuan: Decimal = Decimal(1)
    multiplier: Decimal = Decimal(1)
    channel: str | None = None
    store_id: strawberry.ID | None = None
    sku: str | None = None
    level_id: strawberry.ID | None = None
    priority: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    active: bool = True


@strawberry.type
class PointsEarningRuleCreatePayload:
    rule: PointsEarningRule | None = None
    errors: list[PointsError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=errors.PointsErrorCode.INVALID)


def _key_namespace(ctx: Context) -> str:
    """Idempotency keys are per caller: one partner's key can never return (or block)
    another's adjustment."""
    principal = ctx.principal
    if principal.is_hq:
        return "hq"
    return f"partner:{principal.partner_id}"


@strawberry.type
class LoyaltyMutation:
    @strawberry.mutation(
        permission_classes=[requires("points:write")],
        description="Grant or deduct points. Deductions never take the balance below zero "
        "(INSUFFICIENT_POINTS). A partner may adjust only the customers it recruited.",
    )
    async def points_adjust(self, info: Info, input: PointsAdjustInput) -> PointsAdjustPayload:
        async def change(work: UnitOfWork) -> PointsAdjustPayload:
            now = utcnow()
            customer_pk = _pk(input.customer_id, "Customer", "customerId")
            if not input.idempotency_key or len(input.idempotency_key) > MAX_KEY_LENGTH:
                raise DomainError.one(
                    errors.PointsErrorCode.INVALID,
                    f"An idempotency key of 1 to {MAX_KEY_LENGTH} characters.",
                    "idempotencyKey",
                )
            entry = await adjustments.adjust(
                work.session,
                customer_pk,
                input.amount,
                idempotency_key=f"{_key_namespace(work.context)}:{input.idempotency_key}",
                reason=input.reason,
                actor=work.principal.subject,
                now=now,
                principal=work.principal,
                policy=work.context.settings.points_policy,
            )
            # Read in the same transaction: a saved adjustment is never answered with an
            # error by a read after its commit. A retry after a merge returns the entry of the
            # merged id; the points are with the survivor now, so that is the balance to show.
            holder = await balances.live_customer_id(work.session, entry.customer_id)
            holder = entry.customer_id if holder is None else holder
            found = await balances.balances_of(work.session, [holder], utcnow())
            expires = await balances.lot_expiries(
                work.session, [entry.lot_id] if entry.lot_id else []
            )
            work.touched("PointsEntry", entry.id)
            return PointsAdjustPayload(
                entry=PointsEntry.from_row((entry, expires.get(entry.lot_id or 0))),
                balance=PointsBalance.of(found[holder]),
            )

        return await run_mutation(info, PointsAdjustPayload, change)

    @strawberry.mutation(permission_classes=[requires("loyalty:write")])
    async def points_earning_rule_create(
        self, info: Info, input: PointsEarningRuleCreateInput
    ) -> PointsEarningRuleCreatePayload:
        async def change(work: UnitOfWork) -> PointsEarningRuleCreatePayload:
            draft = earning.EarningRuleDraft(
                name=input.name,
                points_per_yuan=input.points_per_yuan,
                multiplier=input.multiplier,
                channel=input.channel,
                store_id=_pk(input.store_id, "Store", "storeId") if input.store_id else None,
                sku=input.sku,
                level_id=_pk(input.level_id, "MemberLevel", "levelId") if input.level_id else None,
                priority=input.priority,
                starts_at=input.starts_at,
                ends_at=input.ends_at,
                active=input.active,
            )
            row = await earning.create_earning_rule(work.session, work.principal, draft, utcnow())
            work.touched("PointsEarningRule", row.id)
            return PointsEarningRuleCreatePayload(rule=PointsEarningRule.from_row(row))

        return await run_mutation(info, PointsEarningRuleCreatePayload, change)


__all__ = [
    "LoyaltyMutation",
    "LoyaltyQuery",
    "PointsBalance",
    "PointsEntry",
    "customer_points",
    "customer_points_ledger",
]


schema_parts = SchemaParts(
    query=LoyaltyQuery,
    mutation=LoyaltyMutation,
    types=[PointsEntry, PointsEarningRule],
    nodes={"PointsEntry": _load_entries, "PointsEarningRule": _load_rules},
)
