"""``skus_for_order``: what orders price lines with. At most two statements for any number of
SKUs; unknown SKUs are left out; the band is the asked channel's."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from api.catalog import editing, queries
from api.catalog.editing import ProductChanges, ProductDraft
from api.catalog.models import ProductStatus, SalesChannel
from api.catalog.queries import Band
from api.catalog.rules import BandDraft, SkuDraft
from tests.catalog.conftest import HQ

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
D = Decimal


def sku(code: str, **overrides) -> SkuDraft:
    """SRP 100, cost 40; MINI_PROGRAM 80-120 listed at 99 and TMALL 85-115 (of those, the
    bands of the channels an exclusive SKU is sold on)."""
    values = {
        "code": code,
        "name": code,
        "suggested_retail_price": D("100"),
        "cost_price": D("40"),
        "price_bands": [
            BandDraft(SalesChannel.MINI_PROGRAM, D("80"), D("120"), D("99")),
            BandDraft(SalesChannel.TMALL, D("85"), D("115")),
        ],
    }
    values.update(overrides)
    if values.get("exclusive_channels"):
        values["price_bands"] = [
            b for b in values["price_bands"] if b.channel in values["exclusive_channels"]
        ]
    return SkuDraft(**values)


async def create(db, code: str, skus: list[SkuDraft]) -> int:
    async with db.transaction() as session:
        product = await editing.create_product(
            session, HQ, ProductDraft(code=code, name=code, skus=skus), now=NOW
        )
        return product.id


async def priced(db, channel: SalesChannel, **named) -> list[queries.PricedSku]:
    async with db.read() as session:
        return await queries.skus_for_order(session, channel, **named)


async def test_a_sku_priced_for_a_channel(db):
    await create(
        db,
        "TEA",
        [
            sku("TEA-1"),
            sku("NET-1", exclusive_channels=[SalesChannel.WEB, SalesChannel.MINI_PROGRAM]),
        ],
    )
    tea, net = await priced(db, SalesChannel.MINI_PROGRAM, codes=["TEA-1", "NET-1"])
    assert (tea.sku_id, tea.code, tea.product_id, tea.name, tea.currency) == (
        1,
        "TEA-1",
        1,
        "TEA-1",
        "CNY",
    )
    assert (tea.suggested_retail_price, tea.cost_price, tea.active) == (D("100"), D("40"), True)
    assert tea.band == Band(D("80.00"), D("120.00"), D("99.00"))
    assert tea.default_price == D("99.00")
    assert tea.exclusive_channels == frozenset()
    assert tea.sellable_on(SalesChannel.STORE_POS)
    assert net.exclusive_channels == {SalesChannel.WEB, SalesChannel.MINI_PROGRAM}
    assert net.sellable_on(SalesChannel.WEB) and not net.sellable_on(SalesChannel.TMALL)

    (on_tmall,) = await priced(db, SalesChannel.TMALL, ids=[1])
    assert on_tmall.band == Band(D("85.00"), D("115.00"), None)
    assert on_tmall.default_price == D("100.00")  # no list price: the SRP
    (on_pos,) = await priced(db, SalesChannel.STORE_POS, ids=[1])
    assert on_pos.band is None and on_pos.default_price == D("100.00")


async def test_unknown_skus_are_left_out_and_ids_and_codes_mix(db):
    await create(db, "TEA", [sku("TEA-1"), sku("TEA-2"), sku("TEA-3")])
    found = await priced(db, SalesChannel.WEB, ids=[3, 99, 3], codes=["TEA-1", "NOPE"])
    assert [s.code for s in found] == ["TEA-1", "TEA-3"]
    assert await priced(db, SalesChannel.WEB, ids=[42]) == []


async def test_inactive_skus_and_archived_products_are_not_active(db):
    product = await create(db, "TEA", [sku("TEA-1"), sku("TEA-2")])
    async with db.transaction() as session:
        await editing.update_sku(session, HQ, 2, editing.SkuChanges(active=False))
    assert [s.active for s in await priced(db, SalesChannel.WEB, ids=[1, 2])] == [True, False]
    async with db.transaction() as session:
        await editing.update_product(
            session, HQ, product, ProductChanges(status=ProductStatus.ARCHIVED), now=NOW
        )
    assert [s.active for s in await priced(db, SalesChannel.WEB, ids=[1, 2])] == [False, False]


@pytest.mark.parametrize("size", [1, 40])
async def test_two_statements_for_any_number_of_skus(db, count_queries, size):
    await create(
        db,
        "TEA",
        [sku(f"TEA-{i}", exclusive_channels=[SalesChannel.MINI_PROGRAM]) for i in range(size)],
    )
    with count_queries() as counter:
        found = await priced(db, SalesChannel.MINI_PROGRAM, codes=[f"TEA-{i}" for i in range(size)])
    assert len(found) == size
    assert all(s.band is not None and s.exclusive_channels for s in found)
    assert counter.count == 2, counter.statements


async def test_nothing_asked_nothing_read(db, count_queries):
    with count_queries() as counter:
        assert await priced(db, SalesChannel.WEB) == []
        assert await priced(db, SalesChannel.WEB, codes=["NOPE"]) == []
    assert counter.count == 1  # the lookup that found nothing; no exclusive-channel read
