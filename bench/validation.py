"""What validating the worst documents costs: ``python -m bench.validation``.

For each document, in one process and one run, the pre-execution work of a request as the
server does it, uncached: parse (with the token limit), the guard (``api/graphql/guard.py``)
and, when the guard lets the document through, graphql-core's validation with strawberry's
rules. Printed as the median time and its ratio to ``{ viewer { __typename } }``, measured
interleaved with it (AB BA ...), so the ratio holds whatever the machine's speed.

The documents are the worst shapes found for issue 12: those the guard refuses (fragments
doubling at each level, one field repeated 1,240 times, ...) and those it lets through
because they stay within every limit (the most repeated, widest, deepest documents the limits
allow). Before the guard, the first two took seconds; each doubling level doubled it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, parse
from rich.console import Console
from rich.table import Table
from strawberry.schema.schema import validate_document

from api.graphql.guard import check_document
from api.graphql.schema import build_schema
from api.settings import Settings

BASELINE = "{ viewer { __typename } }"
PARTNER_FIELDS = "id code name type status tier contractStartsOn contractEndsOn createdAt"


def doubling(levels: int) -> str:
    fragments = " ".join(
        f"fragment G{i} on Query {{ ...G{i + 1} ...G{i + 1} }}" for i in range(levels)
    )
    return f"{{ ...G0 }} {fragments} fragment G{levels} on Query {{ __typename }}"


def doubling_into_places(levels: int) -> str:
    fragments = " ".join(
        f"fragment G{i} on Partner {{ parent {{ ...G{i + 1} }} "
        f"children {{ nodes {{ ...G{i + 1} }} }} }}"
        for i in range(levels)
    )
    return (
        f"{{ partners {{ nodes {{ ...G0 }} }} }} {fragments} fragment G{levels} on Partner {{ id }}"
    )


def chain(levels: int) -> str:
    return PARTNER_FIELDS if levels == 0 else f"{PARTNER_FIELDS} parent {{ {chain(levels - 1)} }}"


def repeated_parents(times: int, levels: int) -> str:
    return "{ partners { nodes {" + f" parent {{ {chain(levels)} }}" * times + " } } }"


INTROSPECTION = """query IntrospectionQuery { __schema { queryType { name } mutationType { name }
  subscriptionType { name } types { ...FullType } directives { name description locations
  args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name
  description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue } interfaces { ...TypeRef } enumValues(includeDeprecated: true)
  { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind
  name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } }
  } }"""


@dataclass(frozen=True)
class Case:
    name: str
    query: str
    variables: dict[str, Any] | None = None


CASES = (
    Case("fragments doubling, 20 levels", doubling(20)),
    Case("fragments doubling, 40 levels", doubling(40)),
    Case("doubling into two places, 30 levels", doubling_into_places(30)),
    Case("viewer { __typename } x 1,240", "{" + " viewer { __typename }" * 1240 + " }"),
    Case(
        "chain of 250 fragments",
        "{ ...F0 } "
        + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(250))
        + " fragment F250 on Query { __typename }",
    ),
    Case(
        "50,000 ids in a variable",
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": ["UGFydG5lcjox"] * 50_000},
    ),
    Case("allowed: 10 repeated parents, 9 levels", repeated_parents(10, 9)),
    Case(
        "allowed: viewer x 10, 9 fields each",
        "{"
        + " viewer { kind subject role scopes clientId partner { id name } store { id name } }" * 10
        + " }",
    ),
    Case("allowed: GraphiQL introspection", INTROSPECTION),
)


@dataclass(frozen=True)
class Timing:
    parse_ms: float
    validation_ms: float  # the guard, then graphql-core's rules when the guard lets it by
    refused: bool


def pre_execution(settings: Settings) -> Callable[[Case], Timing]:
    """The server's pre-execution work for a request, uncached, timed in two parts."""
    schema = build_schema(settings)._schema
    limits = settings.document_limits
    rules: tuple[Any, ...] = ()

    def run(case: Case) -> Timing:
        started = time.perf_counter_ns()
        try:
            document = parse(case.query, max_tokens=settings.max_tokens)
        except GraphQLError:
            return Timing((time.perf_counter_ns() - started) / 1e6, 0.0, True)
        parsed = time.perf_counter_ns()
        refused = check_document(schema, document, case.variables, limits) is not None
        if not refused:
            refused = bool(validate_document(schema, document, rules))
        done = time.perf_counter_ns()
        return Timing((parsed - started) / 1e6, (done - parsed) / 1e6, refused)

    return run


def measure(
    run: Callable[[Case], Timing], case: Case, baseline: Case, iterations: int
) -> tuple[Timing, Timing]:
    """Medians of the case and of the baseline, run interleaved (AB BA AB ...)."""
    samples: tuple[list[Timing], list[Timing]] = ([], [])
    for i in range(iterations):
        order = ((case, 0), (baseline, 1)) if i % 2 == 0 else ((baseline, 1), (case, 0))
        for which, side in order:
            samples[side].append(run(which))
    medians = tuple(
        Timing(
            statistics.median(t.parse_ms for t in side),
            statistics.median(t.validation_ms for t in side),
            side[0].refused,
        )
        for side in samples
    )
    return medians[0], medians[1]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.validation",
        description="Pre-execution time of the worst documents, as a ratio to a plain query.",
    )
    parser.add_argument("--iterations", type=int, default=20, help="interleaved runs each")
    args = parser.parse_args(argv)
    settings = Settings()
    run = pre_execution(settings)
    baseline = Case("baseline", BASELINE)
    for _ in range(5):
        run(baseline)
    table = Table(
        title=f"Before execution, uncached, medians of {args.iterations} runs interleaved with "
        f"{BASELINE} (B)",
        title_justify="left",
    )
    columns = ("document", "parse ms", "validation ms", "B validation ms", "÷ B", "total ÷ B")
    for column in (*columns, "answer"):
        table.add_column(column, justify="left" if column == "document" else "right")
    for case in CASES:
        timing, base = measure(run, case, baseline, args.iterations)
        total = timing.parse_ms + timing.validation_ms
        table.add_row(
            case.name,
            f"{timing.parse_ms:.2f}",
            f"{timing.validation_ms:.2f}",
            f"{base.validation_ms:.3f}",
            f"{timing.validation_ms / base.validation_ms:.1f}x",
            f"{total / (base.parse_ms + base.validation_ms):.1f}x",
            "refused" if timing.refused else "validated",
        )
    Console(width=130).print(table)
    print(
        "validation = the guard, then graphql-core's rules when the guard lets the document "
        "by; parse is bounded by the token limit."
    )


if __name__ == "__main__":
    main()
