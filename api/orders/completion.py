"""A sale is done (handed over at the counter, shipped, picked up): what it earns. Placing
an order completes a sale at once; a pickup order's completes when it is picked up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.customers import qualification as customer_qualification
from api.errors import DomainError
from api.loyalty import balances as loyalty_balances
from api.loyalty import earning as loyalty_earning
from api.loyalty.rules import PointsPolicy, Purchase, PurchaseLine
from api.orders.errors import OrderErrorCode, translated
from api.orders.models import ORDER_SOURCE, Order, OrderLine


async def complete_sale(
    session: AsyncSession,
    order: Order,
    lines: Sequence[OrderLine],
    *,
    actor: str | None,
    now: datetime,
    policy: PointsPolicy,
) -> None:
    """A sale is done (handed over, shipped, picked up): the customer earns points for what
    they paid on each line, by the earning rules (pending for the return window), and the
    spend counts toward their member level. Both are idempotent by the order's id, so a retry
    adds nothing. Sets ``order.points_earned``. An order without a customer earns nothing."""
    if order.customer_id is None:
        return
    level_id = await loyalty_balances.customer_level_id(session, order.customer_id)
    purchase = Purchase(
        source_id=str(order.id),
        channel=order.channel.value,
        lines=[PurchaseLine(sku=line.sku_code, amount=line.total) for line in lines],
        store_id=order.store_id,
        level_id=level_id,
    )
    try:
        entry = await loyalty_earning.earn_for_purchase(
            session, order.customer_id, purchase, now, actor=actor, policy=policy
        )
        await customer_qualification.record_spend(
            session,
            order.customer_id,
            order.total,
            source_type=ORDER_SOURCE,
            source_id=str(order.id),
            at=order.placed_at,
            now=now,
        )
    except DomainError as error:
        # Orders' limits keep within loyalty's and levels' (MAX_LINE_AMOUNT): this is a
        # backstop so their codes never reach an order's payload.
        raise translated(error, OrderErrorCode.INVALID) from None
    if entry is not None:
        order.points_earned = entry.amount + entry.pending_delta - entry.debt_delta
        order.updated_at = now
        await session.flush()
