"""`qudao import ...`: bring data from other systems in (marketplace orders)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress, TaskID

    from api.db import Database
    from api.orders.importer.running import ImportSummary

import_app = typer.Typer(help="Import data from other systems.", no_args_is_help=True)

ACTOR = "cli:import-orders"


@import_app.command("orders")
def import_orders(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="The export: .csv or .jsonl."
    ),
    format: str | None = typer.Option(
        None, "--format", help="csv or jsonl (default: from the file's extension)."
    ),
    partner: str | None = typer.Option(
        None,
        "--partner",
        help="The marketplace shop partner (id or code) that sold (default: HQ's flagship).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check and count everything; commit nothing."
    ),
    batch_size: int = typer.Option(
        500, "--batch-size", min=1, max=5_000, help="Orders per transaction."
    ),
    rejects: Path | None = typer.Option(
        None,
        "--rejects",
        dir_okay=False,
        help="Write the rejected rows here, each with its line and reason (same format).",
    ),
    encoding: str = typer.Option(
        "utf-8-sig", "--encoding", help="The file's text encoding (e.g. gbk)."
    ),
) -> None:
    """Import marketplace orders (Tmall, JD, Douyin) from a CSV or JSON-lines export.

    CSV: a header row and one row per order line (an order's rows together), columns
    marketplace, order_id, buyer_id, phone (optional), paid_at (with a UTC offset), paid,
    sku, quantity, line_paid. JSON lines: one order per line, its lines in a "lines" array
    of {sku, quantity, paid}. Idempotent: orders already imported are skipped. Marketplace
    orders earn no points. Exits 1 when rows were rejected, 2 when the file is unusable.
    """
    # Imported here: `qudao --help` should not load the database layer.
    from api.commands import fail, find_partner_or_store, load_wiring, with_db
    from api.db import utcnow
    from api.orders.importer import records, running

    try:
        given = records.ImportFormat(format.strip().lower()) if format else None
    except ValueError:
        fail(f"--format: {format!r} is not csv or jsonl.")
    try:
        fmt = records.detect_format(file, given)
    except records.OrderImportError as error:
        fail(str(error))
    now = utcnow()
    wiring = load_wiring()
    progress = _progress_bar()

    async def work(db: Database) -> ImportSummary:
        partner_id = None
        if partner is not None:
            async with db.read() as session:
                partner_id = await find_partner_or_store(session, "partner", partner)
        options = running.ImportOptions(
            partner_id=partner_id,
            batch_size=batch_size,
            dry_run=dry_run,
            encoding=encoding,
            actor=ACTOR,
            source=file.name,
        )
        task = progress.add_task(
            file.name, total=None, rows=0, rate=0.0, imported=0, skipped=0, rejected=0
        )
        on_batch = _progress_reporter(progress, task)

        with progress:
            return await running.import_orders(
                db,
                source,
                fmt,
                options=options,
                now=now,
                wiring=wiring.orders,
                rejects=sink,
                on_batch=on_batch,
            )

    with ExitStack() as files:
        source = files.enter_context(file.open("rb"))
        sink = (
            files.enter_context(rejects.open("w", encoding="utf-8", newline=""))
            if rejects is not None
            else None
        )
        try:
            summary = with_db(wiring.settings, work)
        except records.OrderImportError as error:
            fail(str(error))
    _print_summary(summary, file, rejects)
    if summary.rows_rejected:
        raise typer.Exit(1)


def _progress_bar() -> Progress:
    """The bar `qudao import orders` shows: bytes read, rows, rate and outcomes so far."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from api.commands import console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rows]:,} rows · {task.fields[rate]:,.0f} rows/s"),
        TextColumn(
            "[green]{task.fields[imported]:,} imported[/] · {task.fields[skipped]:,} skipped"
            " · [red]{task.fields[rejected]:,} rejected[/]"
        ),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _progress_reporter(progress: Progress, task: TaskID) -> Callable[[ImportSummary], None]:
    """What the import calls after each batch: the bar moves by the bytes read."""
    started = time.perf_counter()

    def on_batch(summary: ImportSummary) -> None:
        elapsed = max(time.perf_counter() - started, 1e-9)
        progress.update(
            task,
            total=summary.total_bytes or None,
            completed=summary.bytes_read,
            rows=summary.rows_read,
            rate=summary.rows_read / elapsed,
            imported=summary.orders_imported,
            skipped=summary.orders_skipped,
            rejected=summary.rows_rejected,
        )

    return on_batch


def _print_summary(summary: ImportSummary, file: Path, rejects: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from api.commands import console

    dry = " (dry run: nothing was committed)" if summary.dry_run else ""
    table = Table(title=f"Import of {escape(file.name)}{dry}", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    imported = "Orders that would be imported" if summary.dry_run else "Orders imported"
    rows = [
        ("Rows read", summary.rows_read),
        (imported, summary.orders_imported),
        ("Orders skipped (already imported)", summary.orders_skipped),
        ("Orders rejected", summary.orders_rejected),
        ("Rows rejected", summary.rows_rejected),
        ("Customers created", summary.customers_created),
        ("Channel violations recorded (price band, exclusive SKU)", summary.violations),
    ]
    if summary.orders_withdrawn:
        rows.insert(
            4, ("Orders withdrawn (rows apart, imported earlier)", summary.orders_withdrawn)
        )
    for label, count in rows:
        table.add_row(label, f"{count:,}")
    console.print(table)
    if summary.reasons:
        reasons = Table(title="Rejected rows by reason", title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("rows", justify="right")
        reasons.add_column("first lines")
        for reason, tally in sorted(summary.reasons.items(), key=lambda item: -item[1].rows):
            lines = ", ".join(str(line) for line in tally.lines)
            more = ", …" if tally.rows > len(tally.lines) else ""
            reasons.add_row(reason.value, f"{tally.rows:,}", lines + more)
        console.print(reasons)
        if rejects is not None:
            console.print(f"Rejected rows with their reasons: {escape(str(rejects))}")
    typer.echo(
        f"rows={summary.rows_read} imported={summary.orders_imported} "
        f"skipped={summary.orders_skipped} rejected_orders={summary.orders_rejected} "
        f"rejected_rows={summary.rows_rejected} customers_created={summary.customers_created} "
        f"violations={summary.violations}" + (" dry_run" if summary.dry_run else "")
    )
