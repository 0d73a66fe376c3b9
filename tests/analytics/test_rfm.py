"""RFM scores (api/analytics/rfm_scoring.py ``score_rfm``): recency, frequency and monetary value in
quintiles over the customers with counted orders, hand-scored here on ten customers.

The rule: with n customers, a value's score is 1 + floor(5 x (rank - 1) / n), rank counted
from the lowest value (for recency: the oldest last order) and shared by ties, which take
the score where their group starts. With n = 10 that is 1 + floor((rank - 1) / 2):

    rank   1  2  3  4  5  6  7  8  9  10
    score  1  1  2  2  3  3  4  4  5  5
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert

from api.analytics.models import CustomerMetrics
from api.analytics.rfm_scoring import rfm_segment, score_rfm
from tests.analytics.shop_metrics import new_customer, table
from tests.orders.conftest import NOW

DAY = timedelta(days=1)
SCORED_AT = NOW

# name: (days since the last order, orders, total spent)
PEOPLE = {
    "c1": (300, 1, "100.00"),
    "c2": (200, 9, "900.00"),
    "c3": (150, 2, "150.00"),
    "c4": (100, 1, "100.00"),
    "c5": (60, 2, "180.00"),
    "c6": (60, 2, "250.00"),
    "c7": (30, 4, "400.00"),
    "c8": (20, 6, "700.00"),
    "c9": (5, 1, "80.00"),
    "c10": (1, 3, "300.00"),
}

# Recency, oldest first: c1 300d (rank 1), c2 (2), c3 (3), c4 (4), c5 and c6 both 60 days
# (rank 5, tied: both 3), c7 (7), c8 (8), c9 (9), c10 (10).
RECENCY = {
    "c1": 1,
    "c2": 1,
    "c3": 2,
    "c4": 2,
    "c5": 3,
    "c6": 3,
    "c7": 4,
    "c8": 4,
    "c9": 5,
    "c10": 5,
}
# Frequency: one order c1, c4, c9 (rank 1: 1); two c3, c5, c6 (rank 4: 1 + 3 // 2 = 2);
# three c10 (rank 7: 4); four c7 (rank 8: 4); six c8 (rank 9: 5); nine c2 (rank 10: 5).
FREQUENCY = {
    "c1": 1,
    "c2": 5,
    "c3": 2,
    "c4": 1,
    "c5": 2,
    "c6": 2,
    "c7": 4,
    "c8": 5,
    "c9": 1,
    "c10": 4,
}
# Monetary: c9 80 (rank 1: 1); c1 and c4 100 (rank 2, tied across the first fifth's edge:
# both 1, not 1 and 2); c3 150 (rank 4: 2); c5 180 (5: 3); c6 250 (6: 3); c10 300 (7: 4);
# c7 400 (8: 4); c8 700 (9: 5); c2 900 (10: 5).
MONETARY = {
    "c1": 1,
    "c2": 5,
    "c3": 2,
    "c4": 1,
    "c5": 3,
    "c6": 3,
    "c7": 4,
    "c8": 5,
    "c9": 1,
    "c10": 4,
}
# By the R/F map: R1 F1 lost, R1 F5 cannot_lose, R2 F1-2 hibernating, R3 F2 about_to_sleep,
# R4 F4-5 loyal, R5 F1 new, R5 F4 champions.
SEGMENT = {
    "c1": "lost",
    "c2": "cannot_lose",
    "c3": "hibernating",
    "c4": "hibernating",
    "c5": "about_to_sleep",
    "c6": "about_to_sleep",
    "c7": "loyal",
    "c8": "loyal",
    "c9": "new",
    "c10": "champions",
}


async def people(db, order: list[str]) -> dict[str, int]:
    """The ten customers, their metric rows written in the given order."""
    ids = {name: await new_customer(db, name) for name in PEOPLE}
    async with db.transaction() as session:
        for name in order:
            days, orders, spent = PEOPLE[name]
            last = NOW - days * DAY
            await session.execute(
                insert(CustomerMetrics).values(
                    customer_id=ids[name],
                    orders_count=orders,
                    total_spent=Decimal(spent),
                    gross_margin=0,
                    avg_order_value=0,
                    first_order_at=last - 400 * DAY,
                    last_order_at=last,
                    first_order_channel="web",
                )
            )
    return ids


async def scores(db, ids: dict[str, int]) -> dict[str, tuple[int, int, int, str]]:
    by_id = {r["customer_id"]: r for r in await table(db)}
    return {
        name: (
            by_id[i]["rfm_recency"],
            by_id[i]["rfm_frequency"],
            by_id[i]["rfm_monetary"],
            by_id[i]["rfm_segment"],
        )
        for name, i in ids.items()
    }


EXPECTED = {n: (RECENCY[n], FREQUENCY[n], MONETARY[n], SEGMENT[n]) for n in PEOPLE}


@pytest.mark.parametrize("seed", [0, 1])
async def test_ten_customers_score_as_worked_out_whatever_order_their_rows_are_in(db, seed):
    names = list(PEOPLE)
    random.Random(seed).shuffle(names)
    ids = await people(db, names)
    async with db.transaction() as session:
        assert await score_rfm(session, SCORED_AT) == 10
    assert await scores(db, ids) == EXPECTED
    assert {r["rfm_scored_at"] for r in await table(db)} == {SCORED_AT}


async def test_scoring_again_follows_the_new_numbers(db):
    ids = await people(db, list(PEOPLE))
    async with db.transaction() as session:
        await score_rfm(session, SCORED_AT)
        # c9 (R5 F1: new) comes back for a lot more: 20 orders, 2,000 spent. F now: one
        # order c1, c4 (rank 1: 1); two c3, c5, c6 (rank 3: 1 + 10 // 10 = 2); three c10
        # (rank 6: 1 + 25 // 10 = 3); four c7 (rank 7: 4); six c8 (rank 8: 1 + 35 // 10 = 4);
        # nine c2 (rank 9: 5); twenty c9 (rank 10: 5). M: c8's 700 is rank 8 (4), c9's
        # 2,000 rank 10 (5).
        await session.execute(
            CustomerMetrics.__table__.update()
            .where(CustomerMetrics.customer_id == ids["c9"])
            .values(orders_count=20, total_spent=Decimal("2000.00"))
        )
        assert await score_rfm(session, SCORED_AT + DAY) == 10
    now = await scores(db, ids)
    assert now["c9"] == (5, 5, 5, "champions")
    assert now["c8"] == (4, 4, 4, "loyal")
    # c10: R5 F3.
    assert now["c10"][1:] == (3, 3, "potential_loyalist")


async def test_nobody_to_score(db):
    async with db.transaction() as session:
        assert await score_rfm(session, SCORED_AT) == 0


def test_the_segment_map_covers_every_r_and_f_exactly_as_documented():
    grid = """
        5  new             potential_loyalist  potential_loyalist  champions  champions
        4  promising       potential_loyalist  potential_loyalist  loyal      loyal
        3  about_to_sleep  about_to_sleep      need_attention      loyal      loyal
        2  hibernating     hibernating         at_risk             at_risk    cannot_lose
        1  lost            hibernating         at_risk             at_risk    cannot_lose
    """
    for row in grid.strip().splitlines():
        r, *names = row.split()
        assert [rfm_segment(int(r), f) for f in range(1, 6)] == names
    with pytest.raises(ValueError, match=r"1\.\.5"):
        rfm_segment(0, 3)
