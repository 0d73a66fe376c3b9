"""A record's fields checked and mapped into an order: the marketplace, the ids, the buyer,
the phone, the paid time and amounts, and each line; what is wrong noted on its row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from api.catalog.models import MARKETPLACES, SalesChannel
from api.customers.identities import IdentityError, normalize_identity, normalize_phone
from api.customers.models import IdentityKind
from api.orders.importer.records import ImportedOrder, Line, RejectReason, Row

MAX_QUANTITY = 100_000
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
# A paid time this far past the run's clock is a typo or a wrong offset, not a sale.
FUTURE_SLACK = timedelta(minutes=10)
CENT = Decimal("0.01")
ZERO = Decimal("0.00")

MARKETPLACE_NAMES = {channel.value: channel for channel in MARKETPLACES} | {
    "天猫": SalesChannel.TMALL,
    "京东": SalesChannel.JD,
    "抖音": SalesChannel.DOUYIN,
}
_MAX_ID_CHARS = 64


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _ident(value: Any) -> str | None:
    """An id as text: a string, or a JSON integer (JD order ids often are)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _money(raw: Any) -> Decimal | None:
    """Yuan with at most two decimals, 0 ≤ amount ≤ MAX_AMOUNT; None if not that."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | Decimal):
        value = Decimal(raw)
    elif isinstance(raw, str) and _PLAIN_AMOUNT.fullmatch(raw.strip()):
        value = Decimal(raw.strip())
    else:
        return None
    exponent = value.as_tuple().exponent
    if not value.is_finite() or not isinstance(exponent, int) or exponent < -2:
        return None
    if not ZERO <= value <= MAX_AMOUNT:
        return None
    return value.quantize(CENT)


def _quantity(raw: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        value = int(raw.strip())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        return None
    return value if 1 <= value <= MAX_QUANTITY else None


def note(row: Row, problems: Sequence[tuple[RejectReason, str]]) -> None:
    """Add problems to a row: its first problem is its reason, the others join the message."""
    if not problems:
        return
    messages = [message for _, message in problems]
    if row.problem is None:
        reason = problems[0][0]
    else:
        reason = row.problem[0]
        messages.insert(0, row.problem[1])
    row.problem = (reason, " ".join(messages))


# Text amounts are plain: no exponents, signs, currency symbols or thousands separators.
_PLAIN_AMOUNT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,2})?")
_MONEY_RULE = "is not an amount in yuan (0 to 999999999999.99, at most two decimals)"


class Fields:
    """Checks a record's order fields and lines into an ``ImportedOrder``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def order(self, values: dict[str, Any], order: ImportedOrder, row: Row, where: str) -> None:
        problems: list[tuple[RejectReason, str]] = []
        required = ("marketplace", "order_id", "buyer_id", "paid_at", "paid")
        missing = [name for name in required if _blank(values.get(name))]
        if missing:
            problems.append((RejectReason.MISSING_FIELD, f"{where}: no {', '.join(missing)}."))
        raw_market = values.get("marketplace")
        order.channel = MARKETPLACE_NAMES.get(_text(raw_market).lower())
        if "marketplace" not in missing and order.channel is None:
            problems.append(
                (
                    RejectReason.BAD_MARKETPLACE,
                    f"{where}: marketplace {raw_market!r} is not tmall, jd or douyin.",
                )
            )
        external_id = _ident(values.get("order_id"))
        if "order_id" not in missing and (external_id is None or len(external_id) > _MAX_ID_CHARS):
            problems.append(
                (RejectReason.BAD_ORDER_ID, f"{where}: an order id is 1-64 characters.")
            )
        order.external_id = external_id or ""
        buyer = _ident(values.get("buyer_id"))
        if order.channel is not None and "buyer_id" not in missing:
            try:
                order.buyer = normalize_identity(
                    IdentityKind.MARKETPLACE_BUYER, f"{order.channel.value}:{buyer}"
                )
            except IdentityError:
                problems.append(
                    (
                        RejectReason.BAD_BUYER_ID,
                        f"{where}: buyer id {values.get('buyer_id')!r} is not a marketplace "
                        "buyer id (1-150 characters, no spaces or ':').",
                    )
                )
        phone = _text(values.get("phone"))
        if phone and "*" not in phone:  # a masked phone (138****8000) tells nothing
            try:
                order.phone = normalize_phone(phone)
            except IdentityError as error:
                problems.append((RejectReason.BAD_PHONE, f"{where}: {error}"))
        if "paid_at" not in missing:
            problem = self._paid_at(values.get("paid_at"), order, where)
            if problem is not None:
                problems.append(problem)
        if "paid" not in missing:
            order.paid = _money(values.get("paid"))
            if order.paid is None:
                problems.append(
                    (RejectReason.BAD_MONEY, f"{where}: paid {values.get('paid')!r} {_MONEY_RULE}.")
                )
        note(row, problems)

    def _paid_at(
        self, raw: Any, order: ImportedOrder, where: str
    ) -> tuple[RejectReason, str] | None:
        try:
            paid_at = datetime.fromisoformat(raw.strip()) if isinstance(raw, str) else None
        except ValueError:
            paid_at = None
        if paid_at is None:
            return (
                RejectReason.BAD_TIME,
                f"{where}: paid_at {raw!r} is not an ISO 8601 time "
                "(e.g. 2026-11-11T00:00:05+08:00).",
            )
        if paid_at.utcoffset() is None:
            return (
                RejectReason.TIME_WITHOUT_OFFSET,
                f"{where}: paid_at {raw!r} has no UTC offset; add one (e.g. +08:00).",
            )
        if paid_at > self.now + FUTURE_SLACK:
            return (RejectReason.BAD_TIME, f"{where}: paid_at {raw!r} is in the future.")
        order.paid_at = paid_at
        return None

    @staticmethod
    def line(
        values: dict[str, Any], paid_name: str, order: ImportedOrder, row: Row, where: str
    ) -> None:
        problems: list[tuple[RejectReason, str]] = []
        missing = [name for name in ("sku", "quantity", paid_name) if _blank(values.get(name))]
        if missing:
            problems.append((RejectReason.MISSING_FIELD, f"{where}: no {', '.join(missing)}."))
        sku = values.get("sku")
        if "sku" not in missing and (not isinstance(sku, str) or len(sku.strip()) > _MAX_ID_CHARS):
            problems.append((RejectReason.UNKNOWN_SKU, f"{where}: no SKU has the code {sku!r}."))
        quantity = _quantity(values.get("quantity"))
        if "quantity" not in missing and quantity is None:
            problems.append(
                (
                    RejectReason.BAD_QUANTITY,
                    f"{where}: quantity {values.get('quantity')!r} is not a whole number from "
                    f"1 to {MAX_QUANTITY}.",
                )
            )
        paid = _money(values.get(paid_name))
        if paid_name not in missing and paid is None:
            problems.append(
                (
                    RejectReason.BAD_MONEY,
                    f"{where}: {paid_name} {values.get(paid_name)!r} {_MONEY_RULE}.",
                )
            )
        note(row, problems)
        if not problems and isinstance(sku, str) and quantity is not None and paid is not None:
            order.lines.append(Line(sku.strip(), quantity, paid, row, where))


def check_total(order: ImportedOrder) -> ImportedOrder:
    if order.rejected or order.paid is None or not order.lines:
        return order
    lines_total = sum((line.paid for line in order.lines), ZERO)
    if lines_total != order.paid:
        order.reject(
            RejectReason.TOTAL_MISMATCH,
            f"Order {order.key}: paid {order.paid} but its lines add up to {lines_total}.",
        )
    return order


def order_key(values: dict[str, Any]) -> str | None:
    """ "<marketplace>:<order id>", what makes rows one order and an order unique in a file."""
    external = _ident(values.get("order_id"))
    if not external:
        return None
    market = _text(values.get("marketplace")).lower()
    channel = MARKETPLACE_NAMES.get(market)
    return f"{channel.value if channel else market}:{external}"
