"""Assemble the schema from the domain modules, with the request limits as extensions."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.query_depth_limiter import IgnoreContext
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from api.auth.schema import AuditEvent, AuthQuery
from api.graphql.audit import AuditTrail
from api.graphql.errors import log_unexpected
from api.graphql.limits import CostLimit
from api.graphql.relay import NodeQuery
from api.partners.schema import Partner, PartnerMutation, PartnerQuery, Store
from api.settings import Settings

Query = merge_types("Query", (NodeQuery, AuthQuery, PartnerQuery))
Mutation = merge_types("Mutation", (PartnerMutation,))
NODE_TYPES = [Partner, Store, AuditEvent]


def _is_introspection(context: IgnoreContext) -> bool:
    # GraphiQL's introspection query is deeper than any real query; it is not data access.
    return context.field_name.startswith("__")


class QudaoSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (bad input, validation) are the client's business; log only bugs.
        log_unexpected(errors)


def build_schema(settings: Settings) -> strawberry.Schema:
    # The depth and alias rules are built once: each limiter instance mints a new rule class,
    # and the validation cache is keyed by the rule classes, so per-request limiters would
    # make every request miss it.
    rules = [
        *QueryDepthLimiter(
            max_depth=settings.max_depth, should_ignore=_is_introspection
        ).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    # Extensions are factories: strawberry builds fresh instances per operation, so
    # per-request state (the computed cost) never leaks between requests.
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        AuditTrail,
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: ParserCache(maxsize=settings.parser_cache_size),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=settings.parser_cache_size),
        lambda: CostLimit(
            limit=settings.max_cost,
            page_cap=settings.page_cap,
            default_page=settings.default_page_size,
        ),
    ]
    return QudaoSchema(
        query=Query,
        mutation=Mutation,
        types=NODE_TYPES,
        extensions=extensions,  # type: ignore[arg-type]
    )


def export_sdl(settings: Settings | None = None) -> str:
    return build_schema(settings or Settings()).as_str() + "\n"


__all__ = ["build_schema", "export_sdl"]
