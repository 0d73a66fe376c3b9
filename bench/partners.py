"""Partner and store benchmarks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from api.graphql.ids import decode_id_of
from bench.registry import Benchmark, register

PARTNERS = 100
STORES_PER_PARTNER = 10

PARTNERS_WITH_STORES = f"""
query PartnersWithStores {{
  partners(first: {PARTNERS}) {{
    edges {{ node {{
      id name code
      stores(first: {STORES_PER_PARTNER}) {{ edges {{ node {{ id name regionCode }} }} }}
    }} }}
  }}
}}"""

# One round trip: the first page of partners by id, joined to at most the first
# STORES_PER_PARTNER stores of each by id (ROW_NUMBER works on SQLite and PostgreSQL alike).
PARTNERS_WITH_STORES_SQL = text(
    """
    WITH p AS (
      SELECT id, name, code FROM partner ORDER BY id LIMIT :partners
    ), s AS (
      SELECT id, partner_id, name, region_code,
             ROW_NUMBER() OVER (PARTITION BY partner_id ORDER BY id) AS rn
      FROM store WHERE partner_id IN (SELECT id FROM p)
    )
    SELECT p.id, p.name, p.code, s.id AS store_id, s.name AS store_name, s.region_code
    FROM p LEFT JOIN s ON s.partner_id = p.id AND s.rn <= :stores
    ORDER BY p.id, s.id
    """
)

Shape = list[tuple[int, str, str, list[tuple[int, str, str]]]]


async def partners_with_stores_sql(conn: AsyncConnection) -> Shape:
    result = await conn.execute(
        PARTNERS_WITH_STORES_SQL, {"partners": PARTNERS, "stores": STORES_PER_PARTNER}
    )
    partners: Shape = []
    for pid, name, code, store_id, store_name, region_code in result.all():
        if not partners or partners[-1][0] != pid:
            partners.append((pid, name, code, []))
        if store_id is not None:
            partners[-1][3].append((store_id, store_name, region_code))
    return partners


def check_partners_with_stores(data: dict[str, Any], raw: Shape) -> None:
    graphql: Shape = []
    for edge in data["partners"]["edges"]:
        node = edge["node"]
        stores = [
            (decode_id_of(s["node"]["id"], "Store"), s["node"]["name"], s["node"]["regionCode"])
            for s in node["stores"]["edges"]
        ]
        graphql.append((decode_id_of(node["id"], "Partner"), node["name"], node["code"], stores))
    assert graphql == raw, "GraphQL and raw SQL fetched different partners/stores"
    assert raw, "no partners: is the database empty?"


register(
    Benchmark(
        name="partners_with_stores",
        description=f"{PARTNERS} partners by id, {STORES_PER_PARTNER} stores each",
        query=PARTNERS_WITH_STORES,
        raw=partners_with_stores_sql,
        check=check_partners_with_stores,
    )
)
