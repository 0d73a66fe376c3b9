"""Who each query selects from the people of conftest.py, worked out by hand from its tables.

Each test is one field kind; its table lists every query with the people it must select.
Runs on both engines (the JSON attribute extraction differs between them).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from api.catalog.models import Sku
from api.db import Database
from api.orders.models import OrderLine, OrderStatus
from api.segments import service
from tests.orders.conftest import HQ
from tests.segments.conftest import NOW, People, _order, members, selections
from tests.segments.test_grants import partner_client

PRICE = Decimal("100.00")


async def test_numbers_with_every_operator(db: Database, people: People) -> None:
    table = {
        "orders_count >= 3": {"ann", "bob"},
        "orders_count > 3": {"ann"},
        "orders_count = 0": {"cat"},  # no metrics row: no orders
        "orders_count != 5": {"bob", "cat", "dan", "fay"},
        "orders_count < 2": {"cat", "dan"},
        "orders_count <= 2": {"cat", "dan", "fay"},
        "orders_count IN (1, 2)": {"dan", "fay"},
        "orders_count NOT IN (1, 2)": {"ann", "bob", "cat"},
        "total_spent > 450.5": {"ann"},
        "total_spent >= 450.50": {"ann", "bob"},
        "total_spent = 0": {"cat"},
        "avg_order_value >= 150": {"ann", "bob"},
        "gross_margin > 0": {"ann", "bob", "dan", "fay"},
        "points_balance >= 50": {"ann", "dan"},
        "points_balance = 0": {"bob", "cat"},  # an empty account, and none
        "rfm_recency >= 3": {"ann", "bob"},
        # No scores (cat, dan): never matched by a comparison, always by its opposite.
        "rfm_recency != 5": {"bob", "cat", "dan", "fay"},
        "rfm_frequency < 3": {"fay"},
        "rfm_monetary = 5": {"ann"},
        "orders_count > -1": {"ann", "bob", "cat", "dan", "fay"},
    }
    assert await selections(db, people, table) == table


async def test_relative_and_iso_dates(db: Database, people: People) -> None:
    cat_day = (NOW - 3 * timedelta(days=1)).date().isoformat()
    table = {
        "last_order_at > -30d": {"ann", "dan"},
        "last_order_at < -30d": {"bob", "fay"},  # cat has no last order: not "before"
        "NOT last_order_at > -30d": {"bob", "cat", "fay"},
        "last_order_at >= -2m": {"ann", "bob", "dan"},  # about 60 days
        "last_order_at > -4w": {"ann", "dan"},
        "first_order_at < -6m": {"ann", "bob"},  # 300 and 200 days ago
        "first_order_at <= -1y": set(),
        "member_since > -30d": {"dan", "fay"},
        "member_since < -1y": {"bob"},
        "created_at >= -7d": {"cat", "fay"},
        # An ISO date is the whole (UTC) day.
        f"created_at = '{cat_day}'": {"cat"},
        f"created_at != '{cat_day}'": {"ann", "bob", "dan", "fay"},
        f"created_at > '{cat_day}'": set(),
        f"created_at >= '{cat_day}'": {"cat"},
        f"created_at < '{cat_day}'": {"ann", "bob", "dan", "fay"},
        f"created_at <= '{cat_day}'": {"ann", "bob", "cat", "dan", "fay"},
        # A moment with its offset.
        f"created_at > '{(NOW - timedelta(days=10)).isoformat()}'": {"cat", "fay"},
    }
    assert await selections(db, people, table) == table


async def test_text_fields_and_lookups(db: Database, people: People) -> None:
    table = {
        "first_channel = 'mini_program'": {"ann", "dan"},
        "first_channel != 'mini_program'": {"bob", "cat", "fay"},
        "first_channel IN ('tmall', 'douyin')": {"bob", "fay"},
        "first_channel NOT IN ('tmall', 'douyin')": {"ann", "cat", "dan"},
        "first_order_channel = 'tmall'": {"ann"},
        "gender = 'male'": {"bob", "dan"},
        "gender != 'male'": {"ann", "cat", "fay"},  # cat's gender is unknown
        "rfm_segment = 'champions'": {"ann"},
        "rfm_segment IN ('loyal', 'at_risk')": {"bob", "fay"},
        "level = 'gold'": {"ann", "fay"},
        "level IN ('gold', 'platinum')": {"ann", "bob", "fay"},
        "level != 'gold'": {"bob", "cat", "dan"},
        "level = 'diamond'": set(),
        "recruiting_store = 'a1'": {"ann", "dan", "fay"},
        "recruiting_partner = 'pb'": {"bob"},
        "recruiting_partner NOT IN ('pa')": {"bob", "cat"},
        "recruiting_guide = 'Guide@A.test'": {"ann"},
        # Known values in any spelling: the GraphQL enum's, any case.
        "first_channel = 'MINI_PROGRAM'": {"ann", "dan"},
        "first_channel != 'TMALL'": {"ann", "cat", "dan", "fay"},
        "first_order_channel IN ('Tmall', 'DOUYIN')": {"ann", "fay"},
        "gender = 'Male'": {"bob", "dan"},
        "rfm_segment = 'CHAMPIONS'": {"ann"},
    }
    assert await selections(db, people, table) == table


async def test_true_false_fields(db: Database, people: People) -> None:
    table = {
        "member = true": {"ann", "bob", "dan", "fay"},
        "member = FALSE": {"cat"},
        "member != true": {"cat"},
        "consent.marketing_messages = true": {"ann", "bob", "dan"},
        # Refused (cat) or never asked (fay).
        "consent.marketing_messages = false": {"cat", "fay"},
        "consent.profiling = true": {"ann", "fay"},
    }
    assert await selections(db, people, table) == table


async def test_tags(db: Database, people: People) -> None:
    table = {
        "tag = 'vip'": {"ann", "bob"},  # eve too, but eve was merged: never a member
        "tag IN ('new', 'vip_blacklist')": {"bob", "dan"},
        "tag != 'vip'": {"cat", "dan", "fay"},
        "NOT tag = 'vip_blacklist'": {"ann", "cat", "dan", "fay"},
        "tag NOT IN ('vip', 'new')": {"cat", "fay"},
        "tag = 'nobody'": set(),
    }
    assert await selections(db, people, table) == table


async def test_attributes_as_text_and_numbers(db: Database, people: People) -> None:
    table = {
        "attr.color = 'red'": {"ann", "dan"},
        "attr.color != 'red'": {"bob", "cat", "fay"},
        "attr.color IN ('blue')": {"bob"},
        # Numbers compare with numbers only: bob's age is the text '40'.
        "attr.age >= 30": {"ann"},
        "attr.age < 30": {"fay"},
        "attr.age IN (29, 34)": {"ann", "fay"},
        "attr.age = '40'": {"bob"},
        "attr.age != 34": {"bob", "cat", "dan", "fay"},
        "attr.nothing = 'x'": set(),
    }
    assert await selections(db, people, table) == table


async def test_purchases(db: Database, people: People) -> None:
    table = {
        # dan's TEA-1 line was refunded; bob's TEA-1 order was wholly refunded.
        "bought_sku = 'TEA-1'": {"ann"},
        "bought_sku IN ('TEA-2', 'NET-1')": {"bob", "dan", "fay"},
        "bought_sku = 'TEA-2' WITHIN -60d": {"bob"},
        "bought_sku = 'TEA-2' within -6m": {"bob", "fay"},
        "bought_sku != 'TEA-1'": {"bob", "cat", "dan", "fay"},
        "bought_product = 'TEA'": {"ann", "bob", "fay"},
        "bought_product = 'NET' within -3w": {"dan"},
        "bought_product NOT IN ('TEA', 'NET')": {"cat"},
    }
    assert await selections(db, people, table) == table


async def test_precedence_not_and_or_and_parentheses(db: Database, people: People) -> None:
    table = {
        # AND binds tighter than OR ...
        "gender = 'male' OR gender = 'female' AND level = 'gold'": {"ann", "bob", "dan", "fay"},
        "(gender = 'male' OR gender = 'female') AND level = 'gold'": {"ann", "fay"},
        "level = 'gold' AND gender = 'female' OR tag = 'new'": {"ann", "dan", "fay"},
        "level = 'gold' AND (gender = 'female' OR tag = 'new')": {"ann", "fay"},
        # ... and NOT tighter than AND.
        "NOT tag = 'vip' AND member = true": {"dan", "fay"},
        "NOT (tag = 'vip' AND member = true)": {"cat", "dan", "fay"},
        "NOT NOT tag = 'vip'": {"ann", "bob"},
        "NOT (tag = 'vip' OR tag = 'new')": {"cat", "fay"},
        # Keywords in any case; OR chains; redundant parentheses.
        "tag = 'new' or TAG = 'vip' Or ((gender = 'female'))": {"ann", "bob", "dan", "fay"},
        "member = true and not gender = 'male' AnD level = 'gold'": {"ann", "fay"},
        # The example.
        "orders_count >= 3 AND last_order_at > -30d AND level IN ('gold', 'platinum') "
        "AND NOT tag = 'vip_blacklist'": {"ann"},
    }
    assert await selections(db, people, table) == table


async def test_a_partners_segment_holds_only_its_recruits(db: Database, people: People) -> None:
    assert await members(db, people, "orders_count >= 0", partner_id=people.partner_a) == {
        "ann",
        "dan",
        "fay",
    }
    assert await members(db, people, "orders_count >= 0", partner_id=people.partner_b) == {"bob"}
    # Whatever the query says about partners.
    assert (
        await members(db, people, "recruiting_partner = 'pb'", partner_id=people.partner_a) == set()
    )


async def test_a_partner_sees_only_the_purchases_made_from_it(db: Database, people: People) -> None:
    """fay (A's recruit) buys NET-1 at B's store and TEA-1 at A's; ann's TEA-1 and dan's
    NET-1 were HQ's own sales. For A, only what was bought from A counts: what its recruits
    bought elsewhere is not A's to learn (not even through an explanation)."""
    async with db.transaction() as session:
        skus = {
            code: (sku, product)
            for code, sku, product in await session.execute(
                select(Sku.code, Sku.id, Sku.product_id)
            )
        }
        for code, partner, store in (
            ("NET-1", people.partner_b, people.b1),
            ("TEA-1", people.partner_a, people.a1),
        ):
            order = _order(people.ids["fay"], 2, OrderStatus.COMPLETED, [{"total": PRICE}])
            order.partner_id, order.store_id = partner, store
            session.add(order)
            await session.flush()
            session.add(
                OrderLine(
                    order_id=order.id, line_no=1, sku_id=skus[code][0], sku_code=code,
                    product_id=skus[code][1], quantity=1, unit_price=PRICE, unit_cost=PRICE,
                    subtotal=PRICE, discount=Decimal(0), total=PRICE, refunded_quantity=0,
                )
            )  # fmt: skip

    a, b = people.partner_a, people.partner_b
    assert await members(db, people, "bought_sku = 'NET-1'") == {"dan", "fay"}
    assert await members(db, people, "bought_sku = 'NET-1'", partner_id=a) == set()
    assert await members(db, people, "NOT bought_sku = 'NET-1'", partner_id=a) == {
        "ann",
        "dan",
        "fay",
    }
    assert await members(db, people, "bought_sku = 'TEA-1'") == {"ann", "fay"}
    assert await members(db, people, "bought_product = 'TEA' WITHIN -7d", partner_id=a) == {"fay"}
    assert await members(db, people, "bought_product = 'NET'", partner_id=b) == set()

    # An explanation of A's segment, whoever asks, says fay did not buy NET-1 (from A).
    client = partner_client(a, "segments:write", "analytics:read", "customers:read")
    query = "bought_sku = 'NET-1' WITHIN -3d"
    async with db.transaction() as session:
        owned = await service.create_segment(
            session, client, name="A", query=query, description=None, now=NOW
        )
        hq_owned = await service.create_segment(
            session, HQ, name="HQ", query=query, description=None, now=NOW
        )
    async with db.read() as session:
        for principal, segment, matched in (
            (client, owned, False),
            (HQ, owned, False),
            (HQ, hq_owned, True),
        ):
            found = await service.explain(session, principal, segment, people.ids["fay"], now=NOW)
            assert (found.matches, [c.matched for c in found.clauses]) == (matched, [matched])
