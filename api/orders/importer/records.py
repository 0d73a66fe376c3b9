"""The records of an import file and the orders they make, with why a row is rejected."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from api.catalog.models import SalesChannel


class OrderImportError(Exception):
    """The file (or an option) cannot be imported at all: nothing row by row to reject."""


class ImportFormat(enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"


EXTENSIONS = {
    ".csv": ImportFormat.CSV,
    ".jsonl": ImportFormat.JSONL,
    ".ndjson": ImportFormat.JSONL,
}


def detect_format(path: Path, given: ImportFormat | None = None) -> ImportFormat:
    """``given``, else from the extension (.csv, .jsonl, .ndjson)."""
    if given is not None:
        return given
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise OrderImportError(
            f"Cannot tell the format of {path.name} from its extension; name it .csv or "
            ".jsonl, or give --format csv|jsonl."
        )
    return found


class RejectReason(enum.Enum):
    UNREADABLE = "unreadable"  # not a CSV row / JSON object, or a line over the length limit
    MISSING_FIELD = "missing_field"
    BAD_MARKETPLACE = "bad_marketplace"
    BAD_ORDER_ID = "bad_order_id"
    BAD_BUYER_ID = "bad_buyer_id"
    BAD_PHONE = "bad_phone"
    BAD_TIME = "bad_time"
    TIME_WITHOUT_OFFSET = "time_without_offset"
    BAD_QUANTITY = "bad_quantity"
    BAD_MONEY = "bad_money"
    UNKNOWN_SKU = "unknown_sku"
    CURRENCY_MISMATCH = "currency_mismatch"
    TOTAL_MISMATCH = "total_mismatch"  # paid ≠ Σ lines
    INCONSISTENT_ORDER = "inconsistent_order"  # an order's CSV rows disagree on order fields
    TOO_MANY_LINES = "too_many_lines"
    NOT_CONTIGUOUS = "not_contiguous"  # an order's CSV rows are not together
    DUPLICATE_ORDER = "duplicate_order"  # a JSON-lines order given twice
    ORDER_REJECTED = "order_rejected"  # this row is fine, another row of its order is not


@dataclass(slots=True, eq=False)
class Row:
    """One record of the file (a CSV row or a JSON line), kept until its order is decided so a
    rejected one can go to the rejects file as it was read."""

    line: int
    raw: list[str] | str  # CSV values, or the JSON line
    problem: tuple[RejectReason, str] | None = None


@dataclass(slots=True)
class Line:
    sku_code: str
    quantity: int
    paid: Decimal
    row: Row
    where: str  # for messages: "line 12" or "line 12 lines[1]"


@dataclass(slots=True, eq=False)
class ImportedOrder:
    key: str | None  # "<marketplace>:<order id>" as written; None without an order id
    rows: list[Row]
    channel: SalesChannel | None = None
    external_id: str = ""
    buyer: str = ""  # the normalized MARKETPLACE_BUYER identity value
    phone: str | None = None
    paid_at: datetime | None = None
    paid: Decimal | None = None
    lines: list[Line] = field(default_factory=list)
    # CSV: the order fields of its first row, which the later rows must repeat.
    signature: tuple[str | None, ...] = ()
    # CSV: rows past an order's first MAX_LINES_PER_ORDER, handed over (rejected) in parts.
    continued: bool = False

    @property
    def first_line(self) -> int:
        return self.rows[0].line

    @property
    def ident(self) -> tuple[SalesChannel, str]:
        """(channel, marketplace order id): an order's unique key, once its fields passed."""
        assert self.channel is not None
        return (self.channel, self.external_id)

    @property
    def rejected(self) -> bool:
        return any(row.problem is not None for row in self.rows)

    def reject(self, reason: RejectReason, message: str, *, overrule: bool = False) -> None:
        """An order-level problem: every row not rejected already gets it (every row, with
        ``overrule``: a problem that explains the others, like rows apart)."""
        for row in self.rows:
            if overrule or row.problem is None:
                row.problem = (reason, message)

    def settle_rejection(self) -> None:
        """A rejected order's good rows say why they were not imported either."""
        bad = next((row.line for row in self.rows if row.problem is not None), None)
        if bad is None:
            return
        for row in self.rows:
            if row.problem is None:
                row.problem = (
                    RejectReason.ORDER_REJECTED,
                    f"Order {self.key} is rejected because of line {bad}.",
                )
