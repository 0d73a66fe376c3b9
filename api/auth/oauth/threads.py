"""authlib's server is synchronous: its calls run in a worker thread (``anyio.to_thread``)
and the hooks it calls hop back onto the event loop to use the async database and cache."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple

from anyio import from_thread

Ts = TypeVarTuple("Ts")
R = TypeVar("R")


def on_loop(fn: Callable[[*Ts], Coroutine[Any, Any, R]], *args: *Ts) -> R:
    """Run an async function on the event loop from authlib's worker thread."""
    return from_thread.run(fn, *args)
