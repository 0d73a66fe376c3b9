"""Refunding some lines of a completed order (or all that is left): the money pro rata to the
cent, the goods restocked, the points taken back and given back in the refund's share, the
coupons released after a refund in full, the spend netted out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.customers.qualification import record_spend
from api.db import update_returning
from api.errors import DomainError, Problem
from api.inventory import movements
from api.loyalty import reversals as loyalty_reversals
from api.loyalty import spending as loyalty_spending
from api.loyalty.rules import PointsPolicy
from api.orders.errors import OrderErrorCode
from api.orders.lifecycle.common import (
    COMPLETED_STATUSES,
    MAX_REASON,
    REFUNDABLE,
    history,
    invalid_status,
    not_found,
    order_lines,
    sku_items,
    staff_only,
)
from api.orders.lifecycle.locking import claim, scoped_ids, take_as_owner
from api.orders.lifecycle.undoing import release_coupons
from api.orders.models import (
    ORDER_SOURCE,
    Order,
    OrderLine,
    OrderRefund,
    OrderRefundLine,
    OrderStatus,
)
from api.orders.notify import publish, recipient
from api.orders.reactions import OrderChange, OrdersWiring
from api.outbox.service import enqueue

REFUND_SOURCE = "order_refund"  # a refund's restock, points and spend, by refund id
MAX_KEY = 100
MAX_REFUND_LINES = 500
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class RefundLineDraft:
    line_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class RefundDraft:
    """``lines`` None: everything not refunded yet."""

    idempotency_key: str
    reason: str
    lines: tuple[RefundLineDraft, ...] | None = None
    restock: bool = True


@dataclass(frozen=True, slots=True)
class RefundResult:
    order: Order
    refund: OrderRefund
    lines: list[OrderRefundLine]
    created: bool  # False: a retry with the same key returned the first refund


def _digest(draft: RefundDraft) -> str:
    lines = None if draft.lines is None else sorted((x.line_id, x.quantity) for x in draft.lines)
    canonical = {"lines": lines, "reason": draft.reason.strip(), "restock": draft.restock}
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_refund(draft: RefundDraft) -> str:
    problems: list[Problem] = []
    key = draft.idempotency_key
    if not key or not key.strip() or len(key) > MAX_KEY:
        problems.append(
            Problem(
                OrderErrorCode.INVALID,
                f"An idempotency key of 1 to {MAX_KEY} characters.",
                ("idempotencyKey",),
            )
        )
    note = (draft.reason or "").strip()
    if not note or len(note) > MAX_REASON:
        problems.append(
            Problem(
                OrderErrorCode.INVALID, f"A reason of 1 to {MAX_REASON} characters.", ("reason",)
            )
        )
    if draft.lines is not None:
        if not draft.lines:
            problems.append(
                Problem(
                    OrderErrorCode.REQUIRED,
                    "Name the lines to refund, or omit them to refund the rest.",
                    ("lines",),
                )
            )
        if len(draft.lines) > MAX_REFUND_LINES:
            problems.append(
                Problem(OrderErrorCode.INVALID, f"At most {MAX_REFUND_LINES} lines.", ("lines",))
            )
        seen: set[int] = set()
        for index, line in enumerate(draft.lines):
            if line.line_id in seen:
                problems.append(
                    Problem(
                        OrderErrorCode.INVALID,
                        "This line is named twice.",
                        ("lines", str(index), "lineId"),
                    )
                )
            seen.add(line.line_id)
            if line.quantity <= 0:
                problems.append(
                    Problem(
                        OrderErrorCode.INVALID,
                        "Refund at least one unit.",
                        ("lines", str(index), "quantity"),
                    )
                )
    if problems:
        raise DomainError(problems)
    return note


def _down_to_cent(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_DOWN)


def _line_amount(line: OrderLine, already: int, units: int) -> Decimal:
    """What ``units`` more of a line give back: its paid total pro rata by quantity, each
    share rounded down to the cent, so the last unit takes the remainder and a line's
    refunds add up to exactly its total."""
    if already + units == line.quantity:
        after = line.total
    else:
        after = _down_to_cent(line.total * (already + units) / line.quantity)
    before = _down_to_cent(line.total * already / line.quantity)
    return after - before


def _share(whole: int, part: Decimal, of: Decimal) -> int:
    """``whole × part / of`` rounded down (points are whole)."""
    return int((Decimal(whole) * part / of).to_integral_value(rounding=ROUND_DOWN))


async def refund(
    session: AsyncSession,
    principal: Principal,
    order_id: int,
    draft: RefundDraft,
    *,
    now: datetime,
    wiring: OrdersWiring,
) -> RefundResult:
    """Refund some lines of a completed order (or all that is left).

    The money: each line's paid total pro rata by quantity, to the cent (see
    ``_line_amount``). The goods: restocked at the order's store when asked and the order
    had one. The points: the order's earning is taken back in the share of the order's
    paid total refunded so far (the refund that completes the order takes what is left, so
    the reversals add up to the earning), never below zero: a shortfall is debt; the points
    it paid with come back in the same share. Coupons: a refund in full restores or voids
    them per template; after a partial refund they stay used. Spend for member levels is
    recorded as negative, dated with the sale.

    Idempotent by ``draft.idempotency_key`` within the order (the same key for another
    request is IDEMPOTENCY_KEY_REUSED). The order's customer is locked first, then the
    order row (SELECT ... FOR UPDATE), so concurrent refunds of one order queue; each line's
    ``refunded_quantity`` and the order's ``refunded_amount`` then move by guarded UPDATEs
    that can never exceed them.
    """
    staff_only(principal, "refund orders")
    note = _check_refund(draft)
    order = await _lock_order(session, principal, order_id)
    digest = _digest(draft)
    first = await _first_refund(session, order, draft.idempotency_key, digest)
    if first is not None:
        return first
    if order.status not in COMPLETED_STATUSES:
        raise invalid_status(order.status)
    lines = await order_lines(session, order.id)
    units = _refund_units(lines, draft)
    amount, line_amounts = await _take_units(session, lines, units)
    whole = all(line.refunded_quantity + units.get(line.id, 0) == line.quantity for line in lines)
    status = OrderStatus.REFUNDED if whole else OrderStatus.PARTIALLY_REFUNDED
    refunded = await claim(
        session,
        update(Order)
        .where(
            Order.id == order.id,
            Order.status.in_(REFUNDABLE),
            Order.refunded_amount + amount <= Order.total,
        )
        .values(refunded_amount=Order.refunded_amount + amount, status=status, updated_at=now),
    )
    if refunded is None:  # the lines' totals add up to the order's: impossible under the lock
        raise RuntimeError(f"order {order_id}: refund exceeds the order under its lock")
    order = refunded
    restock = draft.restock and order.store_id is not None
    record, refund_lines = await _record(
        session,
        order,
        draft,
        digest,
        note,
        principal.subject,
        (amount, line_amounts),
        units,
        now,
        restock=restock,
    )
    await _give_back(
        session, order, record, lines, units, whole=whole, restock=restock, now=now, wiring=wiring
    )
    history(session, order, note, principal.subject, now)
    await wiring.changed(session, OrderChange.REFUNDED, [order.id], [order.customer_id], now)
    publish(session, order, "refunded")
    await _tell_customer(session, order, record, now)
    return RefundResult(order, record, refund_lines, created=True)


async def _record(
    session: AsyncSession,
    order: Order,
    draft: RefundDraft,
    digest: str,
    note: str,
    actor: str,
    amounts: tuple[Decimal, dict[int, Decimal]],
    units: dict[int, int],
    now: datetime,
    *,
    restock: bool,
) -> tuple[OrderRefund, list[OrderRefundLine]]:
    """The refund's row and its lines; ``amounts``: the refund's and each line's."""
    amount, line_amounts = amounts
    record = OrderRefund(
        order_id=order.id,
        idempotency_key=draft.idempotency_key,
        request_digest=digest,
        amount=amount,
        points_reversed=0,
        points_returned=0,
        reason=note,
        actor=actor,
        created_at=now,
    )
    session.add(record)
    await session.flush()
    refund_lines = [
        OrderRefundLine(
            refund_id=record.id,
            order_line_id=line_id,
            quantity=count,
            amount=line_amounts[line_id],
            restocked=restock,
        )
        for line_id, count in units.items()
    ]
    session.add_all(refund_lines)
    return record, refund_lines


async def _tell_customer(
    session: AsyncSession, order: Order, record: OrderRefund, now: datetime
) -> None:
    """The outbox message of the refund to the order's customer."""
    await enqueue(
        session,
        "order.refunded",
        recipient(order),
        {
            "orderId": order.id,
            "refundId": record.id,
            "amount": str(record.amount),
            "currency": order.currency,
            "refundedAmount": str(order.refunded_amount),
            "status": order.status.value,
        },
        now=now,
    )


async def _lock_order(session: AsyncSession, principal: Principal, order_id: int) -> Order:
    """The order, its customer locked first, then its row (SELECT ... FOR UPDATE) whatever
    its status; NOT_FOUND outside the principal's scope."""

    # The order row's lock, whatever its status (SQLite: the transaction's BEGIN IMMEDIATE).
    async def lock(guard: Sequence[Any]) -> Order | None:
        stmt = select(Order).where(*guard).with_for_update()
        return (await session.scalars(stmt.execution_options(populate_existing=True))).first()

    order = await take_as_owner(
        session, [Order.id == order_id, Order.id.in_(scoped_ids(principal))], lock
    )
    if order is None:
        raise not_found()
    return order


async def _first_refund(
    session: AsyncSession, order: Order, key: str, digest: str
) -> RefundResult | None:
    """The refund a retry with this key made first, if any (IDEMPOTENCY_KEY_REUSED when
    it asked for something else)."""
    existing = await session.scalar(
        select(OrderRefund).where(
            OrderRefund.order_id == order.id, OrderRefund.idempotency_key == key
        )
    )
    if existing is None:
        return None
    if existing.request_digest != digest:
        raise DomainError.one(
            OrderErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This idempotency key was used for a different refund of this order.",
            "idempotencyKey",
        )
    lines_of = select(OrderRefundLine).where(OrderRefundLine.refund_id == existing.id)
    return RefundResult(order, existing, list(await session.scalars(lines_of)), created=False)


async def _take_units(
    session: AsyncSession, lines: Sequence[OrderLine], units: dict[int, int]
) -> tuple[Decimal, dict[int, Decimal]]:
    """Count the units as refunded on each line (a guarded UPDATE that never exceeds its
    quantity); the refund's amount and each line's."""
    by_id = {line.id: line for line in lines}
    amount = Decimal(0)
    line_amounts: dict[int, Decimal] = {}
    for line_id, count in units.items():
        line = by_id[line_id]
        grown = await update_returning(
            session,
            update(OrderLine)
            .where(
                OrderLine.id == line_id,
                OrderLine.refunded_quantity + count <= OrderLine.quantity,
            )
            .values(refunded_quantity=OrderLine.refunded_quantity + count)
            .returning(OrderLine.refunded_quantity),
        )
        if grown is None:  # the order lock makes this impossible; never refund twice
            raise RuntimeError(f"order line {line_id} changed under the order lock")
        line_amounts[line_id] = _line_amount(line, grown.refunded_quantity - count, count)
        amount += line_amounts[line_id]
    return amount, line_amounts


async def _give_back(
    session: AsyncSession,
    order: Order,
    record: OrderRefund,
    lines: Sequence[OrderLine],
    units: dict[int, int],
    *,
    whole: bool,
    restock: bool,
    now: datetime,
    wiring: OrdersWiring,
) -> None:
    """What the refund undoes in the other domains: the goods back on the shelf, the
    points, the coupons (in full only), the spend toward member levels."""
    source_id = str(record.id)
    if restock:
        assert order.store_id is not None
        await movements.restock(
            session,
            order.store_id,
            items=sku_items(lines, units),
            source_type=REFUND_SOURCE,
            source_id=source_id,
            reason=f"refund of order {order.id}: {record.reason}"[:MAX_REASON],
            actor=record.actor,
            now=now,
        )
    await _refund_points(
        session, order, record, lines, units, whole, now, wiring.settings.points_policy
    )
    if whole:
        await release_coupons(session, order, now)
    # Imported marketplace orders never counted toward levels, so their refunds do not either.
    if order.customer_id is not None and order.external_id is None and record.amount > 0:
        await record_spend(
            session,
            order.customer_id,
            -record.amount,
            source_type=REFUND_SOURCE,
            source_id=source_id,
            # Dated with the sale, so it nets the sale out of every window that counts it.
            at=order.placed_at,
            now=now,
        )


def _refund_units(lines: Sequence[OrderLine], draft: RefundDraft) -> dict[int, int]:
    """line id → units to refund; REFUND_EXCEEDS naming each line asked beyond what is left
    (NOT_FOUND for a line of another order)."""
    left = {line.id: line.quantity - line.refunded_quantity for line in lines}
    if draft.lines is None:
        units = {line_id: n for line_id, n in left.items() if n > 0}
        if not units:
            raise DomainError.one(
                OrderErrorCode.REFUND_EXCEEDS, "Nothing is left to refund.", "lines"
            )
        return units
    by_id = {line.id: line for line in lines}
    problems: list[Problem] = []
    for index, asked in enumerate(draft.lines):
        line = by_id.get(asked.line_id)
        if line is None:
            problems.append(
                Problem(
                    OrderErrorCode.NOT_FOUND,
                    "No such line on this order.",
                    ("lines", str(index), "lineId"),
                )
            )
        elif asked.quantity > left[line.id]:
            problems.append(
                Problem(
                    OrderErrorCode.REFUND_EXCEEDS,
                    f"Line {line.line_no} ({line.sku_code}): {left[line.id]} of "
                    f"{line.quantity} left to refund; {asked.quantity} asked.",
                    ("lines", str(index), "quantity"),
                )
            )
    if problems:
        raise DomainError(problems)
    return {asked.line_id: asked.quantity for asked in draft.lines}


async def _refund_points(
    session: AsyncSession,
    order: Order,
    record: OrderRefund,
    lines: Sequence[OrderLine],
    units: dict[int, int],
    whole: bool,
    now: datetime,
    policy: PointsPolicy,
) -> None:
    """Take back the refund's share of the points the order earned and give back its share
    of the points it paid with. The share is cumulative (refunded so far ÷ paid, or units
    refunded so far ÷ units when nothing was paid) less what earlier refunds moved, so
    rounding never drifts and the refund in full moves exactly what is left."""
    if order.customer_id is None or (order.points_earned <= 0 and order.points_used <= 0):
        return
    earlier_reversed, earlier_returned = (
        await session.execute(
            select(
                func.coalesce(func.sum(OrderRefund.points_reversed), 0),
                func.coalesce(func.sum(OrderRefund.points_returned), 0),
            ).where(OrderRefund.order_id == order.id, OrderRefund.id != record.id)
        )
    ).one()
    if order.total > 0:
        part, of = order.refunded_amount, order.total
    else:  # ``lines`` as read before this refund's units were added
        part = Decimal(sum(line.refunded_quantity for line in lines) + sum(units.values()))
        of = Decimal(sum(line.quantity for line in lines))

    def due(points: int, moved: int) -> int:
        return (points if whole else _share(points, part, of)) - int(moved)

    reason = f"refund of order {order.id}"
    reversed_points = returned_points = 0
    if (take := due(order.points_earned, earlier_reversed)) > 0:
        entry = await loyalty_reversals.reverse_part(
            session,
            earning_source_type=ORDER_SOURCE,
            earning_source_id=str(order.id),
            points=take,
            source_type=REFUND_SOURCE,
            source_id=str(record.id),
            reason=reason,
            actor=record.actor,
            now=now,
            customer_id=order.customer_id,
        )
        if entry is not None:
            reversed_points = entry.debt_delta - entry.amount - entry.pending_delta
    if (give := due(order.points_used, earlier_returned)) > 0:
        entry = await loyalty_spending.return_spent(
            session,
            redemption_source_type=ORDER_SOURCE,
            redemption_source_id=str(order.id),
            points=give,
            source_type=REFUND_SOURCE,
            source_id=str(record.id),
            reason=reason,
            actor=record.actor,
            now=now,
            customer_id=order.customer_id,
            policy=policy,
        )
        if entry is not None:
            returned_points = entry.amount - entry.debt_delta
    # Set together, after the ledger's reads: one UPDATE of the refund row.
    record.points_reversed, record.points_returned = reversed_points, returned_points
    await session.flush()
