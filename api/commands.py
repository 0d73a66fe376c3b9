"""What every `qudao` command shares: the console, failing with a message, the settings and
the composition root, and running a job against the database.

Each domain's commands (``api/<domain>/cli.py``) import these; ``api/cli.py`` assembles the
commands into the `qudao` program.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from api.errors import DomainError
from api.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.db import Database
    from api.wiring import Wiring

T = TypeVar("T")

# Messages go to stderr; stdout carries only what scripts read (tokens, client credentials).
console = Console(stderr=True, soft_wrap=True)

# The CLI option behind a service error's field, where their names differ.
_OPTIONS = {"redirectUris": "--redirect-uri"}


def load_settings() -> Settings:
    """The settings from the environment, with their local directories made (every command)."""
    settings = Settings.from_env()
    settings.ensure_local_dirs()
    return settings


def load_wiring() -> Wiring:
    """The composition root built from the environment's settings: what a job hands the
    services it calls (the same table the API uses)."""
    from api.wiring import build

    return build(load_settings())


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(2)


def fail_with(error: DomainError, *, options: bool = True) -> NoReturn:
    """Each problem on its own line, led by the option to fix (when the caller has options)."""
    for problem in error.problems:
        field = problem.field[0] if problem.field and options else None
        option = _OPTIONS.get(field, f"--{field}") if field else None
        where = f"{option}: " if option else ""
        console.print(f"[bold red]error:[/] [red]{escape(where + problem.message)}[/]")
    raise typer.Exit(2)


def with_db(
    settings: Settings, work: Callable[[Database], Awaitable[T]], *, options: bool = True
) -> T:
    """Run ``work`` with a database of its own; service validation errors exit 2."""
    from api.db import Database

    async def run() -> T:
        db = Database(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except DomainError as error:
        fail_with(error, options=options)


async def find_partner_or_store(session: AsyncSession, kind: str, value: str | None) -> int | None:
    """A partner's or store's id from its numeric id or its code (e.g. SH-DIST)."""
    if value is None:
        return None
    from sqlalchemy import or_, select

    from api.partners.models import Partner, Store

    model = Partner if kind == "partner" else Store
    text = value.strip()
    match = model.code == text
    if text.isdigit():
        match = or_(match, model.id == int(text))
    ids = list(await session.scalars(select(model.id).where(match).limit(2)))
    if not ids:
        fail(f"--{kind}: no {kind} with id or code {text!r}.")
    if len(ids) > 1:
        fail(f"--{kind}: {text!r} is one {kind}'s id and another's code; ambiguous.")
    return ids[0]
