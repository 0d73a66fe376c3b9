"""An order as asked for (``orderCreate``'s input, the seeder's, the tests'), before any check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from api.catalog.models import SalesChannel
from api.customers.profile import CustomerDraft
from api.orders.models import Fulfillment


@dataclass(frozen=True, slots=True)
class LineDraft:
    """One line as asked: a SKU by id or by code, a quantity, and (staff and partners only)
    a unit price; without one the channel's list price applies."""

    quantity: int
    sku_id: int | None = None
    sku_code: str | None = None
    unit_price: Decimal | None = None


@dataclass(slots=True)
class OrderDraft:
    channel: SalesChannel
    fulfillment: Fulfillment
    lines: Sequence[LineDraft]
    store_id: int | None = None
    customer_id: int | None = None
    # Or the customer as a channel knows them: found by any identity, else created.
    customer: CustomerDraft | None = None
    coupon_codes: Sequence[str] = ()
    points_to_use: int = 0
    delivery_region_code: str | None = None
    idempotency_key: str | None = None
    # When the customer paid, for sales a partner reports afterwards; else now.
    placed_at: datetime | None = None
