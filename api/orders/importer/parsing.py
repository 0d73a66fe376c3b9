"""Reading an import file: its physical lines (none kept whole past a length limit), the
orders of a CSV file (contiguous rows of one order id) or of a JSON-lines file (one a line),
and the batches they go into."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any, TextIO

from api.orders.importer.mapping import Fields, check_total, note, order_key
from api.orders.importer.records import ImportedOrder, OrderImportError, RejectReason, Row

MAX_LINES_PER_ORDER = 200
MAX_LINE_CHARS = 65_536  # one physical line of the file
ORDER_FIELDS = ("marketplace", "order_id", "buyer_id", "phone", "paid_at", "paid")
CSV_REQUIRED = ("marketplace", "order_id", "buyer_id", "paid_at", "paid", "sku", "quantity")
CSV_LINE_PAID = "line_paid"


class Lines:
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


def csv_orders(lines: Lines, fields: Fields) -> tuple[list[str], Iterator[ImportedOrder]]:
    """The header, and the orders of a CSV file: contiguous rows with the same marketplace and
    order id make one order."""
    reader = csv.reader(lines)
    header, columns = _csv_header(reader)
    return header, _csv_grouped(_csv_records(reader, lines, header, columns), fields)


def _csv_header(reader: Iterator[list[str]]) -> tuple[list[str], dict[str, int]]:
    """The header row, and the column of each (normalized) name."""
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
    needed = (*CSV_REQUIRED, CSV_LINE_PAID)
    missing = [name for name in needed if name not in columns]
    if missing:
        raise OrderImportError(
            f"The CSV header lacks {', '.join(missing)}; it needs {', '.join(needed)} "
            "(phone is optional)."
        )
    return header, columns


def _csv_records(
    reader: Iterator[list[str]], lines: Lines, header: list[str], columns: dict[str, int]
) -> Iterator[tuple[Row, dict[str, Any] | None]]:
    """Each row, with its values by column name (None: the row is unreadable)."""
    while True:
        start = lines.number + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Row(start, [], (RejectReason.UNREADABLE, f"line {start}: {error}.")), None
            continue
        row = Row(start, values)
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
            named = {name: values[i].strip() if i < width else None for name, i in columns.items()}
            yield row, named


def _csv_grouped(
    records: Iterator[tuple[Row, dict[str, Any] | None]], fields: Fields
) -> Iterator[ImportedOrder]:
    """The rows grouped into orders, each order's rows checked against its first."""
    current: ImportedOrder | None = None
    for row, values in records:
        key = order_key(values) if values is not None else None
        if current is not None and (key is None or key != current.key):
            yield current if current.continued else check_total(current)
            current = None
        where = f"line {row.line}"
        if values is None or key is None:
            alone = ImportedOrder(key, [row])
            if values is not None:
                fields.order(values, alone, row, where)
            yield alone
            continue
        if current is not None and len(current.rows) >= MAX_LINES_PER_ORDER:
            # Hand over what we have (rejected) and go on with the rest of its rows.
            too_many = f"Order {key} has more than {MAX_LINES_PER_ORDER} lines."
            current.reject(RejectReason.TOO_MANY_LINES, too_many)
            yield current
            current = ImportedOrder(key, [row], continued=True)
            current.reject(RejectReason.TOO_MANY_LINES, too_many)
            continue
        signature = tuple(map(values.get, ORDER_FIELDS))  # stripped text or None
        if current is None:
            current = ImportedOrder(key, [row], signature=signature)
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
                    ORDER_FIELDS, signature, current.signature, strict=True
                )
                if mine != first
            ]
            if differing:
                note(
                    row,
                    [
                        (
                            RejectReason.INCONSISTENT_ORDER,
                            f"{where}: {', '.join(differing)} differ from line "
                            f"{current.first_line}, the first row of order {key}.",
                        )
                    ],
                )
        fields.line(values, CSV_LINE_PAID, current, row, where)
    if current is not None:
        yield current if current.continued else check_total(current)


def jsonl_orders(lines: Lines, fields: Fields) -> Iterator[ImportedOrder]:
    """The orders of a JSON-lines file, one per non-blank line."""
    for text in lines:
        number = lines.number
        where = f"line {number}"
        if lines.last_overlong == number:
            row = Row(number, "")
            row.problem = (
                RejectReason.UNREADABLE,
                f"{where}: longer than {MAX_LINE_CHARS} characters.",
            )
            yield ImportedOrder(None, [row])
            continue
        if not text.strip():
            continue
        row = Row(number, text.rstrip("\r\n"))
        try:
            record = json.loads(text, parse_float=Decimal)
        except (ValueError, RecursionError) as error:
            row.problem = (RejectReason.UNREADABLE, f"{where}: not JSON ({error}).")
            yield ImportedOrder(None, [row])
            continue
        if not isinstance(record, dict):
            row.problem = (RejectReason.UNREADABLE, f"{where}: not a JSON object.")
            yield ImportedOrder(None, [row])
            continue
        values = {str(name).strip().lower(): value for name, value in record.items()}
        order = ImportedOrder(order_key(values), [row])
        fields.order(values, order, row, where)
        items = values.get("lines")
        if not isinstance(items, list) or not items:
            note(row, [(RejectReason.MISSING_FIELD, f"{where}: lines must be a non-empty array.")])
        elif len(items) > MAX_LINES_PER_ORDER:
            note(
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
                    note(row, [(RejectReason.UNREADABLE, f"{spot}: not a JSON object.")])
        yield check_total(order)


def batches(orders: Iterable[ImportedOrder], size: int) -> Iterator[list[ImportedOrder]]:
    batch: list[ImportedOrder] = []
    for order in orders:
        batch.append(order)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
