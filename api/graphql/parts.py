"""How a domain adds itself to the schema: a ``schema_parts`` value in its schema module,
listed in ``api/graphql/schema.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from api.graphql.context import NodeLoader


@dataclass(frozen=True, slots=True)
class SchemaParts:
    query: type | None = None
    mutation: type | None = None
    # A strawberry type whose fields are @strawberry.subscription (served over the websocket).
    subscription: type | None = None
    # Types reachable only through an interface (Node implementations) must be named.
    types: list[Any] = field(default_factory=list)
    # How `node`/`nodes` load each of this domain's node types by primary keys. A loader
    # applies the principal's scope: an object the caller may not see then answers exactly
    # like a missing one.
    nodes: Mapping[str, NodeLoader] = field(default_factory=dict)
