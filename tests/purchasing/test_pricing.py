"""Which price a partner pays: tier list vs contract vs quantity break, worked by hand."""

from __future__ import annotations

import pytest

from api.errors import DomainError
from api.partners.models import PartnerTier, PartnerType
from api.purchasing import pricing
from api.purchasing.errors import PurchasingErrorCode as Code
from api.purchasing.pricing import BreakDraft, ItemDraft, PriceBasis, discounted
from tests.purchasing.conftest import DAY, HQ, T0, partner_admin, price_list


@pytest.mark.parametrize(
    ("cents", "bp", "expected"),
    [
        (1999, 300, 1939),  # 1939.03 → down
        (1030, 500, 979),  # 978.5 → half-up (banker's rounding would say 978)
        (1, 5000, 1),  # 0.5 → up
        (3, 5000, 2),  # 1.5 → up
        (1000, 0, 1000),
    ],
)
def test_discount_rounds_half_up_to_the_cent(cents, bp, expected):
    assert discounted(cents, bp) == expected


async def quote(db, partner_id: int, sku: int, quantity: int, *, now=T0):
    async with db.read() as session:
        return await pricing.quote_one(session, partner_id, sku, quantity, now)


async def test_tier_list_then_breaks_by_quantity(db, world):
    await price_list(
        db,
        [
            ItemDraft(
                world.tea,
                1999,
                breaks=[BreakDraft(50, 300), BreakDraft(100, 550)],
            )
        ],
        tier=PartnerTier.A,
        name="A tier",
    )
    small, fifty, hundred = [await quote(db, world.a, world.tea, q) for q in (49, 50, 120)]
    assert (small.unit_price_cents, small.break_min_quantity, small.discount_bp) == (1999, None, 0)
    # 1999 × 0.97 = 1939.03 → 1939; 50 × 1939 = 96950
    assert (fifty.unit_price_cents, fifty.line_total_cents, fifty.break_min_quantity) == (
        1939,
        96950,
        50,
    )
    # The largest break reached: 1999 × 0.945 = 1889.055 → 1889; 120 × 1889 = 226680
    assert (hundred.unit_price_cents, hundred.line_total_cents, hundred.discount_bp) == (
        1889,
        226680,
        550,
    )
    assert hundred.basis is PriceBasis.TIER
    assert "A tier" in hundred.explain() and "5.5% off from 100 units" in hundred.explain()


async def test_contract_beats_tier_and_type_beats_tier_beats_type(db, world):
    await price_list(db, [ItemDraft(world.cup, 700)], partner_type=PartnerType.DISTRIBUTOR)
    assert (await quote(db, world.a, world.cup, 1)).basis is PriceBasis.TYPE
    await price_list(db, [ItemDraft(world.cup, 650)], tier=PartnerTier.A)
    assert (await quote(db, world.a, world.cup, 1)).unit_price_cents == 650
    await price_list(
        db, [ItemDraft(world.cup, 600)], tier=PartnerTier.A, partner_type=PartnerType.DISTRIBUTOR
    )
    assert (await quote(db, world.a, world.cup, 1)).basis is PriceBasis.TIER_AND_TYPE
    await price_list(db, [ItemDraft(world.cup, 500)], partner_id=world.a, name="A contract")
    found = await quote(db, world.a, world.cup, 1)
    assert (found.unit_price_cents, found.basis, found.price_list_name) == (
        500,
        PriceBasis.CONTRACT,
        "A contract",
    )
    # B is tier B, an agent: none of A's lists apply to it.
    refused = await quote(db, world.b, world.cup, 1)
    assert isinstance(refused, DomainError)
    assert refused.problems[0].code is Code.NO_PRICE


async def test_the_newest_edition_wins_and_an_expired_list_says_so(db, world):
    await price_list(db, [ItemDraft(world.pot, 1000)], tier=PartnerTier.B, valid_from=T0 - 9 * DAY)
    await price_list(db, [ItemDraft(world.pot, 1100)], tier=PartnerTier.B, valid_from=T0 - DAY)
    assert (await quote(db, world.b, world.pot, 1)).unit_price_cents == 1100
    # A future edition does not apply yet.
    await price_list(db, [ItemDraft(world.pot, 1200)], tier=PartnerTier.B, valid_from=T0 + DAY)
    assert (await quote(db, world.b, world.pot, 1)).unit_price_cents == 1100
    # The only list for tea expired yesterday.
    await price_list(
        db,
        [ItemDraft(world.tea, 900)],
        tier=PartnerTier.B,
        valid_from=T0 - 9 * DAY,
        valid_until=T0 - DAY,
    )
    refused = await quote(db, world.b, world.tea, 1)
    assert isinstance(refused, DomainError)
    assert refused.problems[0].code is Code.PRICE_LIST_EXPIRED


async def test_bad_price_lists_are_refused_with_their_fields(db, world):
    bad = pricing.PriceListDraft(
        name=" ",
        valid_from=T0,
        valid_until=T0 - DAY,
        items=[
            ItemDraft(world.tea, -1, min_quantity=0, pack_size=0, breaks=[BreakDraft(1, 10000)]),
            ItemDraft(world.tea, 100),
        ],
        currency="cny",
    )
    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await pricing.create_price_list(session, HQ, bad)
    fields = {(p.code, p.field) for p in refused.value.problems}
    assert (Code.REQUIRED, ("tier",)) in fields
    assert (Code.INVALID, ("validUntil",)) in fields
    assert (Code.INVALID, ("items", "0", "unitPriceCents")) in fields
    assert (Code.INVALID, ("items", "0", "packSize")) in fields
    assert (Code.INVALID, ("items", "0", "breaks", "0", "discountBasisPoints")) in fields
    assert (Code.INVALID, ("items",)) in fields  # tea twice
    assert (Code.INVALID, ("currency",)) in fields


async def test_only_hq_publishes_price_lists(db, world):
    draft = pricing.PriceListDraft(
        name="mine", valid_from=T0, items=[ItemDraft(world.tea, 1)], partner_id=world.a
    )
    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await pricing.create_price_list(session, partner_admin(world.a), draft)
    assert refused.value.problems[0].code is Code.FORBIDDEN
