"""Lifetime attribution (终身归属, api/analytics/attribution.py): every counted order of a recruited
member, on any channel, counts for a store, guide and partner, decided when the order is
taken under the configured rule and window and kept.

The member: mia, recruited at T0 by guide g1 of store a1 (partner A). Her touchpoints with a
store: a WeCom friend added at b1 with guide g2 at T0 + 5d (partner B, known from the
store), a QR scan without a store at T0 + 8d (not a touch with a store: ignored), a
community joined at a2 with guide g3 at exactly T0 + 60d. Her orders:

    order      placed      first_touch   last_touch            30-day window
    before     T0 - 1d     -             -                     (before recruitment)
    day1       T0 + 1d     A a1 g1       A a1 g1 (no touch)    in
    day10      T0 + 10d    A a1 g1       B b1 g2               in
    day30      T0 + 30d    A a1 g1       B b1 g2               out (30 days after, not less)
    day60      T0 + 60d    A a1 g1       A a2 g3 (same time)   out
"""

from __future__ import annotations

import io
from itertools import count

import pytest
from sqlalchemy import insert

from api.analytics.attribution import AttributionPolicy, attribute_orders
from api.analytics.reactions import MetricsAndAttribution
from api.catalog.models import SalesChannel
from api.customers.merge import merge_customers
from api.growth.models import Touchpoint, TouchpointStep
from api.orders.importer import running
from api.orders.importer.records import ImportFormat
from api.orders.importer.running import ImportOptions
from api.orders.models import Fulfillment
from api.wiring import build
from tests.analytics.shop_metrics import (
    DAY,
    HQ,
    T0,
    attribution,
    cancel,
    configured,
    guide,
    line,
    metrics,
    new_customer,
    order,
    reacting_with,
    rebuild_agrees,
    shop,
)
from tests.orders.conftest import NOW
from tests.orders.test_import import csv_text, row
from tests.wiring import CUSTOMERS, orders_wiring

__all__ = ["shop"]  # a fixture: pytest finds it here

_events = count()


async def touch(
    db,
    customer_id,
    step,
    at,
    *,
    store_id=None,
    guide_id=None,
    order_id=None,
    scope="hq",
    partner_id=None,
):
    async with db.transaction() as session:
        await session.execute(
            insert(Touchpoint).values(
                recorded_scope=scope,
                partner_id=partner_id,
                event_id=f"e{next(_events)}",
                customer_id=customer_id,
                step=step,
                store_id=store_id,
                guide_id=guide_id,
                order_id=order_id,
                occurred_at=at,
            )
        )


async def mia_and_her_orders(db, shop, rule: str, window: int):
    g1 = await guide(db, "g1@a1.example", shop.partner_a, shop.a1)
    g2 = await guide(db, "g2@b1.example", shop.partner_b, shop.b1)
    g3 = await guide(db, "g3@a2.example", shop.partner_a, shop.a2)
    mia = await new_customer(
        db, "mia", since=T0, store_id=shop.a1, partner_id=shop.partner_a, guide_id=g1
    )
    await touch(db, mia, TouchpointStep.WECOM_ADDED, T0 + 5 * DAY, store_id=shop.b1, guide_id=g2)
    await touch(db, mia, TouchpointStep.QR_SCAN, T0 + 8 * DAY)
    await touch(
        db, mia, TouchpointStep.COMMUNITY_JOINED, T0 + 60 * DAY, store_id=shop.a2, guide_id=g3
    )
    placed = {"before": -1, "day1": 1, "day10": 10, "day30": 30, "day60": 60}
    with configured(rule, window):
        orders = {name: await order(db, mia, at=T0 + d * DAY) for name, d in placed.items()}
    return mia, (g1, g2, g3), {name: o.id for name, o in orders.items()}


@pytest.mark.parametrize(
    ("rule", "window"),
    [("first_touch", 0), ("first_touch", 30), ("last_touch", 0), ("last_touch", 30)],
)
async def test_orders_count_for_the_recruiter_or_the_last_touch_within_the_window(
    db, shop, rule, window
):
    mia, (g1, g2, g3), ids = await mia_and_her_orders(db, shop, rule, window)
    recruiter = (shop.partner_a, shop.a1, g1)
    b1_touch = (shop.partner_b, shop.b1, g2)
    a2_touch = (shop.partner_a, shop.a2, g3)
    if rule == "first_touch":
        who = {"day1": recruiter, "day10": recruiter, "day30": recruiter, "day60": recruiter}
    else:
        who = {"day1": recruiter, "day10": b1_touch, "day30": b1_touch, "day60": a2_touch}
    if window:
        del who["day30"], who["day60"]
    recorded = (rule, window or None)  # the window of a lifetime rule is None
    assert await attribution(db) == {
        ids[name]: (mia, *counts_for, *recorded) for name, counts_for in who.items()
    }


async def test_another_partners_touch_cannot_take_over_a_member_under_last_touch(db, shop):
    # Partner B scans A's member at its own store (any partner may record a touch of a
    # customer it can name by phone): under last_touch that must not move A's member's
    # orders (and rebates) to B. A's own later touch at its other store does.
    g1 = await guide(db, "g1@a1.example", shop.partner_a, shop.a1)
    mia = await new_customer(
        db, "mia", since=T0, store_id=shop.a1, partner_id=shop.partner_a, guide_id=g1
    )
    await touch(
        db,
        mia,
        TouchpointStep.WECOM_ADDED,
        T0 + DAY,
        store_id=shop.b1,
        scope=f"partner:{shop.partner_b}",
        partner_id=shop.partner_b,
    )
    with configured("last_touch"):
        by_b = await order(db, mia, at=T0 + 2 * DAY)
    await touch(
        db,
        mia,
        TouchpointStep.COMMUNITY_JOINED,
        T0 + 3 * DAY,
        store_id=shop.a2,
        scope=f"partner:{shop.partner_a}",
        partner_id=shop.partner_a,
    )
    with configured("last_touch"):
        by_a = await order(db, mia, at=T0 + 4 * DAY)
    assert await attribution(db) == {
        by_b.id: (mia, shop.partner_a, shop.a1, g1, "last_touch", None),
        by_a.id: (mia, shop.partner_a, shop.a2, None, "last_touch", None),
    }


async def test_members_without_a_recruiter_or_a_recruitment_time_are_nobodys(db, shop):
    # cat has no recruiter; bob has a recruiting store but no member_since (never joined):
    # there is no recruitment for an order to come after.
    with configured("first_touch"):
        await order(db, shop.cat, at=T0)
        await order(db, shop.bob, at=T0)
    assert await attribution(db) == {}


async def test_an_order_is_attributed_once_and_keeps_its_rule(db, shop):
    mia, (g1, _, _), ids = await mia_and_her_orders(db, shop, "first_touch", 0)
    day10 = ids["day10"]
    before = await attribution(db)
    assert before[day10] == (mia, shop.partner_a, shop.a1, g1, "first_touch", None)
    # The rule changes later (or the hook is retried): nothing moves.
    async with db.transaction() as session:
        assert await attribute_orders(session, list(ids.values()), "last_touch", 0) == 0
    assert await attribution(db) == before
    # A cancelled or refunded order keeps its row: reports count orders by their status.
    cancelled = await order(
        db, mia, at=T0 + 70 * DAY, fulfillment=Fulfillment.PICKUP, store_id=shop.a1
    )
    await cancel(db, cancelled.id, at=T0 + 70 * DAY)
    assert cancelled.id in await attribution(db)


async def test_the_order_itself_is_not_its_own_last_touch(db, shop):
    mia, (_, g2, _), _ = await mia_and_her_orders(db, shop, "last_touch", 0)
    # An order taken with no reactions, then the touchpoint it recorded (a first order at
    # hq, at the same time): the touch before it is still WeCom at b1.
    with reacting_with():
        pos = await order(
            db,
            mia,
            line("TEA-1"),
            at=T0 + 20 * DAY,
            channel=SalesChannel.STORE_POS,
            fulfillment=Fulfillment.IN_STORE,
            store_id=shop.hq,
        )
    await touch(
        db, mia, TouchpointStep.FIRST_ORDER, T0 + 20 * DAY, store_id=shop.hq, order_id=pos.id
    )
    async with db.transaction() as session:
        assert await attribute_orders(session, [pos.id], "last_touch", 0) == 1
    assert (await attribution(db))[pos.id] == (
        mia,
        shop.partner_b,
        shop.b1,
        g2,
        "last_touch",
        None,
    )


async def test_an_import_batch_attributes_the_orders_after_recruitment(db, shop):
    # ann (tests/orders/conftest.py) was recruited at a1 (partner A) 30 days before NOW, by
    # no guide; the import finds her by her phone. The order before that is not attributed.
    data = csv_text(
        row(
            "J1",
            market="jd",
            buyer="jd_1",
            phone="13812341234",
            paid_at=(NOW - 40 * DAY).isoformat(),
        ),
        row(
            "J2",
            market="jd",
            buyer="jd_1",
            phone="13812341234",
            paid_at=(NOW - 10 * DAY).isoformat(),
        ),
        row("T1", buyer="tb_1", paid_at=(NOW - 10 * DAY).isoformat()),  # a new customer
    )
    with configured("first_touch", 30) as policy:
        summary = await running.import_orders(
            db,
            io.BytesIO(data.encode()),
            ImportFormat.CSV,
            options=ImportOptions(),
            now=NOW,
            wiring=orders_wiring(attribution=policy),
        )
    assert summary.orders_imported == 3
    rows = await attribution(db)
    assert list(rows.values()) == [(shop.ann, shop.partner_a, shop.a1, None, "first_touch", 30)]


async def test_a_merge_keeps_whom_the_orders_count_for(db, shop):
    # mia2, a duplicate of mia recruited by b1 and touched at a2 since, has a last-touch
    # order; after the merge it is mia's and still counts for a2.
    mia, (g1, _, g3), ids = await mia_and_her_orders(db, shop, "last_touch", 0)
    mia2 = await new_customer(
        db, "mia2", since=T0 + 2 * DAY, store_id=shop.b1, partner_id=shop.partner_b
    )
    await touch(db, mia2, TouchpointStep.WECOM_ADDED, T0 + 3 * DAY, store_id=shop.a2, guide_id=g3)
    with configured("last_touch"):
        theirs = await order(db, mia2, at=T0 + 4 * DAY)
    async with db.transaction() as session:
        await merge_customers(
            session,
            HQ,
            mia,
            [mia2],
            dry_run=False,
            wiring=CUSTOMERS,
            now=T0 + 90 * DAY,
        )
    rows = await attribution(db)
    assert rows[theirs.id] == (mia, shop.partner_a, shop.a2, g3, "last_touch", None)
    assert rows[ids["day1"]] == (mia, shop.partner_a, shop.a1, g1, "last_touch", None)
    assert (await metrics(db, mia) or {})["orders_count"] == 6
    await rebuild_agrees(db)


def test_the_policy_comes_from_the_settings_and_is_checked(settings):
    from dataclasses import replace

    # The composition root binds the settings' policy into the reaction to orders: the API
    # and every CLI job build it from their own settings, never from the environment.
    wiring = build(replace(settings, attribution_rule="last_touch", attribution_window_days=7))
    bound = [
        reaction.policy
        for reaction in wiring.orders.reactions
        if isinstance(reaction, MetricsAndAttribution)
    ]
    assert bound == [AttributionPolicy("last_touch", 7)]
    with pytest.raises(ValueError, match="first_touch, last_touch"):
        AttributionPolicy("middle_touch")
    with pytest.raises(ValueError, match="0 \\(for life\\)"):
        AttributionPolicy("first_touch", -1)
