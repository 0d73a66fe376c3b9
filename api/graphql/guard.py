"""One linear pass over a parsed request, before graphql-core validates it.

Validation is where a small document can cost the most: fragments that each spread the next
one twice double the work per level for any walk that expands them (strawberry's depth and
alias limiters did, and so did our cost walk), and graphql-core's OverlappingFieldsCanBeMerged
compares every pair of fields selected under the same name at the same place, across
fragments and repeated parents (1,240 ``viewer { __typename }`` took 2.75 s). So this pass
measures, in time linear in the document plus a fixed budget, what those walks would face,
and refuses the request before they run:

* depth (fields nested in fields, through fragments; introspection fields are not counted,
  as strawberry's limiter did) and aliases (counted through fragments), with the messages
  clients saw from strawberry's limiters;
* fields once fragments are expanded, and fragments (spreads and inline) once expanded: the
  expansion stops at the budget, so a doubling chain costs at most the budget to refuse;
* at each place of the response (fields merged by response name, as execution merges them),
  how many fields are selected there and how many times one name is: the overlap rule's
  pairwise comparisons grow with the square of that;
* fragment cycles, which would make the expansion endless (reported as graphql-core does).

It also checks the request's input values, literals and variables alike, so no field can
forget to: every list and every string is bounded in length, and text may not hold control
characters (tab and line breaks aside) or lone surrogates, which PostgreSQL refuses (NUL),
no engine can encode (a lone surrogate), and a terminal would interpret (escapes). A few
fields check text themselves and answer with a payload error the clients already rely on
(``DOMAIN_CHECKED_TEXT``); there only the length is bounded here.

Everything is iterative: a document nested a thousand levels deep cannot exhaust the stack.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    type_from_ast,
)

from api.graphql.scalars import decimal_problem
from api.text import describe_character, forbidden_character

# Inputs whose domain checks text itself and reports a bad character as a payload error with
# its own code (and, for the segment language, its line and column): clients rely on those
# answers, so the generic refusal leaves these to them. Only the length is bounded here.
# tests/graphql/test_guard.py proves each coordinate exists and is still checked.
DOMAIN_CHECKED_TEXT = frozenset(
    {
        "ReferralCampaignCreateInput.name",
        "ReferralAcceptInput.code",
        "ReferralAcceptInput.deviceId",
        "SegmentCreateInput.name",
        "SegmentCreateInput.description",
        "SegmentCreateInput.query",
        "SegmentUpdateInput.name",
        "SegmentUpdateInput.description",
        "SegmentUpdateInput.query",
        "Query.segmentPreview(query:)",
    }
)


# Lists whose domain caps them far lower and answers with a message clients rely on (the
# customers filter's 50 values, a merge's sources), before decoding a single id: the generic
# cap would answer first with another message. The body cap still bounds them.
DOMAIN_CAPPED_LISTS = frozenset(
    {
        "CustomerFilter.tags",
        "CustomerFilter.anyTags",
        "CustomerFilter.levelIds",
        "CustomerFilter.levelCodes",
        "CustomerFilter.recruitedStoreIds",
        "CustomerFilter.recruitedGuideIds",
        "CustomerFilter.recruitedPartnerIds",
        "CustomersMergeInput.sourceIds",
    }
)


# Money inputs whose domain refuses a non-finite or out-of-range amount itself, with the
# payload error clients rely on (INVALID, AMOUNT_OUT_OF_RANGE, INVALID_AMOUNT).
DOMAIN_CHECKED_DECIMALS = frozenset(
    {
        "ChannelSpendRecordInput.amount",
        "SkuInput.suggestedRetailPrice",
        "SkuInput.costPrice",
        "SkuUpdateInput.suggestedRetailPrice",
        "SkuUpdateInput.costPrice",
        "PriceBandInput.floor",
        "PriceBandInput.ceiling",
        "PriceBandInput.listPrice",
    }
)


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_depth: int
    max_aliases: int
    max_fields: int  # fields, once fragments are expanded
    max_fragments: int  # fragment spreads and inline fragments, once expanded
    max_selection_fields: int  # fields selected at one place of the response
    max_repeats: int  # times one response name is selected at one place
    max_list_length: int
    max_string_length: int
    max_input_depth: int  # lists and objects within one value
    max_input_values: int  # values in all inputs of a request, however nested


class DocumentRefused(GraphQLError):
    """Refused before validation: a shape past a limit (no code of its own: classified
    GRAPHQL_VALIDATION_FAILED) or an input value past a bound (BAD_USER_INPUT)."""


def _validation_error(message: str, nodes: Node | list[Node] | None = None) -> DocumentRefused:
    # No code of its own: it is classified GRAPHQL_VALIDATION_FAILED, like the limiters' were.
    return DocumentRefused(message, nodes)


def _input_error(message: str, nodes: Node | None = None) -> DocumentRefused:
    return DocumentRefused(message, nodes, extensions={"code": "BAD_USER_INPUT"})


class _Place:
    """A place in the response: the fields merged there under one response name."""

    __slots__ = ("below", "fields", "times")

    def __init__(self) -> None:
        self.fields = 0
        self.times: dict[str, int] = {}  # response name -> times selected here
        # Fields of one name merge into one place below this one, however many times (and
        # through whichever fragments) they are selected: that is what the overlap rule
        # compares, and what execution merges.
        self.below: dict[str, _Place] = {}


@dataclass(slots=True)
class _Shape:
    """Counts over the whole document, shared by the walks of every definition."""

    limits: DocumentLimits
    fields: int = 0
    fragments: int = 0
    aliases: int = 0


def check_document(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    limits: DocumentLimits,
) -> GraphQLError | None:
    """The first reason to refuse this request before validation, or None."""
    refused, inputs = _remembered_checks(schema, document, limits)
    if refused is not None or not inputs.declared:
        return refused
    try:
        # The walk of the document is shared by every request of it: count on a copy.
        copy.copy(inputs).check_variables(variables or {})
    except DocumentRefused as refusal:
        return refusal
    return None


_Checks = tuple[DocumentRefused | None, "_Inputs"]
# The checks of recent documents, by their text (hashing the text is cheap; hashing a
# document node walks the whole tree), most recently used last.
_REMEMBERED: OrderedDict[tuple[str, DocumentLimits], _Checks] = OrderedDict()
_REMEMBERED_MAX = 512


def _remembered_checks(
    schema: GraphQLSchema, document: DocumentNode, limits: DocumentLimits
) -> _Checks:
    """What depends on the document alone (its shape, its literals, where its variables are
    used) is worked out once per document text, for every request that sends it."""
    text = document.loc.source.body if document.loc is not None else None
    if text is None:
        return _document_checks(schema, document, limits)
    key = (text, limits)
    found = _REMEMBERED.get(key)
    if found is not None and found[1].schema is schema:
        _REMEMBERED.move_to_end(key)
        return found
    found = _document_checks(schema, document, limits)
    if found[0] is None:  # what is refused is not kept (nor sent twice by a good client)
        _REMEMBERED[key] = found
        if len(_REMEMBERED) > _REMEMBERED_MAX:
            _REMEMBERED.popitem(last=False)
    return found


def _document_checks(
    schema: GraphQLSchema, document: DocumentNode, limits: DocumentLimits
) -> _Checks:
    fragments: dict[str, FragmentDefinitionNode] = {}
    operations: list[OperationDefinitionNode] = []
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(definition.name.value, definition)
        elif isinstance(definition, OperationDefinitionNode):
            operations.append(definition)
    inputs = _Inputs(schema, fragments, operations, limits)
    try:
        _refuse_cycles(fragments)
        shape = _Shape(limits)
        for operation in operations:
            name = operation.name.value if operation.name else "anonymous"
            _expand(shape, operation.selection_set, fragments, depth_of=name)
        # Fragments no operation spreads are validated too (and reported unused): measure
        # them on their own. Those spread were measured where they are.
        used = _reachable(operations, fragments)
        for name, fragment in fragments.items():
            if name not in used:
                _expand(shape, fragment.selection_set, fragments, depth_of=None)
        if shape.aliases > limits.max_aliases:
            raise _validation_error(f"{shape.aliases} aliases found. Allowed: {limits.max_aliases}")
        inputs.check_literals()
    except DocumentRefused as refused:
        return refused, inputs
    return None, inputs


def _refuse_cycles(fragments: Mapping[str, FragmentDefinitionNode]) -> None:
    """A fragment that spreads itself, directly or not, would expand forever."""
    spreads = {name: list(_spreads_in(f.selection_set)) for name, f in fragments.items()}
    done: set[str] = set()
    for start in fragments:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending: list[Iterator[str]] = [iter(spreads[start])]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                pending.pop()
                done.add(on_path_name := path.pop())
                on_path.discard(on_path_name)
            elif target in on_path:
                via = path[path.index(target) + 1 :]
                through = f" via {', '.join(repr(n) for n in via)}" if via else ""
                raise _validation_error(
                    f"Cannot spread fragment '{target}' within itself{through}.",
                    fragments[target],
                )
            elif target in fragments and target not in done:
                path.append(target)
                on_path.add(target)
                pending.append(iter(spreads[target]))


def _reachable(
    operations: list[OperationDefinitionNode], fragments: Mapping[str, FragmentDefinitionNode]
) -> set[str]:
    """Names of the fragments the operations spread, directly or through other fragments."""
    found: set[str] = set()
    pending = [name for operation in operations for name in _spreads_in(operation.selection_set)]
    while pending:
        name = pending.pop()
        if name in found or name not in fragments:
            continue
        found.add(name)
        pending.extend(_spreads_in(fragments[name].selection_set))
    return found


def _spreads_in(selection_set: SelectionSetNode) -> Iterator[str]:
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            elif (
                isinstance(selection, FieldNode | InlineFragmentNode)
                and selection.selection_set is not None
            ):
                stack.append(selection.selection_set)


def _expand(
    shape: _Shape,
    root: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    *,
    depth_of: str | None,
) -> None:
    """Walk the selections of one definition with its fragments expanded, within budget.

    ``depth_of`` names the operation whose depth is measured (fragments are measured where
    they are spread, as strawberry's limiter did); None for a fragment walked on its own.
    """
    limits = shape.limits
    root_place = _Place()
    # (selection set, the place its fields land at, depth of its fields, depth counted)
    stack: list[tuple[SelectionSetNode, _Place, int, bool]] = [(root, root_place, 0, True)]
    while stack:
        selection_set, place, depth, counted = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                shape.fields += 1
                if shape.fields > limits.max_fields:
                    raise _validation_error(
                        f"The document selects more than {limits.max_fields} fields once its "
                        "fragments are expanded.",
                        selection,
                    )
                name = selection.name.value
                if selection.alias is not None and depth_of is not None:
                    shape.aliases += 1
                if depth_of is not None and counted and depth > limits.max_depth:
                    raise _validation_error(
                        f"'{depth_of}' exceeds maximum operation depth of {limits.max_depth}",
                        selection,
                    )
                response_name = selection.alias.value if selection.alias else name
                _select(place, response_name, selection, limits)
                if selection.selection_set is not None:
                    child = place.below.setdefault(response_name, _Place())
                    # Introspection is not data access: GraphiQL's query is deeper than any.
                    keep_counting = counted and not name.startswith("__")
                    stack.append((selection.selection_set, child, depth + 1, keep_counting))
            else:
                shape.fragments += 1
                if shape.fragments > limits.max_fragments:
                    raise _validation_error(
                        f"The document uses more than {limits.max_fragments} fragments once "
                        "its fragments are expanded.",
                        selection,
                    )
                if isinstance(selection, InlineFragmentNode):
                    stack.append((selection.selection_set, place, depth, counted))
                elif (
                    isinstance(selection, FragmentSpreadNode)
                    and (fragment := fragments.get(selection.name.value)) is not None
                ):
                    stack.append((fragment.selection_set, place, depth, counted))


def _select(place: _Place, response_name: str, node: FieldNode, limits: DocumentLimits) -> None:
    place.fields += 1
    if place.fields > limits.max_selection_fields:
        raise _validation_error(
            f"More than {limits.max_selection_fields} fields are selected at one place "
            "(fragments included).",
            node,
        )
    times = place.times.get(response_name, 0) + 1
    place.times[response_name] = times
    if times > limits.max_repeats:
        raise _validation_error(
            f"'{response_name}' is selected more than {limits.max_repeats} times at one place "
            "(fragments and repeated parents included): select it once.",
            node,
        )


class _Inputs:
    """Every input value of the document (literals, variables, variables' defaults), walked
    once with the type it has at its place: lists and strings bounded, text checked.

    A value's coordinate is that of the argument or input field it is given to (its list
    items and a JSON value's members share it): it says whether the domain checks the text,
    or caps the list, itself."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        operations: list[OperationDefinitionNode],
        limits: DocumentLimits,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.operations = operations
        self.limits = limits
        # Each variable is walked once, with the type its operation declares (two operations
        # declaring it differently: no type, so no exemption applies), after the literals
        # have shown where it is used.
        self.declared: dict[str, Any] = {}
        self.defaults: dict[str, ValueNode] = {}
        for operation in operations:
            for definition in operation.variable_definitions or ():
                name = definition.variable.name.value
                declared = type_from_ast(schema, definition.type)
                if name in self.declared and str(self.declared[name]) != str(declared):
                    declared = None
                self.declared[name] = declared
                if definition.default_value is not None:
                    self.defaults.setdefault(name, definition.default_value)
        self.used_at: dict[str, set[str]] = {}
        self.values = 0

    def check_literals(self) -> None:
        stack: list[tuple[SelectionSetNode, GraphQLNamedType | None]] = []
        for operation in self.operations:
            stack.append((operation.selection_set, self.schema.get_root_type(operation.operation)))
        for fragment in self.fragments.values():
            condition = fragment.type_condition.name.value
            stack.append((fragment.selection_set, self.schema.get_type(condition)))
        while stack:
            selection_set, parent = stack.pop()
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    stack.extend(self._field(selection, parent))
                elif isinstance(selection, InlineFragmentNode):
                    named = selection.type_condition
                    target = self.schema.get_type(named.name.value) if named else parent
                    stack.append((selection.selection_set, target))

    def check_variables(self, variables: Mapping[str, Any]) -> None:
        for name, declared in self.declared.items():
            # Exempt only where every use is at the same exempt place: else the strict rule.
            places = self.used_at.get(name, set())
            coordinate = next(iter(places)) if len(places) == 1 else ""
            if name in variables:
                self._json(variables[name], declared, f"${name}", coordinate)
            elif name in self.defaults:
                self._literal(self.defaults[name], declared, f"${name}", coordinate)

    def _field(
        self, node: FieldNode, parent: GraphQLNamedType | None
    ) -> list[tuple[SelectionSetNode, GraphQLNamedType | None]]:
        definition = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(node.name.value)
        for argument in node.arguments or ():
            name = argument.name.value
            arg = definition.args.get(name) if definition else None
            coordinate = f"{parent.name}.{node.name.value}({name}:)" if parent else ""
            self._literal(argument.value, arg.type if arg else None, name, coordinate)
        if node.selection_set is None:
            return []
        target = _named(definition.type) if definition else None
        return [(node.selection_set, target)]

    def _literal(self, root: ValueNode, expected: Any, path: str, coordinate: str) -> None:
        stack: list[tuple[ValueNode, Any, str, str]] = [(root, expected, path, coordinate)]
        while stack:
            value, expected, path, coordinate = stack.pop()
            self._count()
            inner = _nullable(expected)
            if isinstance(value, VariableNode):
                self._variable(value, coordinate)
            elif isinstance(value, StringValueNode | IntValueNode | FloatValueNode):
                if _is_decimal(inner):
                    self._decimal(value.value, path, coordinate, value)
                if isinstance(value, StringValueNode):
                    self._string(value.value, path, coordinate, value)
            elif isinstance(value, ListValueNode):
                if self._length(len(value.values), path, coordinate, value):
                    item_type = inner.of_type if isinstance(inner, GraphQLList) else None
                    stack.extend((item, item_type, path, coordinate) for item in value.values)
            elif isinstance(value, ObjectValueNode):
                self._length(len(value.fields), path, "", value)
                for item in value.fields:
                    name = item.name.value
                    item_type, item_coordinate = self._input_field(inner, name, coordinate)
                    stack.append((item.value, item_type, f"{path}.{name}", item_coordinate))

    def _variable(self, node: VariableNode, coordinate: str) -> None:
        self.used_at.setdefault(node.name.value, set()).add(coordinate)

    def _json(self, root: Any, expected: Any, path: str, coordinate: str) -> None:
        stack: list[tuple[Any, Any, str, str, int]] = [(root, expected, path, coordinate, 0)]
        while stack:
            value, expected, path, coordinate, depth = stack.pop()
            self._count()
            inner = _nullable(expected)
            if isinstance(value, str | int | float) and _is_decimal(inner):
                self._decimal(str(value), path, coordinate)
            if isinstance(value, str):
                self._string(value, path, coordinate)
                continue
            if not isinstance(value, list | dict):
                continue
            if depth >= self.limits.max_input_depth:
                raise _input_error(
                    f"`{path}` nests lists and objects more than "
                    f"{self.limits.max_input_depth} levels deep."
                )
            if isinstance(value, list):
                if self._length(len(value), path, coordinate):
                    item_type = inner.of_type if isinstance(inner, GraphQLList) else None
                    stack.extend((item, item_type, path, coordinate, depth + 1) for item in value)
            else:
                self._length(len(value), path, "")  # a JSON object's members, like a list's
                for key, item in value.items():
                    # Keys are text too: a JSON scalar's keys reach the database.
                    self._string(key, path, coordinate)
                    item_type, item_coordinate = self._input_field(inner, key, coordinate)
                    stack.append((item, item_type, f"{path}.{key}", item_coordinate, depth + 1))

    def _input_field(self, parent: Any, name: str, coordinate: str) -> tuple[Any, str]:
        if not isinstance(parent, GraphQLInputObjectType):
            return None, coordinate  # a JSON scalar's members, or a mistake validation reports
        definition = parent.fields.get(name)
        return (definition.type if definition else None), f"{parent.name}.{name}"

    def _count(self) -> None:
        # However values nest, walking them costs at most this many steps (a 1 MB body can
        # hold a few hundred thousand, each a step of this walk).
        self.values += 1
        if self.values > self.limits.max_input_values:
            raise _input_error(
                f"A request holds at most {self.limits.max_input_values} input values."
            )

    def _length(self, length: int, path: str, coordinate: str, node: Node | None = None) -> bool:
        """Whether to walk the items of a list (or members of an object) this long."""
        if length <= self.limits.max_list_length:
            return True
        if coordinate in DOMAIN_CAPPED_LISTS:
            # Its domain refuses it, with its own message, before using any item.
            return False
        raise _input_error(
            f"A list holds at most {self.limits.max_list_length} values; `{path}` has {length}.",
            node,
        )

    def _decimal(self, text: str, path: str, coordinate: str, node: Node | None = None) -> None:
        if coordinate in DOMAIN_CHECKED_DECIMALS:
            return
        if (problem := decimal_problem(text)) is not None:
            raise _input_error(f"`{path}`: {problem}.", node)

    def _string(self, text: str, path: str, coordinate: str, node: Node | None = None) -> None:
        if len(text) > self.limits.max_string_length:
            raise _input_error(
                f"A text value is at most {self.limits.max_string_length} characters; "
                f"`{path}` has {len(text)}.",
                node,
            )
        if coordinate in DOMAIN_CHECKED_TEXT:
            return
        if (bad := forbidden_character(text, breaks=True)) is not None:
            raise _input_error(
                f"`{path}` cannot hold {describe_character(text[bad])} (at offset {bad}): text "
                "may hold no control characters but tabs and line breaks, and no lone "
                "surrogates.",
                node,
            )


def _is_decimal(type_: Any) -> bool:
    return isinstance(type_, GraphQLScalarType) and type_.name == "Decimal"


def _nullable(type_: Any) -> Any:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


def _named(type_: Any) -> GraphQLNamedType | None:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


__all__ = [
    "DOMAIN_CAPPED_LISTS",
    "DOMAIN_CHECKED_TEXT",
    "DocumentLimits",
    "DocumentRefused",
    "check_document",
]
