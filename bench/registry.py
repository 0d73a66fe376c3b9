"""The benchmark registry: a GraphQL query and the raw SQL that fetches the same data.

Add a benchmark by calling ``register(Benchmark(...))`` in a module of this package and
listing that module in ``MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

# Modules that register benchmarks when imported.
MODULES = ("bench.partners", "bench.auth")

RawFn = Callable[[AsyncConnection], Awaitable[Any]]
CheckFn = Callable[[dict[str, Any], Any], None]


@dataclass(frozen=True)
class Benchmark:
    name: str
    # The GraphQL operation, POSTed to /graphql; the response must carry no errors.
    query: str
    # Fetches the same data with raw SQL on a connection from the app's engine, all rows
    # fetched: the minimal I/O a perfect server would do for this query. Returns the rows.
    raw: RawFn
    variables: dict[str, Any] | None = None
    # Called once before timing with (GraphQL `data`, what `raw` returned): raise (assert)
    # when the two sides did not fetch the same data, so the ratio compares like with like.
    check: CheckFn | None = None
    description: str = field(default="")


REGISTRY: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    if benchmark.name in REGISTRY:
        raise ValueError(f"benchmark {benchmark.name!r} registered twice")
    REGISTRY[benchmark.name] = benchmark
    return benchmark


def load() -> dict[str, Benchmark]:
    for module in MODULES:
        importlib.import_module(module)
    return REGISTRY
