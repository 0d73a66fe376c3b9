"""No document can make validation expensive: the shapes that used to take seconds of CPU
(fragments doubling at each level, one field repeated a thousand times, ...) are refused by
one linear pass before graphql-core validates them, without a token, and the work that pass
does stays within a fixed budget however the document grows. Work is counted (selections
visited, rule visits), never timed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from graphql.validation.rules.overlapping_fields_can_be_merged import (
    OverlappingFieldsCanBeMergedRule,
)

from api.graphql import guard, limits
from api.graphql.guard import DOMAIN_CAPPED_LISTS, DOMAIN_CHECKED_DECIMALS, DOMAIN_CHECKED_TEXT
from api.graphql.schema import build_schema
from api.settings import Settings


@pytest_asyncio.fixture
async def anonymous(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A caller without a token: the attacker of issue 12 needed none."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qudao.test"
    ) as http:
        yield http


class Work:
    """What the pre-execution steps did for one request: selections the guard looked at,
    selection sets graphql-core's overlap rule visited, fields the cost walk costed."""

    def __init__(self) -> None:
        self.guard_selections = 0
        self.overlap_visits = 0
        self.costed_fields = 0


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Iterator[Work]:
    # The guard remembers what it found per document: forget, so its work is seen again.
    guard._REMEMBERED.clear()
    counted = Work()
    select, enter, field = (
        guard._select,
        OverlappingFieldsCanBeMergedRule.enter_selection_set,
        limits._CostWalk.field,
    )

    def counting_select(*args: Any) -> None:
        counted.guard_selections += 1
        select(*args)

    def counting_enter(self: Any, *args: Any) -> None:
        counted.overlap_visits += 1
        enter(self, *args)

    def counting_field(self: Any, *args: Any) -> int:
        counted.costed_fields += 1
        return field(self, *args)

    monkeypatch.setattr(guard, "_select", counting_select)
    monkeypatch.setattr(OverlappingFieldsCanBeMergedRule, "enter_selection_set", counting_enter)
    monkeypatch.setattr(limits._CostWalk, "field", counting_field)
    yield counted


async def refusal(http: httpx.AsyncClient, query: str, variables: Any = None) -> dict:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


def doubling_chain(levels: int, leaf: str = "__typename") -> str:
    """Each fragment spreads the next one twice: 2**levels leaves once expanded."""
    fragments = " ".join(
        f"fragment G{i} on Query {{ ...G{i + 1} ...G{i + 1} }}" for i in range(levels)
    )
    return f"{{ ...G0 }} {fragments} fragment G{levels} on Query {{ {leaf} }}"


@pytest.mark.parametrize("levels", [20, 40])
async def test_fragments_doubling_at_each_level_are_refused_with_bounded_work(
    anonymous, work, settings, levels
):
    error = await refusal(anonymous, doubling_chain(levels))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "'__typename' is selected more than 10 times at one place" in error["message"]
    # Refused after a handful of selections, whatever the number of levels: never expanded.
    assert work.guard_selections <= settings.max_repeats + 1
    assert work.overlap_visits == 0
    assert work.costed_fields == 0


async def test_a_doubling_chain_into_distinct_places_is_refused_with_bounded_work(
    anonymous, work, settings
):
    # Each level spreads the next fragment at two places (no name repeats at one place):
    # 2**30 fields once expanded. Refused (here by depth, met first walking down) after at
    # most the field budget's worth of work.
    fragments = " ".join(
        f"fragment G{i} on Partner {{ parent {{ ...G{i + 1} }} "
        f"children {{ nodes {{ ...G{i + 1} }} }} }}"
        for i in range(30)
    )
    query = f"{{ partners {{ nodes {{ ...G0 }} }} }} {fragments} fragment G30 on Partner {{ id }}"
    error = await refusal(anonymous, query)
    assert error["message"] == "'anonymous' exceeds maximum operation depth of 12"
    assert work.guard_selections <= settings.max_fields + 1
    assert work.overlap_visits == 0


async def test_many_fragments_each_spread_once_are_refused(anonymous, work, settings):
    # A long chain doubles nothing, but each spread is work for every rule that expands it.
    count = settings.max_fragments + 50
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(count))
    query = f"{{ ...F0 }} {fragments} fragment F{count} on Query {{ __typename }}"
    error = await refusal(anonymous, query)
    assert f"more than {settings.max_fragments} fragments" in error["message"]
    assert work.overlap_visits == 0


async def test_one_field_repeated_a_thousand_times_is_refused_before_the_overlap_rule(
    anonymous, work
):
    error = await refusal(anonymous, "{" + " viewer { __typename }" * 1240 + " }")
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "'viewer' is selected more than 10 times at one place" in error["message"]
    assert work.overlap_visits == 0


async def test_repeats_are_counted_across_repeated_parents_and_fragments(anonymous, work):
    # Five `viewer`s each selecting `partner` three times, through two fragments: 15 times
    # at the place viewer.partner, which is what the overlap rule compares pairwise.
    query = """{ viewer { ...A } viewer { ...A } viewer { ...A } viewer { ...A } viewer { ...A } }
        fragment A on Viewer { partner { id } ...B }
        fragment B on Viewer { partner { id } partner { name } }"""
    error = await refusal(anonymous, query)
    assert "'partner' is selected more than 10 times at one place" in error["message"]
    assert work.overlap_visits == 0


async def test_too_many_fields_at_one_place_are_refused(anonymous, work, settings):
    # Twenty root fields, each selected ten times through fragments, and one alias: 201
    # fields at one place, no name more than ten times.
    roots = (
        "__typename viewer { kind } memberLevels { code } "
        "rfmDistribution { segments { customers } } "
        + " ".join(
            f"{name} {{ totalCount }}"
            for name in (
                "partners stores auditEvents customers pointsEarningRules couponTemplates "
                "products stockLevels stockMovements stockAlerts orders channelViolations "
                "touchpoints referralCampaigns channelSpends segments"
            ).split()
        )
    )
    fragments = " ".join(f"fragment Q{i} on Query {{ {roots} }}" for i in range(10))
    spreads = " ".join(f"...Q{i}" for i in range(10))
    error = await refusal(anonymous, f"{{ {spreads} one: __typename }} {fragments}")
    assert f"More than {settings.max_selection_fields} fields" in error["message"]
    assert work.overlap_visits == 0


async def test_a_fragment_cycle_is_refused_before_it_is_expanded(anonymous, work):
    query = """{ ...A } fragment A on Query { viewer { kind } ...B }
        fragment B on Query { ...C } fragment C on Query { ...A }"""
    error = await refusal(anonymous, query)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"] == "Cannot spread fragment 'A' within itself via 'B', 'C'."
    assert work.overlap_visits == 0


async def test_depth_is_measured_through_fragments(anonymous):
    query = (
        "{ partners { nodes { ...D0 } } } "
        + " ".join(f"fragment D{i} on Partner {{ parent {{ ...D{i + 1} }} }}" for i in range(12))
        + " fragment D12 on Partner { id }"
    )
    error = await refusal(anonymous, query)
    assert error["message"] == "'anonymous' exceeds maximum operation depth of 12"


async def test_aliases_are_counted_through_fragments(anonymous):
    query = "{ ...A ...B } fragment A on Query { " + " ".join(
        f"a{i}: __typename" for i in range(20)
    )
    query += " } fragment B on Query { " + " ".join(f"b{i}: __typename" for i in range(11)) + " }"
    error = await refusal(anonymous, query)
    assert error["message"] == "31 aliases found. Allowed: 30"


async def test_nesting_past_the_parser_limit_is_a_parse_error_not_a_crash(anonymous):
    query = "{" + " ... on Query {" * 600 + " __typename" + " }" * 600 + " }"
    error = await refusal(anonymous, query)
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


async def test_a_huge_list_variable_is_refused_before_it_is_coerced(anonymous, work):
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    error = await refusal(anonymous, query, {"ids": ["UGFydG5lcjox"] * 50_000})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "A list holds at most 1000 values; `$ids` has 50000."
    assert work.overlap_visits == 0


async def test_a_plain_query_costs_one_walk_per_fragment(gql, work):
    # The cost walk remembers each fragment: spread eight times, F is costed once.
    query = (
        "{ partners(first: 2) { nodes { ...F ...F ...F ...F } } "
        "p2: partners(first: 2) { nodes { ...F ...F ...F ...F } } } "
        "fragment F on Partner { parent { id } stores(first: 2) { nodes { id } } }"
    )
    body = await gql.raw(query)
    assert "errors" not in body
    # partners and nodes twice each, then F's five fields (parent, id, stores, nodes, id) once.
    assert work.costed_fields == 4 + 5


async def test_edges_selected_through_a_fragment_on_the_connection_are_multiplied(gql):
    inline = await gql.raw(
        "{ partners(first: 100) { nodes { stores(first: 100) { nodes { id } } } } }"
    )
    through_fragment = await gql.raw(
        "{ partners(first: 100) { ...Page } } "
        "fragment Page on PartnerConnection { nodes { stores(first: 100) { nodes { id } } } }"
    )
    # 1 + 100 x (nodes 1 + stores (1 + 100 x nodes 1)): the fragment used to hide the pages.
    assert inline["extensions"]["cost"]["requested"] == 10_201
    assert through_fragment["extensions"]["cost"] == inline["extensions"]["cost"]


def test_every_input_left_to_its_domain_exists_in_the_schema():
    # The inputs left to their domain's text check or list cap must not rot: each names an
    # input field (Type.field) or an argument (Type.field(arg:)) of the schema.
    schema = build_schema(Settings())._schema
    for coordinate in DOMAIN_CHECKED_TEXT | DOMAIN_CAPPED_LISTS | DOMAIN_CHECKED_DECIMALS:
        type_name, _, member = coordinate.partition(".")
        field_name, _, argument = member.partition("(")
        definition = schema.get_type(type_name).fields[field_name]
        if argument:
            assert argument.rstrip(":)") in definition.args, coordinate


async def test_fragments_are_counted_once_where_they_are_spread(gql):
    # 1,920 fields through fragments: within the budget of 2,000. Counting each fragment
    # again on its own (190 more) would refuse a document that is merely large.
    fields = "id code name type status tier contractStartsOn contractEndsOn createdAt"
    fragments = " ".join(
        f"fragment P{i} on Partner {{ {fields} parent {{ {fields} }} }}" for i in range(10)
    )
    spreads = " ".join(f"...P{i}" for i in range(10))
    aliases = " ".join(f"a{i}: partners(first: 1) {{ nodes {{ {spreads} }} }}" for i in range(10))
    body = await gql.raw(f"{{ {aliases} }} {fragments}")
    assert "errors" not in body, body["errors"]


async def test_a_variable_used_at_many_places_is_walked_once(anonymous, monkeypatch):
    walks = 0
    walk = guard._Inputs._json

    def counting(self: Any, *args: Any) -> None:
        nonlocal walks
        walks += 1
        walk(self, *args)

    monkeypatch.setattr(guard._Inputs, "_json", counting)
    uses = " ".join(f"s{i}: sku(code: $code) {{ id }}" for i in range(25))
    response = await anonymous.post(
        "/graphql",
        json={"query": f"query($code: String!) {{ {uses} }}", "variables": {"code": "x" * 9000}},
    )
    assert response.status_code == 200
    assert walks == 1


ATTRIBUTES = """mutation($v: JSON) { customerUpsert(input: {name: "Ann", attributes: $v}) {
    errors { code } } }"""


async def test_a_megabyte_of_small_values_is_refused_after_a_bounded_walk(
    anonymous, monkeypatch, settings
):
    steps = 0
    count = guard._Inputs._count

    def counting(self: Any) -> None:
        nonlocal steps
        steps += 1
        count(self)

    monkeypatch.setattr(guard._Inputs, "_count", counting)
    guard._REMEMBERED.clear()  # the literals' values are counted once a document
    value = [[1] * 300 for _ in range(1000)]  # 300,000 values in 0.9 MB, no list too long
    error = await refusal(anonymous, ATTRIBUTES, {"v": value})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == f"A request holds at most {settings.max_input_values} input values."
    assert steps == settings.max_input_values + 1


async def test_a_json_object_is_bounded_like_a_list(anonymous):
    error = await refusal(anonymous, ATTRIBUTES, {"v": {f"k{i}": 1 for i in range(1001)}})
    assert error["message"] == "A list holds at most 1000 values; `$v` has 1001."


async def test_the_checks_of_a_document_are_made_once_for_all_its_requests(anonymous, work):
    query = "query($code: String!) { sku(code: $code) { id } viewer { kind } }"
    for code in ("TEA-1", "TEA-2", "TEA\u0000"):
        response = await anonymous.post(
            "/graphql", json={"query": query, "variables": {"code": code}}
        )
        assert response.status_code == 200
    assert work.guard_selections == 4  # sku, id, viewer, kind: once, not once a request
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
