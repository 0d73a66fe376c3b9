"""The growth benchmark's generator and its hand-written SQL, on a small data set.

The benchmark itself runs on a million customers (``python -m bench.growth``); this checks,
in seconds, what its ratios rest on: the generated journeys are consistent with the orders,
and every case's hand-written SQL gives exactly the answer of the segments compiler and the
funnel. PostgreSQL only, like the generator (COPY).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from api.db import Database
from bench import growth, growth_data

CUSTOMERS = 3_000
ORDERS = 15_000

# Each query counts the rows that break one rule the generator promises.
BROKEN_RULES = {
    "an order total that is not the sum of its lines": """
        SELECT count(*) FROM customer_order o
        WHERE o.total <> (SELECT sum(l.total) FROM order_line l WHERE l.order_id = o.id)""",
    "a marketplace purchase step that is not the customer's first order": """
        SELECT count(*) FROM touchpoint t
        WHERE t.step = 'marketplace_purchase' AND t.order_id IS DISTINCT FROM (
            SELECT o.id FROM customer_order o WHERE o.customer_id = t.customer_id
            ORDER BY o.placed_at, o.id LIMIT 1)""",
    "a first-order step that is not the first private-domain order": """
        SELECT count(*) FROM touchpoint t
        WHERE t.step = 'first_order' AND t.order_id IS DISTINCT FROM (
            SELECT o.id FROM customer_order o
            WHERE o.customer_id = t.customer_id AND o.channel NOT IN ('tmall', 'jd', 'douyin')
            ORDER BY o.placed_at, o.id LIMIT 1)""",
    "a repurchase step that is not the second private-domain order": """
        SELECT count(*) FROM touchpoint t
        WHERE t.step = 'repurchase' AND t.order_id IS DISTINCT FROM (
            SELECT o.id FROM customer_order o
            WHERE o.customer_id = t.customer_id AND o.channel NOT IN ('tmall', 'jd', 'douyin')
            ORDER BY o.placed_at, o.id OFFSET 1 LIMIT 1)""",
    "a private-domain order without a first-order step": """
        SELECT count(DISTINCT o.customer_id) FROM customer_order o
        WHERE o.channel NOT IN ('tmall', 'jd', 'douyin') AND NOT EXISTS (
            SELECT 1 FROM touchpoint t
            WHERE t.customer_id = o.customer_id AND t.step = 'first_order')""",
    "a touchpoint after the data's now": "SELECT count(*) FROM touchpoint WHERE occurred_at > :now",
    "an order after the data's now": "SELECT count(*) FROM customer_order WHERE placed_at > :now",
    "a merged customer with orders or touches": """
        SELECT count(*) FROM customer c WHERE c.status = 'merged' AND (
            EXISTS (SELECT 1 FROM customer_order o WHERE o.customer_id = c.id)
            OR EXISTS (SELECT 1 FROM touchpoint t WHERE t.customer_id = c.id)
            OR EXISTS (SELECT 1 FROM customer m WHERE m.id = c.merged_into_id
                       AND m.status <> 'active'))""",
    "a member without a level, or a level without membership": """
        SELECT count(*) FROM customer
        WHERE status = 'active' AND (member_since IS NULL) <> (level_id IS NULL)""",
}


async def test_generated_data_is_consistent_and_both_sides_of_every_case_agree(
    db: Database,
) -> None:
    if db.is_sqlite:
        pytest.skip("the growth benchmark's data is generated with PostgreSQL's COPY")
    counts = await growth_data.fill(db.url, CUSTOMERS, ORDERS, show=False)
    assert counts["customer"] == CUSTOMERS
    assert counts["customer_order"] == ORDERS  # exactly --orders, whatever the journeys need
    assert counts["touchpoint"] > 3 * CUSTOMERS  # three to four steps a customer

    async with db.read() as session:
        for rule, sql in BROKEN_RULES.items():
            broken = await session.scalar(text(sql), {"now": growth_data.ANCHOR})
            assert broken == 0, f"{broken} rows with {rule}"

    for case in growth.CASES:
        async with db.read() as session:
            ours = await case.ours(session)
        async with db.read() as session:
            hand = await case.hand(session)
        case.same(ours, hand)
        # Not a vacuous agreement: every case finds someone in the small data set too.
        found = ours if isinstance(ours, int) else sum(g.steps[-1].customers for g in ours.groups)
        assert found > 0, f"{case.name} finds nobody"


def test_the_same_seed_makes_the_same_data() -> None:
    ref, _ = growth_data.reference_data()
    first = next(growth_data.Generator(ref, 500, 2_500).chunks())
    again = next(growth_data.Generator(ref, 500, 2_500).chunks())
    assert first.rows == again.rows
