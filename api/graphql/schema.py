"""Assemble the schema from the domain modules, with the request limits as extensions.

``PARTS`` is the GraphQL side of the composition root (``api/wiring.py``): every domain's
queries, mutations, subscriptions and node types, in this order (which fixes the SDL's field
order). A new domain adds its ``schema_parts`` here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxTokensLimiter, ParserCache, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from api.analytics.graphql import schema as analytics
from api.auth import schema as auth
from api.catalog import schema as catalog
from api.conflicts import schema as conflicts
from api.coupons import graphql as coupons
from api.customers import graphql as customers
from api.graphql.audit import AuditTrail
from api.graphql.context import Context, NodeLoader
from api.graphql.errors import log_unexpected
from api.graphql.limits import CostLimit, GuardedValidation
from api.graphql.parts import SchemaParts
from api.graphql.relay import NodeQuery
from api.graphql.scalars import SCALAR_MAP
from api.graphql.subscriptions import SocketContext, coded_results
from api.growth import schema as growth
from api.inventory import schema as inventory
from api.loyalty import schema as loyalty
from api.orders import schema as orders
from api.partners import schema as partners
from api.purchasing import schema as purchasing
from api.referrals import schema as referrals
from api.segments import schema as segments
from api.settings import Settings

PARTS: tuple[SchemaParts, ...] = (
    partners.schema_parts,
    auth.schema_parts,
    customers.schema_parts,
    loyalty.schema_parts,
    coupons.schema_parts,
    catalog.schema_parts,
    inventory.schema_parts,
    orders.schema_parts,
    purchasing.schema_parts,
    conflicts.schema_parts,
    growth.schema_parts,
    referrals.schema_parts,
    analytics.schema_parts,
    segments.schema_parts,
)
Query = merge_types("Query", (NodeQuery, *(p.query for p in PARTS if p.query)))
Mutation = merge_types("Mutation", tuple(p.mutation for p in PARTS if p.mutation))
_SUBSCRIPTIONS = tuple(p.subscription for p in PARTS if p.subscription)
Subscription = merge_types("Subscription", _SUBSCRIPTIONS) if _SUBSCRIPTIONS else None
NODE_TYPES = [t for p in PARTS for t in p.types]
NODE_LOADERS: Mapping[str, NodeLoader] = {
    name: load for p in PARTS for name, load in p.nodes.items()
}


class QudaoSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (bad input, validation) are the client's business; log only bugs,
        # and count failures of an unavailable database in its outage log.
        context = execution_context.context if execution_context else None
        log_unexpected(errors, context.db.outage if isinstance(context, Context) else None)

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        # Subscriptions stream over the websocket only: over HTTP one would run as a query
        # and answer null. Refused here, the HTTP view answers 400.
        allowed = (
            {OperationType.QUERY, OperationType.MUTATION}
            if allowed_operation_types is None
            else set(allowed_operation_types)
        )
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed - {OperationType.SUBSCRIPTION},
            operation_extensions,
        )

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> Any:
        """An operation of the websocket (no HTTP streaming transport is enabled).

        Only subscriptions run there: queries and mutations go over HTTP, the one way in for
        them (audited and limited per request). Each operation gets its own context, and its
        errors are coded as over HTTP.
        """
        if isinstance(context_value, SocketContext):
            context_value = context_value.for_operation()
        results = await super().stream(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            operation_extensions,
            allowed_operation_types=(OperationType.SUBSCRIPTION,),
        )
        return coded_results(results)


def build_schema(settings: Settings) -> strawberry.Schema:
    # Depth, aliases and the rest of a document's shape are checked by GuardedValidation in
    # one linear pass before graphql-core's rules run (strawberry's depth and alias limiters
    # expanded fragments without memory: exponential in a doubling chain of fragments).
    limits = settings.document_limits
    # Extensions are factories: strawberry builds fresh instances per operation, so
    # per-request state (the computed cost) never leaks between requests.
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        AuditTrail,
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: ParserCache(maxsize=settings.parser_cache_size),
        lambda: GuardedValidation(limits=limits, cache_size=settings.parser_cache_size),
        lambda: CostLimit(
            limit=settings.max_cost,
            page_cap=settings.page_cap,
            default_page=settings.default_page_size,
        ),
    ]
    return QudaoSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=NODE_TYPES,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
    )


def export_sdl(settings: Settings | None = None) -> str:
    return build_schema(settings or Settings()).as_str() + "\n"


__all__ = ["build_schema", "export_sdl"]
