"""Marketplace order import (``qudao import orders FILE``): Tmall, JD and Douyin exports.

The file
--------
CSV with a header row, **one row per order line**; an order's rows repeat its order fields
and must be next to each other (exports list them so; sort a file by order id otherwise)::

    marketplace,order_id,buyer_id,phone,paid_at,paid,sku,quantity,line_paid
    tmall,T1001,tb_buyer_1,13800138000,2026-11-11T00:00:05+08:00,398.00,TEA-250G,2,398.00
    jd,J77,jd_9,,2026-11-11 08:30:00+08:00,129.00,TEA-100G,1,99.00
    jd,J77,jd_9,,2026-11-11 08:30:00+08:00,129.00,CUP-01,1,30.00

or JSON lines (``.jsonl``), **one order per line** with its lines in an array::

    {"marketplace": "tmall", "order_id": "T1001", "buyer_id": "tb_buyer_1",
     "phone": "13800138000", "paid_at": "2026-11-11T00:00:05+08:00", "paid": "398.00",
     "lines": [{"sku": "TEA-250G", "quantity": 2, "paid": "398.00"}]}

(on one line). Column and key names are case-insensitive; other columns or keys are ignored,
so a rejects file (below) can be fixed and imported as it is.

* ``marketplace``: ``tmall``, ``jd`` or ``douyin`` (or 天猫, 京东, 抖音).
* ``order_id``: the marketplace's order id (at most 64 characters); ``buyer_id``: the
  marketplace's buyer id, stored as the identity ``<marketplace>:<buyer id>``.
* ``phone`` (optional): a mainland mobile; a masked one (``138****8000``) counts as none.
* ``paid_at``: ISO 8601 **with a UTC offset** (``+08:00`` or ``Z``); a time without one is
  rejected rather than guessed.
* ``paid``: what the buyer paid for the order, which must equal the sum of ``line_paid``
  (CSV) or of the lines' ``paid`` (JSON lines). Amounts are yuan with at most two decimals
  (JSON numbers or strings); ``quantity`` is a whole number from 1 to 100 000.

What an import does
-------------------
Every order becomes a COMPLETED DELIVERY order on its marketplace's channel, attributed to
the ``partner_id`` given (the partner's marketplace shop, a partner-reported sale) or to HQ's
flagship (none). Lines keep what was paid: a line's subtotal and total are its paid amount,
its unit price that amount per unit (rounded to the cent), its unit cost the SKU's cost price;
coupon and points discounts are zero. Stock is not touched (the marketplace shipped it), and
no subscription events are published: these are history, not live status changes.

**No points and no qualifying spend**: a marketplace purchase is public-domain (公域) business;
points and member levels reward private-domain (私域) purchases, and an import of last year's
Tmall orders must not shower the ledger with points. What the import feeds is the conversion
funnel: the buyer becomes (or is matched to) a customer whose first channel is the
marketplace.

Customers (written by the customers domain, api/customers/marketplace_buyers.py): found by
the ``<marketplace>:<buyer id>`` identity (normalized exactly as
``customerUpsert`` does), else by a phone identity equal to the order's phone (the buyer id is
then attached to that customer), else created with ``first_channel`` the marketplace. The
order's phone fills ``contact_phone`` when it is blank and is never attached as a login
identity: a marketplace phone is the recipient's, often not the buyer's, and an identity
would let whoever holds it sign in as the buyer. Duplicate detection (``customerDuplicates``)
compares contact phones with phone identities, so a later merge links them.

A line sold outside the channel's price band is recorded as a PRICE_BELOW_FLOOR (乱价) or
PRICE_ABOVE_CEILING violation, and a channel-exclusive SKU (线上专供款) sold on the marketplace
as EXCLUSIVE_SKU, as ``orders.service`` records partner-reported sales; the order is imported
all the same (it happened), and so is a SKU no longer on sale.

Idempotent per (marketplace, order id), the orders' unique (channel, external_id): an order
already on file is skipped, so a re-run imports nothing; concurrent imports of one file import
each order once (INSERT ... ON CONFLICT DO NOTHING).

Rejected orders are never half imported: any bad row (unknown SKU, bad quantity, money or time,
paid ≠ Σ lines, ...) rejects its whole order, every row of it with a reason; the other orders
go on. An order whose CSV rows are not together is rejected whole, and if its first rows were
already imported (an earlier batch of this run) that order is withdrawn. Order ids seen in
this run are kept in a scratch SQLite file on disk, so the check is exact at flat memory.

Streaming: rows are read one by one, ``batch_size`` orders go into one transaction (committed
per batch), and nothing of a batch is kept after it, so memory stays flat for any file size.
A physical line longer than 64 KiB is rejected without being held whole. A batch costs at
most eleven statements however many orders it holds (plus one per violation): the orders
already on file, the SKUs (cached for the run), the buyers' and phones' customers, the new
customers and identities, the orders, lines and events, each in one statement.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog import service as catalog
from api.catalog.models import MARKETPLACES, SalesChannel
from api.conflicts.models import ChannelViolation, ViolationKind
from api.conflicts.service import record_violation
from api.customers.identities import IdentityError, normalize_identity, normalize_phone
from api.customers.marketplace_buyers import BuyerSeen, upsert_marketplace_buyers
from api.customers.models import IdentityKind
from api.orders.models import Fulfillment, Order, OrderEvent, OrderLine, OrderStatus
from api.orders.reactions import OrderChange, OrdersWiring
from api.partners.models import Partner, PartnerType

if TYPE_CHECKING:
    from api.db import Database

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 5_000
MAX_LINES_PER_ORDER = 200
MAX_QUANTITY = 100_000
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
MAX_LINE_CHARS = 65_536  # one physical line of the file
MAX_EXAMPLE_LINES = 5  # line numbers the summary lists per reason
CURRENCY = "CNY"  # marketplaces settle in yuan
# A paid time this far past the run's clock is a typo or a wrong offset, not a sale.
FUTURE_SLACK = timedelta(minutes=10)
CENT = Decimal("0.01")
ZERO = Decimal("0.00")

_MARKETPLACE_NAMES = {channel.value: channel for channel in MARKETPLACES} | {
    "天猫": SalesChannel.TMALL,
    "京东": SalesChannel.JD,
    "抖音": SalesChannel.DOUYIN,
}
_ORDER_FIELDS = ("marketplace", "order_id", "buyer_id", "phone", "paid_at", "paid")
_CSV_REQUIRED = ("marketplace", "order_id", "buyer_id", "paid_at", "paid", "sku", "quantity")
_CSV_LINE_PAID = "line_paid"
_MAX_ID_CHARS = 64
_NOTE_CHARS = 200
_TAKEN_BY_CHARS = 100


class ImportFormat(enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"


_EXTENSIONS = {
    ".csv": ImportFormat.CSV,
    ".jsonl": ImportFormat.JSONL,
    ".ndjson": ImportFormat.JSONL,
}


class OrderImportError(Exception):
    """The file (or an option) cannot be imported at all: nothing row by row to reject."""


def detect_format(path: Path, given: ImportFormat | None = None) -> ImportFormat:
    """``given``, else from the extension (.csv, .jsonl, .ndjson)."""
    if given is not None:
        return given
    found = _EXTENSIONS.get(path.suffix.lower())
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


@dataclass(slots=True)
class ReasonTally:
    rows: int = 0
    lines: list[int] = field(default_factory=list)  # the first few, in file order

    def add(self, line: int) -> None:
        self.rows += 1
        if len(self.lines) < MAX_EXAMPLE_LINES:
            self.lines.append(line)


@dataclass(slots=True)
class ImportSummary:
    rows_read: int = 0
    orders_imported: int = 0
    orders_skipped: int = 0  # already on file
    orders_rejected: int = 0
    rows_rejected: int = 0
    # Imported in an earlier batch of this run, then taken back: more of its rows came later.
    orders_withdrawn: int = 0
    customers_created: int = 0
    violations: int = 0
    bytes_read: int = 0
    total_bytes: int = 0
    dry_run: bool = False
    reasons: dict[RejectReason, ReasonTally] = field(default_factory=dict)

    def reject(self, reason: RejectReason, line: int) -> None:
        self.rows_rejected += 1
        self.reasons.setdefault(reason, ReasonTally()).add(line)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    partner_id: int | None = None  # the marketplace shop that sold; None: HQ's flagship
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False  # do everything, commit nothing
    encoding: str = "utf-8-sig"
    actor: str = "import"
    source: str | None = None  # the file's name, for the orders' history


# --- reading the file ---------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Row:
    """One record of the file (a CSV row or a JSON line), kept until its order is decided so a
    rejected one can go to the rejects file as it was read."""

    line: int
    raw: list[str] | str  # CSV values, or the JSON line
    problem: tuple[RejectReason, str] | None = None


@dataclass(slots=True)
class _Line:
    sku_code: str
    quantity: int
    paid: Decimal
    row: _Row
    where: str  # for messages: "line 12" or "line 12 lines[1]"


@dataclass(slots=True, eq=False)
class _Order:
    key: str | None  # "<marketplace>:<order id>" as written; None without an order id
    rows: list[_Row]
    channel: SalesChannel | None = None
    external_id: str = ""
    buyer: str = ""  # the normalized MARKETPLACE_BUYER identity value
    phone: str | None = None
    paid_at: datetime | None = None
    paid: Decimal | None = None
    lines: list[_Line] = field(default_factory=list)
    # CSV: the order fields of its first row, which the later rows must repeat.
    signature: tuple[str, ...] = ()
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


class _Lines:
    """The physical lines of a text stream, counted, none longer than MAX_LINE_CHARS: a longer
    line is cut there and the rest of it skipped, so one endless line cannot fill memory.
    ``last_overlong`` is the number of the last line that was cut (0: none)."""

    def __init__(self, stream: TextIO, encoding: str) -> None:
        self.stream = stream
        self.encoding = encoding
        self.number = 0
        self.last_overlong = 0

    def _read(self) -> str:
        try:
            return self.stream.readline(MAX_LINE_CHARS)
        except UnicodeDecodeError:
            raise OrderImportError(
                f"Line {self.number + 1} is not {self.encoding} text; give the file's encoding "
                "with --encoding (e.g. gbk). Batches before it were imported; a re-run skips "
                "them."
            ) from None

    def __iter__(self) -> Iterator[str]:
        while line := self._read():
            self.number += 1
            if len(line) == MAX_LINE_CHARS and line[-1] not in "\r\n":
                self.last_overlong = self.number
                while (rest := self._read()) and rest[-1] not in "\r\n":
                    pass
                line = "\n"
            yield line


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


def _note(row: _Row, problems: Sequence[tuple[RejectReason, str]]) -> None:
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


class _Fields:
    """Checks a record's order fields and lines into an ``_Order``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def order(self, values: dict[str, Any], order: _Order, row: _Row, where: str) -> None:
        problems: list[tuple[RejectReason, str]] = []
        required = ("marketplace", "order_id", "buyer_id", "paid_at", "paid")
        missing = [name for name in required if _blank(values.get(name))]
        if missing:
            problems.append((RejectReason.MISSING_FIELD, f"{where}: no {', '.join(missing)}."))
        raw_market = values.get("marketplace")
        order.channel = _MARKETPLACE_NAMES.get(_text(raw_market).lower())
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
        _note(row, problems)

    def _paid_at(self, raw: Any, order: _Order, where: str) -> tuple[RejectReason, str] | None:
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
    def line(values: dict[str, Any], paid_name: str, order: _Order, row: _Row, where: str) -> None:
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
        _note(row, problems)
        if not problems and isinstance(sku, str) and quantity is not None and paid is not None:
            order.lines.append(_Line(sku.strip(), quantity, paid, row, where))


def _check_total(order: _Order) -> _Order:
    if order.rejected or order.paid is None or not order.lines:
        return order
    lines_total = sum((line.paid for line in order.lines), ZERO)
    if lines_total != order.paid:
        order.reject(
            RejectReason.TOTAL_MISMATCH,
            f"Order {order.key}: paid {order.paid} but its lines add up to {lines_total}.",
        )
    return order


def _order_key(values: dict[str, Any]) -> str | None:
    """ "<marketplace>:<order id>", what makes rows one order and an order unique in a file."""
    external = _ident(values.get("order_id"))
    if not external:
        return None
    market = _text(values.get("marketplace")).lower()
    channel = _MARKETPLACE_NAMES.get(market)
    return f"{channel.value if channel else market}:{external}"


def _csv_orders(lines: _Lines, fields: _Fields) -> tuple[list[str], Iterator[_Order]]:
    """The header, and the orders of a CSV file: contiguous rows with the same marketplace and
    order id make one order."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise OrderImportError("The file is empty: a CSV file starts with a header row.") from None
    except csv.Error as error:
        raise OrderImportError(f"Line 1 is not a CSV header: {error}.") from None
    columns = {
        name.strip().lower().replace(" ", "_").replace("-", "_"): index
        for index, name in enumerate(header)
    }
    needed = (*_CSV_REQUIRED, _CSV_LINE_PAID)
    missing = [name for name in needed if name not in columns]
    if missing:
        raise OrderImportError(
            f"The CSV header lacks {', '.join(missing)}; it needs {', '.join(needed)} "
            "(phone is optional)."
        )

    def records() -> Iterator[tuple[_Row, dict[str, Any] | None]]:
        while True:
            start = lines.number + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield _Row(start, [], (RejectReason.UNREADABLE, f"line {start}: {error}.")), None
                continue
            row = _Row(start, values)
            if lines.last_overlong >= start:
                row.problem = (
                    RejectReason.UNREADABLE,
                    f"line {lines.last_overlong}: longer than {MAX_LINE_CHARS} characters.",
                )
                yield row, None
            elif not values:
                continue  # a blank line
            elif len(values) > len(header):
                row.problem = (
                    RejectReason.UNREADABLE,
                    f"line {start}: {len(values)} fields but the header has {len(header)}.",
                )
                yield row, None
            else:
                width = len(values)
                named = {
                    name: values[i].strip() if i < width else None for name, i in columns.items()
                }
                yield row, named

    def orders() -> Iterator[_Order]:
        current: _Order | None = None
        for row, values in records():
            key = _order_key(values) if values is not None else None
            if current is not None and (key is None or key != current.key):
                yield current if current.continued else _check_total(current)
                current = None
            where = f"line {row.line}"
            if values is None or key is None:
                alone = _Order(key, [row])
                if values is not None:
                    fields.order(values, alone, row, where)
                yield alone
                continue
            if current is not None and len(current.rows) >= MAX_LINES_PER_ORDER:
                # Hand over what we have (rejected) and go on with the rest of its rows.
                too_many = f"Order {key} has more than {MAX_LINES_PER_ORDER} lines."
                current.reject(RejectReason.TOO_MANY_LINES, too_many)
                yield current
                current = _Order(key, [row], continued=True)
                current.reject(RejectReason.TOO_MANY_LINES, too_many)
                continue
            signature = tuple(map(values.get, _ORDER_FIELDS))  # stripped text or None
            if current is None:
                current = _Order(key, [row], signature=signature)
                fields.order(values, current, row, where)
            else:
                current.rows.append(row)
                if current.continued:
                    current.reject(
                        RejectReason.TOO_MANY_LINES,
                        f"Order {key} has more than {MAX_LINES_PER_ORDER} lines.",
                    )
                    continue
                differing = [
                    name
                    for name, mine, first in zip(
                        _ORDER_FIELDS, signature, current.signature, strict=True
                    )
                    if mine != first
                ]
                if differing:
                    _note(
                        row,
                        [
                            (
                                RejectReason.INCONSISTENT_ORDER,
                                f"{where}: {', '.join(differing)} differ from line "
                                f"{current.first_line}, the first row of order {key}.",
                            )
                        ],
                    )
            fields.line(values, _CSV_LINE_PAID, current, row, where)
        if current is not None:
            yield current if current.continued else _check_total(current)

    return header, orders()


def _jsonl_orders(lines: _Lines, fields: _Fields) -> Iterator[_Order]:
    """The orders of a JSON-lines file, one per non-blank line."""
    for text in lines:
        number = lines.number
        where = f"line {number}"
        if lines.last_overlong == number:
            row = _Row(number, "")
            row.problem = (
                RejectReason.UNREADABLE,
                f"{where}: longer than {MAX_LINE_CHARS} characters.",
            )
            yield _Order(None, [row])
            continue
        if not text.strip():
            continue
        row = _Row(number, text.rstrip("\r\n"))
        try:
            record = json.loads(text, parse_float=Decimal)
        except (ValueError, RecursionError) as error:
            row.problem = (RejectReason.UNREADABLE, f"{where}: not JSON ({error}).")
            yield _Order(None, [row])
            continue
        if not isinstance(record, dict):
            row.problem = (RejectReason.UNREADABLE, f"{where}: not a JSON object.")
            yield _Order(None, [row])
            continue
        values = {str(name).strip().lower(): value for name, value in record.items()}
        order = _Order(_order_key(values), [row])
        fields.order(values, order, row, where)
        items = values.get("lines")
        if not isinstance(items, list) or not items:
            _note(row, [(RejectReason.MISSING_FIELD, f"{where}: lines must be a non-empty array.")])
        elif len(items) > MAX_LINES_PER_ORDER:
            _note(
                row,
                [
                    (
                        RejectReason.TOO_MANY_LINES,
                        f"{where}: an order has at most {MAX_LINES_PER_ORDER} lines.",
                    )
                ],
            )
        else:
            for index, item in enumerate(items):
                spot = f"{where} lines[{index}]"
                if isinstance(item, dict):
                    named = {str(name).strip().lower(): value for name, value in item.items()}
                    fields.line(named, "paid", order, row, spot)
                else:
                    _note(row, [(RejectReason.UNREADABLE, f"{spot}: not a JSON object.")])
        yield _check_total(order)


def _batches(orders: Iterable[_Order], size: int) -> Iterator[list[_Order]]:
    batch: list[_Order] = []
    for order in orders:
        batch.append(order)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- what the run remembers -----------------------------------------------------------------


class _SeenOrders:
    """The order keys this run has met, with the line of their first row and whether this run
    imported them. A scratch SQLite file on disk (deleted at the end): memory stays flat for any
    number of orders, and an order met again (CSV rows apart, a JSON-lines order twice) is
    caught exactly, not by a guess over the last few."""

    _CHUNK = 500

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="qudao-import-")
        self._db = sqlite3.connect(Path(self._directory.name) / "seen.db")
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4096;"
            "CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER NOT NULL,"
            " imported INTEGER NOT NULL) WITHOUT ROWID;"
        )

    def __enter__(self) -> _SeenOrders:
        return self

    def __exit__(self, *_: object) -> None:
        self._db.close()
        self._directory.cleanup()

    def find(self, keys: Sequence[str]) -> dict[str, tuple[int, bool]]:
        found: dict[str, tuple[int, bool]] = {}
        for start in range(0, len(keys), self._CHUNK):
            chunk = keys[start : start + self._CHUNK]
            marks = ", ".join("?" * len(chunk))
            for key, line, imported in self._db.execute(
                f"SELECT key, line, imported FROM seen WHERE key IN ({marks})", chunk
            ):
                found[key] = (line, bool(imported))
        return found

    def add(self, entries: Iterable[tuple[str, int, bool]]) -> None:
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", entries)

    def not_imported(self, keys: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("UPDATE seen SET imported = 0 WHERE key = ?", ((k,) for k in keys))


class _RejectsFile:
    """Rejected rows as they were read, each led by its line and reason: a CSV file with the
    input's header after ``reject_line,reject_reason``, or JSON lines with those two keys
    first. The importer ignores those columns, so the file can be fixed and imported."""

    def __init__(self, stream: TextIO, fmt: ImportFormat, header: Sequence[str]) -> None:
        self.stream = stream
        self.writer = csv.writer(self.stream) if fmt is ImportFormat.CSV else None
        if self.writer is not None:
            self.writer.writerow(["reject_line", "reject_reason", *header])

    def write(self, row: _Row) -> None:
        assert row.problem is not None
        reason = f"{row.problem[0].value}: {row.problem[1]}"
        if self.writer is not None:
            self.writer.writerow([row.line, reason, *row.raw])
            return
        record: dict[str, Any] = {"reject_line": row.line, "reject_reason": reason}
        try:
            original = json.loads(row.raw) if isinstance(row.raw, str) and row.raw else None
        except (ValueError, RecursionError):
            original = None
        if isinstance(original, dict):
            record |= {k: v for k, v in original.items() if k not in record}
        else:
            record["raw"] = row.raw
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- writing a batch ----------------------------------------------------------------------


class _DryRun(Exception):
    """Raised at the end of a dry run's batch so its transaction rolls back."""


@dataclass(slots=True)
class _Outcome:
    """What one batch did; added to the summary only once its transaction is over."""

    imported: set[tuple[SalesChannel, str]] = field(default_factory=set)  # order idents
    skipped: set[tuple[SalesChannel, str]] = field(default_factory=set)
    customers_created: int = 0
    violations: int = 0


async def check_partner(session: AsyncSession, partner_id: int | None) -> None:
    """The partner an import is attributed to must be a marketplace shop (电商旗舰店)."""
    if partner_id is None:
        return
    kind = await session.scalar(select(Partner.type).where(Partner.id == partner_id))
    if kind is None:
        raise OrderImportError(f"No partner {partner_id}.")
    if kind is not PartnerType.MARKETPLACE_SHOP:
        raise OrderImportError(
            f"Partner {partner_id} ({kind.value}) is not a marketplace shop: only a "
            "marketplace shop sells on Tmall, JD or Douyin (leave the partner out for HQ's "
            "flagship)."
        )


async def import_orders(
    db: Database,
    source: BinaryIO,
    fmt: ImportFormat,
    *,
    options: ImportOptions,
    now: datetime,
    wiring: OrdersWiring,
    rejects: TextIO | None = None,
    on_batch: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Import a marketplace export read from ``source`` (a binary stream), ``batch_size``
    orders per transaction; see the module docstring for the file and the rules.

    ``rejects`` receives the rejected rows (CSV or JSON lines like the input), ``on_batch``
    the running summary after each batch (a progress bar). OrderImportError when the file or
    an option is unusable; the batches before it stay imported (a re-run skips them).
    """
    if not 1 <= options.batch_size <= MAX_BATCH_SIZE:
        raise OrderImportError(f"A batch is 1 to {MAX_BATCH_SIZE} orders.")
    async with db.read() as session:
        await check_partner(session, options.partner_id)
    summary = ImportSummary(dry_run=options.dry_run)
    if source.seekable():
        summary.total_bytes = source.seek(0, io.SEEK_END) - source.seek(0)
    stream = io.TextIOWrapper(source, encoding=options.encoding, newline="")
    try:
        lines = _Lines(stream, options.encoding)
        fields = _Fields(now)
        header: Sequence[str] = ()
        if fmt is ImportFormat.CSV:
            header, orders = _csv_orders(lines, fields)
        else:
            orders = _jsonl_orders(lines, fields)
        with _SeenOrders() as seen:
            writer = _RejectsFile(rejects, fmt, header) if rejects is not None else None
            importer = _Importer(db, wiring, fmt, options, now, summary, seen, writer)
            for batch in _batches(orders, options.batch_size):
                await importer.run(batch)
                summary.bytes_read = source.tell() if source.seekable() else 0
                if on_batch is not None:
                    on_batch(summary)
    finally:
        stream.detach()  # the caller's stream is the caller's to close
    return summary


class _Importer:
    def __init__(
        self,
        db: Database,
        wiring: OrdersWiring,
        fmt: ImportFormat,
        options: ImportOptions,
        now: datetime,
        summary: ImportSummary,
        seen: _SeenOrders,
        rejects: _RejectsFile | None,
    ) -> None:
        self.db = db
        self.wiring = wiring
        self.fmt = fmt
        self.options = options
        self.now = now
        self.summary = summary
        self.seen = seen
        self.rejects = rejects
        self.insert = postgresql.insert if not db.is_sqlite else sqlite.insert
        self.actor = options.actor[:_TAKEN_BY_CHARS]
        # (channel, code) → SKU. Bounded by the catalog, not by the file; unknown codes are
        # not remembered (a file of garbage codes would grow it).
        self.skus: dict[tuple[SalesChannel, str], catalog.PricedSku] = {}

    async def run(self, batch: list[_Order]) -> None:
        self.summary.rows_read += sum(len(order.rows) for order in batch)
        withdraw = self._repeats(batch)
        outcome = _Outcome()
        try:
            async with self.db.transaction() as session:
                outcome = await self._write(session, batch, withdraw)
                if self.options.dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        self._tally(batch, withdraw, outcome)

    def _repeats(self, batch: list[_Order]) -> list[_Order]:
        """Reject orders met before in this run; return the ones whose earlier rows this run
        imported (to be withdrawn: an order is never left half imported)."""
        keys = sorted({o.key for o in batch if o.key is not None and not o.continued})
        earlier = self.seen.find(keys)
        first_here: dict[str, _Order] = {}
        withdraw: list[_Order] = []
        for order in batch:
            if order.key is None or order.continued:
                continue
            before = earlier.get(order.key)
            twin = first_here.get(order.key)
            if before is None and twin is None:
                first_here[order.key] = order
                continue
            if twin is not None:
                first_line = twin.first_line
            else:
                assert before is not None
                first_line = before[0]
            if self.fmt is ImportFormat.JSONL:
                order.reject(
                    RejectReason.DUPLICATE_ORDER,
                    f"Order {order.key} is already in this file at line {first_line}.",
                    overrule=True,
                )
                continue
            # Overruling: a piece of an order fails its total because the rest is elsewhere.
            order.reject(RejectReason.NOT_CONTIGUOUS, _apart(order.key, first_line), overrule=True)
            if twin is not None:
                twin.reject(
                    RejectReason.NOT_CONTIGUOUS,
                    _apart(order.key, order.first_line),
                    overrule=True,
                )
            elif before is not None and before[1]:
                withdraw.append(order)
        return withdraw

    async def _write(
        self, session: AsyncSession, batch: list[_Order], withdraw: list[_Order]
    ) -> _Outcome:
        outcome = _Outcome()
        if withdraw:
            await self._withdraw(session, withdraw)
        candidates = [o for o in batch if not o.rejected]
        if not candidates:
            return outcome
        outcome.skipped = await self._on_file(session, candidates)
        fresh = [o for o in candidates if o.ident not in outcome.skipped]
        await self._check_skus(session, fresh)
        fresh = [o for o in fresh if not o.rejected]
        if not fresh:
            return outcome
        customer_ids = await self._customers(session, fresh, outcome)
        # Sorted: two imports insert overlapping orders in one order and never deadlock.
        fresh.sort(key=lambda o: (o.ident[0].value, o.external_id))
        order_ids = await self._insert_orders(session, fresh, customer_ids)
        stored = [o for o in fresh if o.ident in order_ids]
        outcome.imported = set(order_ids)
        # Not inserted: a concurrent import of the same orders got there first.
        outcome.skipped |= {o.ident for o in fresh} - outcome.imported
        await self._insert_lines(session, stored, order_ids)
        outcome.violations = await self._violations(session, stored, order_ids)
        await self.wiring.changed(
            session,
            OrderChange.IMPORTED,
            [order_ids[o.ident] for o in stored],
            [customer_ids[o.buyer] for o in stored],
            self.now,
        )
        return outcome

    def _tally(self, batch: list[_Order], withdraw: list[_Order], outcome: _Outcome) -> None:
        summary = self.summary
        summary.orders_imported += len(outcome.imported) - len(withdraw)
        summary.orders_withdrawn += len(withdraw)
        summary.orders_skipped += len(outcome.skipped)
        summary.customers_created += outcome.customers_created
        summary.violations += outcome.violations
        for order in batch:
            if not order.rejected:
                continue
            order.settle_rejection()
            if not order.continued:
                summary.orders_rejected += 1
            for row in order.rows:
                assert row.problem is not None
                summary.reject(row.problem[0], row.line)
                if self.rejects is not None:
                    self.rejects.write(row)
        self.seen.add(
            (order.key, order.first_line, not order.rejected and order.ident in outcome.imported)
            for order in batch
            if order.key is not None and not order.continued
        )
        if withdraw:
            self.seen.not_imported(order.key for order in withdraw if order.key is not None)

    async def _withdraw(self, session: AsyncSession, orders: list[_Order]) -> None:
        """Delete orders this run imported from their first rows (lines and events go with
        them; their violations first, which do not cascade)."""
        ids = select(Order.id).where(_order_match(orders))
        await session.execute(delete(ChannelViolation).where(ChannelViolation.order_id.in_(ids)))
        gone = (
            await session.execute(
                delete(Order).where(_order_match(orders)).returning(Order.id, Order.customer_id)
            )
        ).all()
        # Their buyers' metrics counted them: the hooks recompute those customers.
        await self.wiring.changed(
            session,
            OrderChange.WITHDRAWN,
            [order_id for order_id, _ in gone],
            [customer_id for _, customer_id in gone],
            self.now,
        )

    async def _on_file(
        self, session: AsyncSession, orders: list[_Order]
    ) -> set[tuple[SalesChannel, str]]:
        rows = await session.execute(
            select(Order.channel, Order.external_id).where(_order_match(orders))
        )
        return {(channel, external_id) for channel, external_id in rows}

    def _sku(self, order: _Order, line: _Line) -> catalog.PricedSku:
        return self.skus[(order.ident[0], line.sku_code)]

    async def _check_skus(self, session: AsyncSession, orders: list[_Order]) -> None:
        """Look up the SKUs the cache lacks (two statements a channel), then reject the lines
        of unknown SKUs or of SKUs priced in another currency."""
        wanted: dict[SalesChannel, set[str]] = {}
        for order in orders:
            channel = order.ident[0]
            for line in order.lines:
                if (channel, line.sku_code) not in self.skus:
                    wanted.setdefault(channel, set()).add(line.sku_code)
        for channel, codes in sorted(wanted.items(), key=lambda item: item[0].value):
            for sku in await catalog.skus_for_order(session, channel, codes=sorted(codes)):
                self.skus[(channel, sku.code)] = sku
        for order in orders:
            for line in order.lines:
                sku = self.skus.get((order.ident[0], line.sku_code))
                if sku is None:
                    problem = (
                        RejectReason.UNKNOWN_SKU,
                        f"{line.where}: no SKU has the code {line.sku_code!r}.",
                    )
                elif sku.currency != CURRENCY:
                    problem = (
                        RejectReason.CURRENCY_MISMATCH,
                        f"{line.where}: SKU {sku.code} is priced in {sku.currency}; marketplace "
                        f"orders are paid in {CURRENCY}.",
                    )
                else:
                    continue
                _note(line.row, [problem])

    # --- customers ---

    async def _customers(
        self, session: AsyncSession, orders: list[_Order], outcome: _Outcome
    ) -> dict[str, int]:
        """Buyer identity value → live customer id: the customers domain finds, creates and
        attaches (api/customers/marketplace_buyers.py)."""
        upserted = await upsert_marketplace_buyers(
            session, [BuyerSeen(o.buyer, o.phone, o.ident[0].value) for o in orders], now=self.now
        )
        outcome.customers_created = upserted.created
        return upserted.customer_ids

    # --- orders ---

    async def _insert_orders(
        self, session: AsyncSession, orders: list[_Order], customer_ids: dict[str, int]
    ) -> dict[tuple[SalesChannel, str], int]:
        """Insert the orders; (channel, order id) → id of those this batch inserted (one a
        concurrent import inserted first is left out: skipped)."""
        table = Order.__table__
        partner_id = self.options.partner_id
        rows = []
        for order in orders:
            cost = ZERO
            for line in order.lines:
                sku = self._sku(order, line)
                cost += sku.cost_price * line.quantity
            rows.append(
                {
                    "channel": order.channel,
                    "fulfillment": Fulfillment.DELIVERY,
                    "status": OrderStatus.COMPLETED,
                    "customer_id": customer_ids[order.buyer],
                    "partner_id": partner_id,
                    "store_id": None,
                    "reported_by_partner": partner_id is not None,
                    "taken_by": self.actor,
                    "currency": CURRENCY,
                    "subtotal": order.paid,
                    "coupon_discount": ZERO,
                    "points_used": 0,
                    "points_discount": ZERO,
                    "total": order.paid,
                    "cost_total": cost.quantize(CENT),
                    "refunded_amount": ZERO,
                    "points_earned": 0,
                    "external_id": order.external_id,
                    "placed_at": order.paid_at,
                    "completed_at": order.paid_at,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
            )
        result = await session.execute(
            self.insert(table)
            .on_conflict_do_nothing(index_elements=["channel", "external_id"])
            .returning(table.c.id, table.c.channel, table.c.external_id),
            rows,
        )
        return {(channel, external_id): order_id for order_id, channel, external_id in result}

    async def _insert_lines(
        self,
        session: AsyncSession,
        orders: list[_Order],
        order_ids: dict[tuple[SalesChannel, str], int],
    ) -> None:
        if not orders:
            return
        lines = []
        events = []
        origin = self.options.source or "a marketplace export"
        for order in orders:
            order_id = order_ids[order.ident]
            for number, line in enumerate(order.lines, start=1):
                sku = self._sku(order, line)
                lines.append(
                    {
                        "order_id": order_id,
                        "line_no": number,
                        "sku_id": sku.sku_id,
                        "sku_code": sku.code,
                        "product_id": sku.product_id,
                        "quantity": line.quantity,
                        "unit_price": _unit_price(line),
                        "unit_cost": sku.cost_price,
                        "subtotal": line.paid,
                        "discount": ZERO,
                        "total": line.paid,
                        "refunded_quantity": 0,
                    }
                )
            events.append(
                {
                    "order_id": order_id,
                    "status": OrderStatus.COMPLETED,
                    "note": f"Imported from {origin}, line {order.first_line}."[:_NOTE_CHARS],
                    "actor": self.actor,
                    "created_at": self.now,
                }
            )
        await session.execute(OrderLine.__table__.insert(), lines)
        await session.execute(OrderEvent.__table__.insert(), events)

    async def _violations(
        self,
        session: AsyncSession,
        orders: list[_Order],
        order_ids: dict[tuple[SalesChannel, str], int],
    ) -> int:
        """Sales outside the channel's price band (乱价) and channel-exclusive SKUs sold on
        the marketplace, recorded as partner-reported orders record them (same kinds and
        source keys as ``orders.service``); the order stands: it happened."""
        recorded = 0
        for order in orders:
            channel = order.ident[0]
            for number, line in enumerate(order.lines, start=1):
                sku = self._sku(order, line)
                found: list[tuple[ViolationKind, str, str, Decimal | None, Decimal | None]] = []
                if not sku.sellable_on(channel):
                    where = ", ".join(sorted(c.name for c in sku.exclusive_channels))
                    found.append(
                        (
                            ViolationKind.EXCLUSIVE_SKU,
                            "exclusive",
                            f"{sku.code} is exclusive to {where}; sold on {channel.name}.",
                            None,
                            None,
                        )
                    )
                band = sku.band
                # Compared as totals: the rounded unit price could hide a cent under the floor.
                if band is not None and not (
                    band.floor * line.quantity <= line.paid <= band.ceiling * line.quantity
                ):
                    below = line.paid < band.floor * line.quantity
                    kind = (
                        ViolationKind.PRICE_BELOW_FLOOR
                        if below
                        else ViolationKind.PRICE_ABOVE_CEILING
                    )
                    limit = band.floor if below else band.ceiling
                    unit = _unit_price(line)
                    words = "below the floor" if below else "above the ceiling"
                    found.append(
                        (
                            kind,
                            kind.value,
                            f"{sku.code} sold at {unit} on {channel.name}, {words} {limit}.",
                            limit,
                            unit,
                        )
                    )
                if not found:
                    continue
                order_id = order_ids[order.ident]
                for kind, key, detail, expected, actual in found:
                    await record_violation(
                        session,
                        kind=kind,
                        source_key=f"order:{order_id}:line:{number}:{key}",
                        detail=detail,
                        now=self.now,
                        partner_id=self.options.partner_id,
                        channel=channel,
                        order_id=order_id,
                        sku_id=sku.sku_id,
                        expected_amount=expected,
                        actual_amount=actual,
                    )
                    recorded += 1
        return recorded


def _unit_price(line: _Line) -> Decimal:
    """What a unit was paid, rounded to the cent (the line's total stays exact)."""
    return (line.paid / line.quantity).quantize(CENT, ROUND_HALF_UP)


def _bucketed(values: Sequence[str]) -> list[str]:
    """``values`` padded to the next power of two (repeating the last): an IN list of any
    length then renders one of a dozen statement texts, which the driver's prepared-statement
    cache and the server reuse, instead of a new statement (and cache entry) per length."""
    size = 1
    while size < len(values):
        size *= 2
    return [*values, *[values[-1]] * (size - len(values))] if values else []


def _apart(key: str, other_line: int) -> str:
    return (
        f"Order {key} also has rows from line {other_line}: an order's rows must be next to "
        "each other (sort the file by order id), so it is rejected whole."
    )


def _order_match(orders: Iterable[_Order]) -> Any:
    """SQL: the orders with these (channel, marketplace order id) pairs."""
    by_channel: dict[SalesChannel, set[str]] = {}
    for order in orders:
        channel, external_id = order.ident
        by_channel.setdefault(channel, set()).add(external_id)
    return or_(
        *(
            and_(Order.channel == channel, Order.external_id.in_(_bucketed(sorted(ids))))
            for channel, ids in sorted(by_channel.items(), key=lambda item: item[0].value)
        )
    )
