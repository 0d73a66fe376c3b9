"""authlib's server is synchronous: its calls run in a worker thread (``anyio.to_thread``)
and the hooks it calls hop back onto the event loop to use the async database and cache."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from anyio import from_thread

P = ParamSpec("P")
R = TypeVar("R")


def on_loop(fn: Callable[P, Awaitable[R]], *args: P.args) -> R:
    """Run an async function on the event loop from authlib's worker thread."""
    return from_thread.run(fn, *args)  # type: ignore[arg-type]
