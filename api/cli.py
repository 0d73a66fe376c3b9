"""The `qudao` command."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console

from api.settings import Settings

app = typer.Typer(help="Qudao: partner portal and private-domain CRM API.", no_args_is_help=True)
console = Console(stderr=True)


def _settings() -> Settings:
    settings = Settings.from_env()
    settings.ensure_local_dirs()
    return settings


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes (use Redis when more than one)."),
) -> None:
    """Serve the API (GraphiQL at /graphql)."""
    import uvicorn

    from api.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    if workers > 1 and not settings.redis_url:
        console.print(
            "[yellow]Several workers without REDIS_URL do not share rate limits or "
            "subscriptions; set REDIS_URL.[/]"
        )
    if settings.dev_open_access:
        console.print(
            "[bold red]DEV ONLY:[/] QUDAO_DEV_OPEN_ACCESS is on: requests without a token act "
            "as an HQ admin. Never enable this outside a development machine."
        )
    console.print(
        f"Qudao on http://{host}:{port}/graphql  (database: {_safe(settings.database_url)})"
    )
    uvicorn.run(
        "api.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        timeout_graceful_shutdown=15,
    )


def _safe(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply database migrations."""
    from api.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    console.print(f"[green]Database at {revision}[/] ({_safe(settings.database_url)})")


@app.command()
def seed(demo: bool = typer.Option(False, "--demo", help="Seed the demo channel network.")) -> None:
    """Seed data (only --demo for now; skipped when the database has partners already)."""
    if not demo:
        console.print("Nothing to seed: pass --demo.")
        raise typer.Exit(2)
    from api.db import Database
    from api.seed import seed_demo

    async def run() -> bool:
        db = Database(_settings().database_url)
        try:
            return await seed_demo(db)
        finally:
            await db.dispose()

    seeded = asyncio.run(run())
    console.print("[green]Demo data seeded.[/]" if seeded else "Demo data already present.")


@app.command("export-schema")
def export_schema(
    output: Path = typer.Option(Path("schema.graphql"), help="Where to write the SDL."),
) -> None:
    """Write the GraphQL schema (SDL) generated from code."""
    from api.graphql.schema import export_sdl

    output.write_text(export_sdl(), encoding="utf-8")
    console.print(f"Wrote {output}")
