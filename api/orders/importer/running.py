"""Running an import: batches of orders, each in its own transaction (rolled back on a dry
run), orders met twice in a run caught and withdrawn, the summary and the rejects file."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog.models import SalesChannel
from api.conflicts.models import ChannelViolation
from api.customers.marketplace_buyers import BuyerSeen, upsert_marketplace_buyers
from api.orders.importer.mapping import Fields
from api.orders.importer.parsing import Lines, batches, csv_orders, jsonl_orders
from api.orders.importer.records import (
    ImportedOrder,
    ImportFormat,
    OrderImportError,
    RejectReason,
    Row,
)
from api.orders.importer.writing import OrderRows, order_match
from api.orders.models import Order
from api.orders.reactions import OrderChange, OrdersWiring
from api.partners.models import Partner, PartnerType

if TYPE_CHECKING:
    from api.db import Database

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 5_000
MAX_EXAMPLE_LINES = 5  # line numbers the summary lists per reason


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


# --- what the run remembers -----------------------------------------------------------------


class SeenOrders:
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

    def __enter__(self) -> SeenOrders:
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


class RejectsFile:
    """Rejected rows as they were read, each led by its line and reason: a CSV file with the
    input's header after ``reject_line,reject_reason``, or JSON lines with those two keys
    first. The importer ignores those columns, so the file can be fixed and imported."""

    def __init__(self, stream: TextIO, fmt: ImportFormat, header: Sequence[str]) -> None:
        self.stream = stream
        self.writer = csv.writer(self.stream) if fmt is ImportFormat.CSV else None
        if self.writer is not None:
            self.writer.writerow(["reject_line", "reject_reason", *header])

    def write(self, row: Row) -> None:
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
        lines = Lines(stream, options.encoding)
        fields = Fields(now)
        header: Sequence[str] = ()
        if fmt is ImportFormat.CSV:
            header, orders = csv_orders(lines, fields)
        else:
            orders = jsonl_orders(lines, fields)
        with SeenOrders() as seen:
            writer = RejectsFile(rejects, fmt, header) if rejects is not None else None
            importer = _Importer(db, wiring, fmt, options, now, summary, seen, writer)
            for batch in batches(orders, options.batch_size):
                await importer.run(batch)
                summary.bytes_read = source.tell() if source.seekable() else 0
                if on_batch is not None:
                    on_batch(summary)
    finally:
        stream.detach()  # the caller's stream is the caller's to close
    return summary


class _Importer:
    """One run: its batches, what it has met, what it tells."""

    def __init__(
        self,
        db: Database,
        wiring: OrdersWiring,
        fmt: ImportFormat,
        options: ImportOptions,
        now: datetime,
        summary: ImportSummary,
        seen: SeenOrders,
        rejects: RejectsFile | None,
    ) -> None:
        self.db = db
        self.wiring = wiring
        self.fmt = fmt
        self.options = options
        self.now = now
        self.summary = summary
        self.seen = seen
        self.rejects = rejects
        insert = postgresql.insert if not db.is_sqlite else sqlite.insert
        self.rows = OrderRows(options, insert, now)

    async def run(self, batch: list[ImportedOrder]) -> None:
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

    def _repeats(self, batch: list[ImportedOrder]) -> list[ImportedOrder]:
        """Reject orders met before in this run; return the ones whose earlier rows this run
        imported (to be withdrawn: an order is never left half imported)."""
        keys = sorted({o.key for o in batch if o.key is not None and not o.continued})
        earlier = self.seen.find(keys)
        first_here: dict[str, ImportedOrder] = {}
        withdraw: list[ImportedOrder] = []
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
        self, session: AsyncSession, batch: list[ImportedOrder], withdraw: list[ImportedOrder]
    ) -> _Outcome:
        outcome = _Outcome()
        if withdraw:
            await self._withdraw(session, withdraw)
        candidates = [o for o in batch if not o.rejected]
        if not candidates:
            return outcome
        outcome.skipped = await self._on_file(session, candidates)
        fresh = [o for o in candidates if o.ident not in outcome.skipped]
        await self.rows.check_skus(session, fresh)
        fresh = [o for o in fresh if not o.rejected]
        if not fresh:
            return outcome
        # The buyers' customer rows are the customers domain's to find, create and attach.
        upserted = await upsert_marketplace_buyers(
            session, [BuyerSeen(o.buyer, o.phone, o.ident[0].value) for o in fresh], now=self.now
        )
        customer_ids, outcome.customers_created = upserted.customer_ids, upserted.created
        # Sorted: two imports insert overlapping orders in one order and never deadlock.
        fresh.sort(key=lambda o: (o.ident[0].value, o.external_id))
        order_ids = await self.rows.insert_orders(session, fresh, customer_ids)
        stored = [o for o in fresh if o.ident in order_ids]
        outcome.imported = set(order_ids)
        # Not inserted: a concurrent import of the same orders got there first.
        outcome.skipped |= {o.ident for o in fresh} - outcome.imported
        await self.rows.insert_lines(session, stored, order_ids)
        outcome.violations = await self.rows.violations(session, stored, order_ids)
        await self.wiring.changed(
            session,
            OrderChange.IMPORTED,
            [order_ids[o.ident] for o in stored],
            [customer_ids[o.buyer] for o in stored],
            self.now,
        )
        return outcome

    def _tally(
        self, batch: list[ImportedOrder], withdraw: list[ImportedOrder], outcome: _Outcome
    ) -> None:
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

    async def _withdraw(self, session: AsyncSession, orders: list[ImportedOrder]) -> None:
        """Delete orders this run imported from their first rows (lines and events go with
        them; their violations first, which do not cascade)."""
        ids = select(Order.id).where(order_match(orders))
        await session.execute(delete(ChannelViolation).where(ChannelViolation.order_id.in_(ids)))
        gone = (
            await session.execute(
                delete(Order).where(order_match(orders)).returning(Order.id, Order.customer_id)
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
        self, session: AsyncSession, orders: list[ImportedOrder]
    ) -> set[tuple[SalesChannel, str]]:
        rows = await session.execute(
            select(Order.channel, Order.external_id).where(order_match(orders))
        )
        # external_id is never null here: the rows matched it.
        return {(channel, external_id) for channel, external_id in rows if external_id is not None}


def _apart(key: str, other_line: int) -> str:
    return (
        f"Order {key} also has rows from line {other_line}: an order's rows must be next to "
        "each other (sort the file by order id), so it is rejected whole."
    )
