"""How a domain adds itself to the schema: a ``schema_parts`` value in its schema.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SchemaParts:
    query: type | None = None
    mutation: type | None = None
    # A strawberry type whose fields are @strawberry.subscription (served over the websocket).
    subscription: type | None = None
    # Types reachable only through an interface (Node implementations) must be named.
    types: list[Any] = field(default_factory=list)
