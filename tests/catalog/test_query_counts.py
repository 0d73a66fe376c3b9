"""A page of products costs a fixed number of statements, however many products it holds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import insert

from api.catalog.models import (
    PriceBand,
    Product,
    ProductStatus,
    SalesChannel,
    Sku,
    SkuExclusiveChannel,
)

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


async def seed(db, products: int) -> None:
    """``products`` products of three SKUs, each SKU with two bands and an exclusive channel."""
    async with db.transaction() as session:
        await session.execute(
            insert(Product),
            [
                {
                    "id": p,
                    "code": f"P{p}",
                    "name": f"P{p}",
                    "status": ProductStatus.ACTIVE,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for p in range(1, products + 1)
            ],
        )
        skus = [(p, 3 * p + i) for p in range(1, products + 1) for i in range(3)]
        await session.execute(
            insert(Sku),
            [
                {
                    "id": s,
                    "product_id": p,
                    "code": f"S{s}",
                    "name": f"S{s}",
                    "currency": "CNY",
                    "suggested_retail_price": Decimal(100),
                    "cost_price": Decimal(40),
                    "active": True,
                    "created_at": NOW,
                }
                for p, s in skus
            ],
        )
        await session.execute(
            insert(PriceBand),
            [
                {"sku_id": s, "channel": c, "floor": Decimal(80), "ceiling": Decimal(120)}
                for _, s in skus
                for c in (SalesChannel.MINI_PROGRAM, SalesChannel.WEB)
            ],
        )
        await session.execute(
            insert(SkuExclusiveChannel),
            [{"sku_id": s, "channel": SalesChannel.MINI_PROGRAM} for _, s in skus],
        )


ISSUE_QUERY = """{ products(first: 50) { edges { node { code
    skus { code priceBands { channel floor { amount } ceiling { amount } listPrice { amount } } }
} } } }"""

EVERYTHING = """{ products(first: 50) { totalCount nodes { code name status
    skus { code active suggestedRetailPrice { amount } costPrice { amount }
           product { code } exclusiveChannels priceBands { channel floor { amount } }
           defaultPrice(channel: MINI_PROGRAM) { amount } }
} } }"""


@pytest.mark.parametrize("products", [5, 50])
async def test_products_with_skus_and_bands_is_three_statements(gql, db, count_queries, products):
    await seed(db, products)
    with count_queries() as counter:
        data = await gql(ISSUE_QUERY)
    nodes = [e["node"] for e in data["products"]["edges"]]
    assert len(nodes) == products
    assert [len(n["skus"]) for n in nodes] == [3] * products
    assert [b["channel"] for b in nodes[-1]["skus"][-1]["priceBands"]] == ["MINI_PROGRAM", "WEB"]
    # The products page, every product's SKUs, every SKU's bands: one statement each.
    assert counter.count == 3, counter.statements


@pytest.mark.parametrize("products", [5, 50])
async def test_every_catalog_field_is_a_fixed_number_of_statements(
    gql, db, count_queries, products
):
    await seed(db, products)
    with count_queries() as counter:
        data = await gql(EVERYTHING)
    assert data["products"]["totalCount"] == products
    sku = data["products"]["nodes"][-1]["skus"][-1]
    assert sku["exclusiveChannels"] == ["MINI_PROGRAM"]
    assert sku["defaultPrice"] == {"amount": "100.00"}
    # The page and its count; SKUs; products of the SKUs (Sku.product and defaultPrice share
    # the batch); exclusive channels; bands.
    assert counter.count == 6, counter.statements
