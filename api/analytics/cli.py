"""`qudao metrics ...`: rebuild (or check) the per-customer metrics, score RFM."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from api.cli_time import parse_now

if TYPE_CHECKING:
    from api.analytics.metrics import MetricsDifference
    from api.db import Database

metrics_app = typer.Typer(help="Per-customer metrics (客户指标) and RFM.", no_args_is_help=True)

# A --check lists at most this many customers in full (and counts them all).
SHOWN_DIFFERENCES = 50


async def _id_ranges(db: Database, batch: int) -> list[range]:
    """Customer ids from the lowest to the highest, ``batch`` at a time."""
    from sqlalchemy import func, select

    from api.customers.models import Customer

    async with db.read() as session:
        low, high = (
            await session.execute(select(func.min(Customer.id), func.max(Customer.id)))
        ).one()
    if low is None:
        return []
    return [range(start, start + batch) for start in range(low, high + 1, batch)]


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _print_differences(found: list[MetricsDifference]) -> None:
    table = Table(title=f"{len(found)} customers differ from a rebuild")
    for column in ("customer", "column", "stored", "rebuilt"):
        table.add_column(column, justify="right" if column == "customer" else "left")
    for difference in found[:SHOWN_DIFFERENCES]:
        stored, rebuilt = difference.stored, difference.rebuilt
        if stored is None:
            table.add_row(str(difference.customer_id), "(row)", "missing", "present")
            continue
        if rebuilt is None:
            table.add_row(str(difference.customer_id), "(row)", "present", "none: no order")
            continue
        for column in difference.columns():
            table.add_row(
                str(difference.customer_id),
                column,
                _shown(stored[column]),
                _shown(rebuilt[column]),
            )
    Console(soft_wrap=True).print(table)
    if len(found) > SHOWN_DIFFERENCES:
        typer.echo(f"... and {len(found) - SHOWN_DIFFERENCES} more customers.")


@metrics_app.command("rebuild")
def rebuild(
    check: bool = typer.Option(
        False,
        "--check",
        help="Write nothing: compare the table with a rebuild, list the customers that "
        "differ and exit 1 if any.",
    ),
    batch: int = typer.Option(
        10_000,
        "--batch",
        min=1,
        max=1_000_000,
        help="Customer ids per transaction (their locks are held until it commits).",
    ),
) -> None:
    """Recompute every customer's metrics from their orders (the table is kept current with
    every order change; this repairs it, and --check verifies it)."""
    # Imported here: `qudao --help` should not load the database layer.
    from api.analytics import metrics
    from api.commands import load_settings, with_db

    async def work(db: Database) -> tuple[int, list[MetricsDifference]]:
        written, found = 0, []
        for ids in await _id_ranges(db, batch):
            if check:
                async with db.read() as session:
                    found += await metrics.metrics_differences(session, ids)
            else:
                async with db.transaction() as session:
                    written += await metrics.rebuild_customer_metrics(session, ids)
        return written, found

    written, found = with_db(load_settings(), work)
    if not check:
        typer.echo(f"Rebuilt the metrics of {written} customers with orders.")
        return
    if not found:
        typer.echo("Every customer's metrics equal a rebuild.")
        return
    _print_differences(found)
    raise typer.Exit(1)


@metrics_app.command("score-rfm")
def score_rfm(
    now: str | None = typer.Option(
        None, "--now", help="Score as of this ISO-8601 time (default: now, UTC)."
    ),
) -> None:
    """Score recency, frequency and monetary value (quintiles, 1-5) of every customer with
    orders, and their RFM segment (run daily, after the orders of the day)."""
    from sqlalchemy import func, select

    from api.analytics import rfm_scoring
    from api.analytics.models import CustomerMetrics
    from api.commands import load_settings, with_db
    from api.db import utcnow

    at = parse_now(now) or utcnow()

    async def work(db: Database) -> tuple[int, Counter[str]]:
        async with db.transaction() as session:
            scored = await rfm_scoring.score_rfm(session, at)
            rows = await session.execute(
                select(CustomerMetrics.rfm_segment, func.count()).group_by(
                    CustomerMetrics.rfm_segment
                )
            )
            return scored, Counter({segment: n for segment, n in rows if segment})

    scored, segments = with_db(load_settings(), work)
    typer.echo(f"Scored {scored} customers as of {at.isoformat()}.")
    if segments:
        table = Table(title="Customers by RFM segment")
        table.add_column("segment")
        table.add_column("customers", justify="right")
        for segment, n in sorted(segments.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(segment, str(n))
        Console(soft_wrap=True).print(table)
