"""RFM scores (recency, frequency, monetary; quintiles 1..5) of every customer with counted
orders, and the segment their R and F scores put them in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.models import CustomerMetrics
from api.analytics.sql import rows_written

QUINTILES = 5

# The R/F segment map (the usual RFM grid), recency score down, frequency score across:
#
#   R\F  1               2                   3                   4            5
#   5    new             potential_loyalist  potential_loyalist  champions    champions
#   4    promising       potential_loyalist  potential_loyalist  loyal        loyal
#   3    about_to_sleep  about_to_sleep      need_attention      loyal        loyal
#   2    hibernating     hibernating         at_risk             at_risk      cannot_lose
#   1    lost            hibernating         at_risk             at_risk      cannot_lose
#
# Monetary is scored too but, as usual, does not pick the segment (it tracks frequency).
RFM_SEGMENTS: tuple[tuple[frozenset[int], frozenset[int], str], ...] = (
    (frozenset({5}), frozenset({4, 5}), "champions"),
    (frozenset({3, 4}), frozenset({4, 5}), "loyal"),
    (frozenset({4, 5}), frozenset({2, 3}), "potential_loyalist"),
    (frozenset({5}), frozenset({1}), "new"),
    (frozenset({4}), frozenset({1}), "promising"),
    (frozenset({3}), frozenset({3}), "need_attention"),
    (frozenset({3}), frozenset({1, 2}), "about_to_sleep"),
    (frozenset({1, 2}), frozenset({3, 4}), "at_risk"),
    (frozenset({1, 2}), frozenset({5}), "cannot_lose"),
    (frozenset({1}), frozenset({1}), "lost"),
    (frozenset({1, 2}), frozenset({1, 2}), "hibernating"),  # after "lost": first match wins
)


def rfm_segment(recency: int, frequency: int) -> str:
    """The segment of an R and F score (1..5), per the map above."""
    for r, f, name in RFM_SEGMENTS:
        if recency in r and frequency in f:
            return name
    raise ValueError(f"RFM scores are 1..{QUINTILES}: got R={recency}, F={frequency}")


def _quintile(order_by: Any) -> Any:
    """1..5 by position: 1 + ⌊5 × (rank - 1) / n⌋, rank counting from the lowest value.
    Ties share the rank of the first of them, so equal values always get the same score
    (the score where their group starts), whatever order rows come in; with distinct
    values each fifth gets one score."""
    return 1 + ((func.rank().over(order_by=order_by) - 1) * QUINTILES) // func.count().over()


async def score_rfm(session: AsyncSession, now: datetime) -> int:
    """Score every row of ``customer_metrics`` (live customers with counted orders) in one
    statement: R by the last order (the more recent, the higher), F by orders_count, M by
    total_spent, each 1..5 by quintile (``_quintile``: ties share a score), and the R/F
    segment. Returns the customers scored."""
    scores = select(
        CustomerMetrics.customer_id,
        _quintile(CustomerMetrics.last_order_at).label("r"),
        _quintile(CustomerMetrics.orders_count).label("f"),
        _quintile(CustomerMetrics.total_spent).label("m"),
    ).subquery("scores")
    segment = case(
        *(
            (and_(scores.c.r.in_(sorted(r)), scores.c.f.in_(sorted(f))), name)
            for r, f, name in RFM_SEGMENTS
        ),
    )
    stmt = (
        update(CustomerMetrics)
        .where(CustomerMetrics.customer_id == scores.c.customer_id)
        .values(
            rfm_recency=scores.c.r,
            rfm_frequency=scores.c.f,
            rfm_monetary=scores.c.m,
            rfm_segment=segment,
            rfm_scored_at=now,
        )
    )
    scored = await session.execute(stmt, execution_options={"synchronize_session": False})
    return rows_written(scored)
