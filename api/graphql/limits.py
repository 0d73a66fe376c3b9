"""Request limits that run before anything executes: page sizes and query cost.

strawberry's token limiter and parser cache bound parsing; the guard (``guard.py``, run by
GuardedValidation) bounds the shape of a document before validation; what is left is a cost
limit that understands connections. The cost of a query here:

* a scalar or enum field costs 0, an object field 1 plus its selections;
* a connection field costs 1 plus its ``pageInfo``/``totalCount`` selections, plus
  ``first``/``last`` (default page size when absent) times the cost of ``edges``/``nodes``:
  ``partners(first: 50) { edges { node { stores(first: 10) { nodes { name } } } } }``
  costs 1 + 50 × (1 + 1 + (1 + 10 × 1)) = 701.
* ``nodes(ids:)`` multiplies by the number of ids.

The figure is reported as ``extensions.cost`` on every response, so clients can budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    get_named_type,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension, ValidationCache

from api.graphql.guard import DocumentLimits, check_document

_PAGED_CHILDREN = frozenset({"edges", "nodes"})


class CostLimitExceeded(GraphQLError):
    pass


class _CostWalk:
    """The cost of a validated document, in time linear in its size.

    Each fragment is costed once and remembered: its cost does not depend on where it is
    spread (its type condition fixes the parent, the variables are the request's), so a
    fragment spread many times, or fragments spreading each other, cost one walk each.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        page_cap: int,
        default_page: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.page_cap = page_cap
        self.default_page = default_page
        self.costed: dict[str, tuple[int, int]] = {}

    def selection_set(self, node: SelectionSetNode | None, parent: Any) -> int:
        paged, other = self.split(node, parent)
        return paged + other

    def split(self, node: SelectionSetNode | None, parent: Any) -> tuple[int, int]:
        """(cost of the ``edges``/``nodes`` fields, cost of the others) of a selection set,
        fragments included: in a connection the first part is multiplied by the page size,
        whether those fields are selected directly or through a fragment on the connection."""
        paged = other = 0
        for selection in node.selections if node else ():
            if isinstance(selection, FieldNode):
                cost = self.field(selection, parent)
                if selection.name.value in _PAGED_CHILDREN:
                    paged += cost
                else:
                    other += cost
            elif isinstance(selection, InlineFragmentNode):
                target = (
                    self.schema.get_type(selection.type_condition.name.value)
                    if selection.type_condition
                    else parent
                )
                inner_paged, inner_other = self.split(selection.selection_set, target)
                paged, other = paged + inner_paged, other + inner_other
            elif isinstance(selection, FragmentSpreadNode):
                inner_paged, inner_other = self.fragment(selection.name.value)
                paged, other = paged + inner_paged, other + inner_other
        return paged, other

    def fragment(self, name: str) -> tuple[int, int]:
        if name not in self.costed:
            fragment = self.fragments.get(name)
            if fragment is None:  # validation reports it
                return 0, 0
            self.costed[name] = (0, 0)  # a cycle (refused before costing) adds nothing
            target = self.schema.get_type(fragment.type_condition.name.value)
            self.costed[name] = self.split(fragment.selection_set, target)
        return self.costed[name]

    def field(self, node: FieldNode, parent: Any) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(
            parent, GraphQLObjectType | GraphQLInterfaceType
        ):
            return 0
        definition = parent.fields.get(name)
        if definition is None:
            return 0
        target = get_named_type(definition.type)
        if not isinstance(target, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
            return 0
        args = self.arguments(node)
        if target.name.endswith("Connection"):
            paged, other = self.split(node.selection_set, target)
            return 1 + other + self.page_size(node, args) * paged
        multiplier = len(args["ids"]) if isinstance(args.get("ids"), list) else 1
        return multiplier * (1 + self.selection_set(node.selection_set, target))

    def arguments(self, node: FieldNode) -> dict[str, Any]:
        values = {
            arg.name.value: value_from_ast_untyped(arg.value, self.variables)
            for arg in node.arguments or ()
        }
        # An argument bound to a variable the request did not send is absent, not a value.
        return {name: value for name, value in values.items() if value is not Undefined}

    def page_size(self, node: FieldNode, args: dict[str, Any]) -> int:
        sizes = [args.get("first"), args.get("last")]
        for name, size in zip(("first", "last"), sizes, strict=True):
            if size is not None and (not isinstance(size, int) or not 0 <= size <= self.page_cap):
                raise GraphQLError(
                    f"`{name}` must be between 0 and {self.page_cap}; got {size}.",
                    nodes=[node],
                    extensions={"code": "BAD_USER_INPUT"},
                )
        given = [s for s in sizes if isinstance(s, int)]
        return max(given) if given else self.default_page


def query_cost(
    schema: GraphQLSchema,
    document: Any,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    *,
    page_cap: int,
    default_page: int,
) -> int:
    fragments = {}
    operations = []
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments[definition.name.value] = definition
        elif isinstance(definition, OperationDefinitionNode):
            operations.append(definition)
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return 0  # strawberry reports the missing or ambiguous operation itself
    operation = operations[0]
    root = schema.get_root_type(operation.operation)
    walk = _CostWalk(schema, fragments, variables or {}, page_cap, default_page)
    return walk.selection_set(operation.selection_set, root)


class GuardedValidation(ValidationCache):
    """strawberry's cached validation, preceded by the linear guard (``guard.py``): a request
    the guard refuses never reaches graphql-core's rules, whose cost it bounds."""

    def __init__(self, *, limits: DocumentLimits, cache_size: int) -> None:
        super().__init__(maxsize=cache_size)
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            variables = context.variables if isinstance(context.variables, dict) else None
            refused = check_document(context.schema._schema, document, variables, self.limits)
            context.pre_execution_errors = (
                [refused]
                if refused is not None
                else self.cached_validate_document(
                    context.schema._schema, document, context.validation_rules
                )
            )
        yield


class CostLimit(SchemaExtension):
    """Refuse, before execution, a query whose cost is over the limit or whose page size is
    over the cap; report the cost in ``extensions.cost``.

    Must come after GuardedValidation in the extension list: it costs only documents that
    validated.
    """

    def __init__(self, *, limit: int, page_cap: int, default_page: int) -> None:
        self.limit = limit
        self.page_cap = page_cap
        self.default_page = default_page
        self.cost: int | None = None

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if not context.pre_execution_errors and context.graphql_document is not None:
            try:
                self.cost = query_cost(
                    context.schema._schema,
                    context.graphql_document,
                    context.operation_name,
                    context.variables,
                    page_cap=self.page_cap,
                    default_page=self.default_page,
                )
            except GraphQLError as error:
                context.pre_execution_errors = [error]
            else:
                if self.cost > self.limit:
                    context.pre_execution_errors = [
                        CostLimitExceeded(
                            f"Query cost {self.cost} is over the limit of {self.limit}: "
                            "ask for smaller pages or fewer nested connections.",
                            extensions={"code": "COST_LIMIT_EXCEEDED"},
                        )
                    ]
        yield

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requested": self.cost, "limit": self.limit}}
