"""`qudao orders ...`: the order jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from api.cli_time import parse_now

if TYPE_CHECKING:
    from api.db import Database
    from api.orders.lifecycle.expiry import ExpiryRun

orders_app = typer.Typer(help="Orders (订单).", no_args_is_help=True)


@orders_app.command("expire-pickups")
def expire_pickups(
    now: str | None = typer.Option(
        None, "--now", help="Run as of this ISO-8601 time (default: now, UTC)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Expire at most this many orders (default: all due)."
    ),
) -> None:
    """Expire pickup orders past their window: release their stock, give back their points
    and coupons, tell the members (run every few minutes; safe alongside pickups)."""
    # Imported here: `qudao --help` should not load the database layer.
    from api.commands import load_wiring, with_db
    from api.db import utcnow
    from api.orders.lifecycle import expiry

    at = parse_now(now) or utcnow()
    wiring = load_wiring()

    async def work(db: Database) -> ExpiryRun:
        return await expiry.expire_pickups(db, now=at, limit=limit, wiring=wiring.orders)

    run = with_db(wiring.settings, work)
    console = Console(soft_wrap=True)
    summary = f"Expired {run.expired} pickup orders as of {at.isoformat()}"
    if run.skipped:
        summary += f"; {run.skipped} were picked up or cancelled meanwhile"
    console.print(summary + ".")
    if run.failed:
        failed = ", ".join(str(order_id) for order_id in run.failed)
        console.print(
            f"[bold red]{len(run.failed)} could not be expired (see the log):[/] {failed}"
        )
    if run.by_store:
        table = Table(title="Expired by store")
        table.add_column("store", justify="right")
        table.add_column("orders", justify="right")
        for store_id, count in sorted(run.by_store.items(), key=lambda kv: kv[0] or 0):
            table.add_row("-" if store_id is None else str(store_id), str(count))
        console.print(table)
    if run.failed:
        raise typer.Exit(1)
