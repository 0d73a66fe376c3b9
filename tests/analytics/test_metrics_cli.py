"""`qudao metrics rebuild [--check]` and `qudao metrics score-rfm`, against the test database of
each engine. The command runs its own event loop, so it runs in a worker thread here, with
connections of its own, as an operator or cron would start it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from click.testing import Result
from typer.testing import CliRunner

from api.analytics.models import CustomerMetrics
from api.cli import app
from tests.analytics.shop_metrics import DAY, T0, order, rebuild_agrees, shop, table

__all__ = ["shop"]  # a fixture: pytest finds it here

runner = CliRunner()


async def qudao(settings, *args: str) -> Result:
    env = {"DATABASE_URL": settings.database_url, "QUDAO_LOG_PLAIN": "1"}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_check_passes_on_the_kept_table_and_lists_each_tampered_customer(db, shop, settings):
    await order(db, shop.ann, at=T0)  # TEA-1 at 99
    await order(db, shop.bob, at=T0 + DAY)
    ok = await qudao(settings, "metrics", "rebuild", "--check")
    assert ok.exit_code == 0, ok.output
    assert "Every customer's metrics equal a rebuild." in ok.output

    async with db.transaction() as session:
        await session.execute(
            CustomerMetrics.__table__.update()
            .where(CustomerMetrics.customer_id == shop.ann)
            .values(total_spent=Decimal("1.00"), orders_count=5)
        )
        await session.execute(
            CustomerMetrics.__table__.insert().values(
                customer_id=shop.cat,
                orders_count=1,
                total_spent=0,
                gross_margin=0,
                avg_order_value=0,
            )
        )
    # One customer per transaction: the ranges add up.
    bad = await qudao(settings, "metrics", "rebuild", "--check", "--batch", "1")
    assert bad.exit_code == 1, bad.output
    assert "2 customers differ from a rebuild" in bad.output
    lines = bad.output.splitlines()
    assert any(f"{shop.ann} " in x and "orders_count" in x and "5" in x for x in lines)
    assert any("total_spent" in x and "1.00" in x and "99.00" in x for x in lines)
    assert any(f"{shop.cat} " in x and "none: no order" in x for x in lines)
    # --check wrote nothing.
    assert [r["orders_count"] for r in await table(db)] == [5, 1, 1]

    fixed = await qudao(settings, "metrics", "rebuild", "--batch", "2")
    assert fixed.exit_code == 0, fixed.output
    assert "Rebuilt the metrics of 2 customers with orders." in fixed.output
    await rebuild_agrees(db)
    again = await qudao(settings, "metrics", "rebuild", "--check")
    assert again.exit_code == 0, again.output


async def test_rebuild_of_an_empty_database_writes_nothing(db, settings):
    result = await qudao(settings, "metrics", "rebuild")
    assert result.exit_code == 0, result.output
    assert "Rebuilt the metrics of 0 customers with orders." in result.output


async def test_score_rfm_scores_everyone_with_orders_and_counts_the_segments(db, shop, settings):
    await order(db, shop.ann, at=T0)
    await order(db, shop.bob, at=T0 + DAY)
    await order(db, shop.bob, at=T0 + 2 * DAY)
    result = await qudao(settings, "metrics", "score-rfm", "--now", "2026-12-01T08:00:00+08:00")
    assert result.exit_code == 0, result.output
    assert "Scored 2 customers as of 2026-12-01T00:00:00+00:00." in result.output
    # Of two, ann is behind on both R and F (1, 1: lost), bob ahead on both (the rank 2 of
    # 2 scores 1 + 5 x 1 // 2 = 3: 3, 3: need_attention).
    rows = {r["customer_id"]: r for r in await table(db)}
    assert (rows[shop.ann]["rfm_recency"], rows[shop.ann]["rfm_frequency"]) == (1, 1)
    assert (rows[shop.bob]["rfm_recency"], rows[shop.bob]["rfm_frequency"]) == (3, 3)
    assert rows[shop.ann]["rfm_segment"] == "lost"
    assert rows[shop.bob]["rfm_segment"] == "need_attention"
    assert any("lost" in x and "1" in x for x in result.output.splitlines())


async def test_score_rfm_refuses_a_bad_time(settings):
    result = await qudao(settings, "metrics", "score-rfm", "--now", "tomorrow")
    assert result.exit_code == 2
    assert "not an ISO-8601 time" in result.output
