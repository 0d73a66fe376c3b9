"""Lists never go N+1: the statements a request takes do not grow with the page."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from api.partners.models import Partner, PartnerStatus, PartnerTerritory, PartnerType, Store

NESTED = """{ partners(first: 50) { edges { node {
    id name territories
    parent { id name }
    stores { edges { node { id name partner { code } } } }
    children(first: 5) { totalCount nodes { code } }
} } } }"""


async def seed(db, partners: int) -> None:
    async with db.transaction() as session:
        await session.execute(
            insert(Partner),
            [
                {
                    "id": i,
                    "code": f"P{i}",
                    "name": f"P{i}",
                    "type": PartnerType.AGENT,
                    "status": PartnerStatus.ACTIVE,
                    "parent_id": 1 if i > 1 else None,
                }
                for i in range(1, partners + 1)
            ],
        )
        await session.execute(
            insert(PartnerTerritory),
            [{"partner_id": i, "region_code": "310115"} for i in range(1, partners + 1)],
        )
        await session.execute(
            insert(Store),
            [
                {
                    "partner_id": i,
                    "code": f"S{i}-{j}",
                    "name": "s",
                    "region_code": "310115",
                    "address": "a",
                    "status": "open",
                }
                for i in range(1, partners + 1)
                for j in range(3)
            ],
        )


@pytest.mark.parametrize("partners", [5, 50])
async def test_nested_partner_list_is_a_fixed_number_of_statements(
    gql, db, count_queries, partners
):
    await seed(db, partners)
    with count_queries() as counter:
        data = await gql(NESTED)
    assert len(data["partners"]["edges"]) == partners
    # partners page, territories, parents, store pages, store partners, child pages, child counts
    assert counter.count == 7, counter.statements


@pytest.mark.parametrize("partners", [5, 50])
async def test_issue_query_partners_stores_parent(gql, db, count_queries, partners):
    await seed(db, partners)
    with count_queries() as counter:
        await gql(
            "{ partners(first: 50) { edges { node { stores { nodes { name } } "
            "parent { name } } } } }"
        )
    assert counter.count == 3, counter.statements  # partners, store pages, parents


async def test_total_count_is_a_query_only_when_asked(gql, db, count_queries):
    await seed(db, 5)
    with count_queries() as without:
        await gql("{ partners { nodes { id } } }")
    with count_queries() as with_count:
        await gql("{ partners { totalCount nodes { id } } }")
    assert (without.count, with_count.count) == (1, 2)
