"""Marketplace order import (api/orders/importer/): what an imported order is, the customers
it finds or makes, every reason a row is rejected, idempotency, batches and races.

The catalog and customers are the orders tests' ``shop`` (tests/orders/conftest.py): TEA-1
has a TMALL band of 85-115, TEA-2 no bands, NET-1 is exclusive to the mini-program and web,
ann holds the phone identity 13812341234.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from api.analytics.metrics import metrics_differences
from api.catalog.models import SalesChannel, Sku
from api.conflicts.models import ChannelViolation, ViolationKind
from api.customers.models import (
    Customer,
    CustomerIdentity,
    CustomerStatus,
    IdentityKind,
    QualifyingSpend,
)
from api.customers.profile import CustomerDraft
from api.customers.upsert import upsert_customer
from api.db import Database
from api.loyalty.models import PointsEntry
from api.orders.importer import parsing, records, running
from api.orders.importer.records import ImportFormat, OrderImportError, RejectReason
from api.orders.importer.running import ImportOptions
from api.orders.models import Fulfillment, Order, OrderEvent, OrderLine, OrderStatus
from api.partners import service as partners
from api.partners.models import PartnerType
from tests.orders.conftest import HQ, NOW, POINTS, STOCK, balance, lines_of, stock
from tests.wiring import orders_wiring

HEADER = "marketplace,order_id,buyer_id,phone,paid_at,paid,sku,quantity,line_paid"
PAID_AT = "2026-06-18T10:00:00+08:00"


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join((header, *rows)) + "\n"


def row(
    order_id: str = "T1",
    *,
    market: str = "tmall",
    buyer: str = "tb_buyer_1",
    phone: str = "",
    paid_at: str = PAID_AT,
    paid: str = "100.00",
    sku: str = "TEA-1",
    quantity: str = "1",
    line_paid: str | None = None,
) -> str:
    """One CSV row (an order of one line by default: TEA-1 at 100.00 on Tmall)."""
    values = [market, order_id, buyer, phone, paid_at, paid, sku, quantity, line_paid or paid]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


def record(order_id: str = "J1", **fields: Any) -> str:
    """One JSON-lines order: by default a JD order of one TEA-2 at 50.00."""
    value: dict[str, Any] = {
        "marketplace": "jd",
        "order_id": order_id,
        "buyer_id": "jd_buyer_1",
        "phone": None,
        "paid_at": PAID_AT,
        "paid": "50.00",
        "lines": [{"sku": "TEA-2", "quantity": 1, "paid": "50.00"}],
    }
    value.update(fields)
    return json.dumps(value, ensure_ascii=False)


async def run(
    db: Database,
    text: str | bytes,
    fmt: ImportFormat = ImportFormat.CSV,
    *,
    now: Any = NOW,
    encoding: str = "utf-8-sig",
    rejects: io.StringIO | None = None,
    **options: Any,
) -> running.ImportSummary:
    data = text.encode(encoding) if isinstance(text, str) else text
    return await running.import_orders(
        db,
        io.BytesIO(data),
        fmt,
        options=ImportOptions(encoding=encoding, **options),
        now=now,
        wiring=orders_wiring(),
        rejects=rejects,
    )


async def orders(db: Database) -> list[Order]:
    async with db.read() as session:
        return list(await session.scalars(select(Order).order_by(Order.channel, Order.external_id)))


async def one(db: Database, external_id: str) -> Order:
    async with db.read() as session:
        return (
            await session.execute(select(Order).where(Order.external_id == external_id))
        ).scalar_one()


async def buyer_owner(db: Database, value: str) -> Customer | None:
    async with db.read() as session:
        return await session.scalar(
            select(Customer)
            .join(CustomerIdentity, CustomerIdentity.customer_id == Customer.id)
            .where(
                CustomerIdentity.kind == IdentityKind.MARKETPLACE_BUYER,
                CustomerIdentity.value == value,
            )
        )


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def reasons(summary: running.ImportSummary) -> dict[str, tuple[int, list[int]]]:
    return {r.name: (t.rows, t.lines) for r, t in summary.reasons.items()}


# --- what an import does ----------------------------------------------------------------------


async def test_a_csv_export_becomes_completed_delivery_orders_with_their_lines(db, shop):
    summary = await run(
        db,
        csv_text(
            row("T1", paid="300.00", sku="TEA-1", quantity="3", line_paid="300.00"),
            row(
                "T2",
                buyer="tb_buyer_2",
                paid="150.00",
                sku="TEA-1",
                quantity="1",
                line_paid="100.00",
            ),
            row(
                "T2",
                buyer="tb_buyer_2",
                paid="150.00",
                sku="TEA-2",
                quantity="1",
                line_paid="50.00",
            ),
        ),
        source="tmall-618.csv",
        actor="cli:import-orders",
    )
    assert (summary.rows_read, summary.orders_imported, summary.orders_skipped) == (3, 2, 0)
    assert (summary.orders_rejected, summary.rows_rejected, summary.reasons) == (0, 0, {})
    assert (summary.customers_created, summary.violations) == (2, 0)

    order = await one(db, "T2")
    assert (order.channel, order.fulfillment, order.status) == (
        SalesChannel.TMALL,
        Fulfillment.DELIVERY,
        OrderStatus.COMPLETED,
    )
    assert (order.partner_id, order.store_id, order.reported_by_partner) == (None, None, False)
    assert (order.subtotal, order.coupon_discount, order.points_discount, order.total) == (
        Decimal("150.00"),
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("150.00"),
    )
    assert (order.cost_total, order.points_used, order.points_earned) == (
        Decimal("60.00"),  # 40 + 20: the SKUs' cost prices
        0,
        0,
    )
    assert order.currency == "CNY" and order.taken_by == "cli:import-orders"
    assert order.placed_at == order.completed_at
    assert order.placed_at.isoformat() == "2026-06-18T02:00:00+00:00"  # +08:00 → UTC
    assert order.created_at == NOW
    lines = await lines_of(db, order.id)
    assert [(ln.line_no, ln.sku_id, ln.sku_code, ln.quantity) for ln in lines] == [
        (1, shop.sku["TEA-1"], "TEA-1", 1),
        (2, shop.sku["TEA-2"], "TEA-2", 1),
    ]
    assert [(ln.unit_price, ln.unit_cost, ln.subtotal, ln.discount, ln.total) for ln in lines] == [
        (
            Decimal("100.00"),
            Decimal("40.00"),
            Decimal("100.00"),
            Decimal("0.00"),
            Decimal("100.00"),
        ),
        (Decimal("50.00"), Decimal("20.00"), Decimal("50.00"), Decimal("0.00"), Decimal("50.00")),
    ]
    async with db.read() as session:
        history = list(
            await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id))
        )
    assert [(e.status, e.note, e.actor) for e in history] == [
        (OrderStatus.COMPLETED, "Imported from tmall-618.csv, line 3.", "cli:import-orders")
    ]


async def test_a_unit_price_is_what_a_unit_was_paid_and_the_line_keeps_the_exact_total(db, shop):
    await run(db, csv_text(row("T1", paid="100.00", quantity="3", sku="TEA-2")))
    (line,) = await lines_of(db, (await one(db, "T1")).id)
    assert (line.quantity, line.unit_price, line.subtotal, line.total) == (
        3,
        Decimal("33.33"),
        Decimal("100.00"),
        Decimal("100.00"),
    )


async def test_a_json_lines_export_imports_the_same_way(db, shop):
    summary = await run(
        db,
        "\n".join(
            [
                record("J1"),
                "",  # a blank line is no record
                record(
                    12345,  # JD order ids are often numbers
                    marketplace="JD",
                    buyer_id="jd_buyer_2",
                    paid=149.5,  # a JSON number, read as a Decimal
                    lines=[
                        {"sku": "TEA-1", "quantity": 1, "paid": "99.50"},
                        {"SKU": "TEA-2", "Quantity": "1", "Paid": 50},
                    ],
                ),
                record("D1", marketplace="抖音", buyer_id="dy_1", phone="+86 138-0013-8000"),
            ]
        ),
        ImportFormat.JSONL,
    )
    assert (summary.rows_read, summary.orders_imported, summary.rows_rejected) == (3, 3, 0)
    numbered = await one(db, "12345")
    assert (numbered.channel, numbered.total, numbered.cost_total) == (
        SalesChannel.JD,
        Decimal("149.50"),
        Decimal("60.00"),
    )
    assert [(ln.sku_code, ln.total) for ln in await lines_of(db, numbered.id)] == [
        ("TEA-1", Decimal("99.50")),
        ("TEA-2", Decimal("50.00")),
    ]
    douyin = await buyer_owner(db, "douyin:dy_1")
    assert douyin is not None and douyin.contact_phone == "13800138000"
    assert (await one(db, "D1")).channel is SalesChannel.DOUYIN


async def test_imported_orders_earn_no_points_and_move_no_stock(db, shop):
    """Marketplace sales are public-domain business: no points, no qualifying spend; the
    marketplace shipped the goods, so no stock moves."""
    summary = await run(db, csv_text(row("T1", buyer="ann_on_tmall", phone="13812341234")))
    assert summary.orders_imported == 1
    assert (await one(db, "T1")).customer_id == shop.ann
    held = await balance(db, shop.ann)
    assert (held.balance, held.pending) == (POINTS, 0)
    assert await count(db, PointsEntry, PointsEntry.customer_id == shop.ann) == 1  # the welcome
    assert await count(db, QualifyingSpend) == 0
    for location in (shop.a1, shop.a2, shop.b1, shop.hq, shop.wh):
        assert await stock(db, location, shop.sku["TEA-1"]) == (STOCK, 0)


async def test_a_partners_marketplace_shop_is_the_seller_and_reported_the_sale(db, shop):
    async with db.transaction() as session:
        flagship = await partners.create_partner(
            session,
            HQ,
            partners.PartnerDraft(code="tm-shop", name="天猫店", type=PartnerType.MARKETPLACE_SHOP),
        )
    await run(db, csv_text(row("T1")), partner_id=flagship.id)
    order = await one(db, "T1")
    assert (order.partner_id, order.reported_by_partner) == (flagship.id, True)


async def test_only_a_marketplace_shop_may_be_the_partner(db, shop):
    with pytest.raises(OrderImportError, match=r"\(agent\) is not a marketplace shop"):
        await run(db, csv_text(row("T1")), partner_id=shop.partner_a)
    with pytest.raises(OrderImportError, match="No partner 9999"):
        await run(db, csv_text(row("T1")), partner_id=9999)
    assert await count(db, Order) == 0


async def test_sales_outside_the_band_and_exclusive_skus_are_recorded_not_refused(db, shop):
    summary = await run(
        db,
        csv_text(
            row("T1", paid="160.00", quantity="2"),  # 80 a unit: TMALL floor is 85
            row("T2", paid="116.00"),  # above the ceiling 115
            row("T3", sku="NET-1", paid="60.00"),  # 线上专供: mini-program and web only
            row("T4", paid="170.00", quantity="2"),  # 85 a unit: within the band
            row("T5", paid="254.99", quantity="3"),  # 84.996…: a cent under 3 × 85
        ),
    )
    assert (summary.orders_imported, summary.violations) == (5, 4)
    ids = {o.external_id: o.id for o in await orders(db)}
    async with db.read() as session:
        found = list(await session.scalars(select(ChannelViolation).order_by(ChannelViolation.id)))
    assert [
        (v.kind, v.source_key, v.order_id, v.sku_id, v.expected_amount, v.actual_amount)
        for v in found
    ] == [
        (
            ViolationKind.PRICE_BELOW_FLOOR,
            f"order:{ids['T1']}:line:1:price_below_floor",
            ids["T1"],
            shop.sku["TEA-1"],
            Decimal("85.00"),
            Decimal("80.00"),
        ),
        (
            ViolationKind.PRICE_ABOVE_CEILING,
            f"order:{ids['T2']}:line:1:price_above_ceiling",
            ids["T2"],
            shop.sku["TEA-1"],
            Decimal("115.00"),
            Decimal("116.00"),
        ),
        (
            ViolationKind.EXCLUSIVE_SKU,
            f"order:{ids['T3']}:line:1:exclusive",
            ids["T3"],
            shop.sku["NET-1"],
            None,
            None,
        ),
        (
            ViolationKind.PRICE_BELOW_FLOOR,
            f"order:{ids['T5']}:line:1:price_below_floor",
            ids["T5"],
            shop.sku["TEA-1"],
            Decimal("85.00"),
            Decimal("85.00"),  # the unit price rounds up to the floor; the total is under it
        ),
    ]
    assert all(v.channel is SalesChannel.TMALL and v.partner_id is None for v in found)
    assert found[0].detail == "TEA-1 sold at 80.00 on TMALL, below the floor 85.00."


async def test_an_inactive_sku_is_still_imported(db, shop):
    """The export is history: a SKU no longer on sale was sold then."""
    summary = await run(db, csv_text(row("T1", sku="OLD-1", paid="30.00")))
    assert summary.orders_imported == 1


# --- customers ----------------------------------------------------------------------------


async def test_customers_are_found_by_buyer_id_and_made_once_per_buyer(db, shop):
    summary = await run(
        db,
        csv_text(
            row("T1", buyer="tb_1", phone="13900000001"),
            row("T2", buyer=" tb_1 ", phone="139****0001"),  # the same buyer, phone masked
            row("T3", buyer="tb_2"),
            row("J1", market="jd", buyer="tb_1"),  # another marketplace: another buyer
        ),
        batch_size=2,  # the same buyer across batches
    )
    assert (summary.orders_imported, summary.customers_created) == (4, 3)
    first = await buyer_owner(db, "tmall:tb_1")
    assert first is not None
    assert (first.first_channel, first.contact_phone, first.status) == (
        "tmall",
        "13900000001",
        CustomerStatus.ACTIVE,
    )
    placed = {o.external_id: o.customer_id for o in await orders(db)}
    assert placed["T1"] == placed["T2"] == first.id
    assert placed["T3"] != first.id and placed["J1"] not in (first.id, placed["T3"])
    jd = await buyer_owner(db, "jd:tb_1")
    assert jd is not None and jd.first_channel == "jd" and jd.contact_phone is None
    # The marketplace phone is a contact detail, never a login identity.
    assert await count(db, CustomerIdentity, CustomerIdentity.kind == IdentityKind.PHONE) == 1


async def test_a_buyer_whose_phone_a_customer_holds_is_matched_to_that_customer(db, shop):
    summary = await run(db, csv_text(row("T1", buyer="ann_tb", phone="138 1234 1234")))
    assert summary.customers_created == 0
    ann = await buyer_owner(db, "tmall:ann_tb")
    assert ann is not None and ann.id == shop.ann
    # fill only: blanks are filled, nothing on file is replaced
    assert (ann.contact_phone, ann.first_channel, ann.name) == ("13812341234", "tmall", "王小丫")
    # Later orders of that buyer find ann by the buyer id, even without a phone.
    await run(db, csv_text(row("T2", buyer="ann_tb")))
    assert (await one(db, "T2")).customer_id == shop.ann


async def test_a_customer_found_by_buyer_id_keeps_their_profile(db, shop):
    async with db.transaction() as session:
        known = await upsert_customer(
            session,
            CustomerDraft(
                identities=[(IdentityKind.MARKETPLACE_BUYER, "Tmall:tb_known")],
                contact_phone="13700000000",
                first_channel="mini_program",
            ),
            actor="test",
            now=NOW,
        )
    summary = await run(db, csv_text(row("T1", buyer="tb_known", phone="13900000009")))
    assert summary.customers_created == 0
    found = await buyer_owner(db, "tmall:tb_known")
    assert found is not None and found.id == known.customer.id
    assert (found.contact_phone, found.first_channel) == ("13700000000", "mini_program")


async def test_a_buyer_of_a_merged_customer_lands_on_the_survivor(db, shop):
    async with db.transaction() as session:
        merged = Customer(status=CustomerStatus.MERGED, merged_into_id=shop.cat, attributes={})
        session.add(merged)
        await session.flush()
        session.add(
            CustomerIdentity(
                customer_id=merged.id, kind=IdentityKind.MARKETPLACE_BUYER, value="tmall:old_tb"
            )
        )
    summary = await run(db, csv_text(row("T1", buyer="old_tb")))
    assert (summary.orders_imported, summary.customers_created) == (1, 0)
    assert (await one(db, "T1")).customer_id == shop.cat


# --- rejected rows ------------------------------------------------------------------------

LONG = "x" * 65


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row("B1", market="amazon"), "BAD_MARKETPLACE"),
        (row("B1", market=""), "MISSING_FIELD"),
        (row(LONG), "BAD_ORDER_ID"),
        (row("B1", buyer="has space"), "BAD_BUYER_ID"),
        (row("B1", buyer="a:b"), "BAD_BUYER_ID"),
        (row("B1", buyer=""), "MISSING_FIELD"),
        (row("B1", phone="12345"), "BAD_PHONE"),
        (row("B1", paid_at="yesterday"), "BAD_TIME"),
        (row("B1", paid_at="2026-06-18 10:00:00"), "TIME_WITHOUT_OFFSET"),
        (row("B1", paid_at="2099-01-01T00:00:00+08:00"), "BAD_TIME"),
        (row("B1", quantity="0", paid="0.00"), "BAD_QUANTITY"),
        (row("B1", quantity="-1"), "BAD_QUANTITY"),
        (row("B1", quantity="1.5"), "BAD_QUANTITY"),
        (row("B1", quantity="100001"), "BAD_QUANTITY"),
        (row("B1", quantity="２"), "BAD_QUANTITY"),  # a full-width digit
        (row("B1", quantity=""), "MISSING_FIELD"),
        (row("B1", paid="1.234", line_paid="1.234"), "BAD_MONEY"),
        (row("B1", paid="-5", line_paid="-5"), "BAD_MONEY"),
        (row("B1", paid="¥100", line_paid="¥100"), "BAD_MONEY"),
        (row("B1", paid="NaN", line_paid="NaN"), "BAD_MONEY"),
        (row("B1", paid="1e3", line_paid="1000"), "BAD_MONEY"),
        (row("B1", paid="1,000.00", line_paid="1,000.00"), "BAD_MONEY"),
        (row("B1", paid="1000000000000.00"), "BAD_MONEY"),
        (row("B1", sku="NOPE"), "UNKNOWN_SKU"),
        (row("B1", sku=""), "MISSING_FIELD"),
        (row("B1", paid="100.00", line_paid="99.99"), "TOTAL_MISMATCH"),
        (row("B1") + ",extra", "UNREADABLE"),
        (row("B1", quantity="x", paid="y"), "BAD_MONEY"),  # the first problem names it
    ],
)
async def test_a_bad_row_is_rejected_with_its_reason_and_the_rest_imports(db, shop, bad, reason):
    sink = io.StringIO()
    summary = await run(db, csv_text(row("G1"), bad, row("G2")), rejects=sink)
    assert (summary.orders_imported, summary.orders_rejected, summary.rows_rejected) == (2, 1, 1)
    assert reasons(summary) == {reason: (1, [3])}
    assert sorted(o.external_id for o in await orders(db)) == ["G1", "G2"]
    rejected = list(csv.reader(io.StringIO(sink.getvalue())))
    assert rejected[0] == ["reject_line", "reject_reason", *HEADER.split(",")]
    assert rejected[1][0] == "3"
    assert rejected[1][1].startswith(f"{reason.lower()}: ")
    assert rejected[1][2:] == next(csv.reader([bad]))


async def test_a_bad_line_rejects_its_whole_order_and_only_that_order(db, shop):
    sink = io.StringIO()
    summary = await run(
        db,
        csv_text(
            row("T1", paid="150.00", line_paid="100.00"),
            row("T1", paid="150.00", sku="NOPE", line_paid="50.00"),
            row("T2"),
            row("T3", paid="150.00", line_paid="100.00"),
            row("T3", paid="150.00", sku="TEA-2", quantity="0", line_paid="50.00"),
            row("T3", paid="150.00", sku="TEA-2", line_paid="0.00"),
        ),
        rejects=sink,
        batch_size=1,
    )
    assert (summary.orders_imported, summary.orders_rejected, summary.rows_rejected) == (1, 2, 5)
    assert reasons(summary) == {
        "ORDER_REJECTED": (3, [2, 5, 7]),
        "UNKNOWN_SKU": (1, [3]),
        "BAD_QUANTITY": (1, [6]),
    }
    assert [o.external_id for o in await orders(db)] == ["T2"]
    assert await count(db, OrderLine) == 1
    lines = {r[0]: r[1] for r in csv.reader(io.StringIO(sink.getvalue()))}
    assert lines["2"] == "order_rejected: Order tmall:T1 is rejected because of line 3."
    assert lines["3"] == "unknown_sku: line 3: no SKU has the code 'NOPE'."


async def test_an_orders_rows_must_agree_on_the_order_fields(db, shop):
    summary = await run(
        db,
        csv_text(
            row("T1", paid="200.00", line_paid="100.00"),
            row("T1", paid="200.00", buyer="someone_else", line_paid="100.00"),
        ),
    )
    assert reasons(summary) == {"ORDER_REJECTED": (1, [2]), "INCONSISTENT_ORDER": (1, [3])}
    assert summary.reasons[RejectReason.INCONSISTENT_ORDER].rows == 1


async def test_json_lines_rejections(db, shop):
    sink = io.StringIO()
    lines = [
        record("J1"),
        "{not json",
        "[1, 2]",
        record("J2", lines=[]),
        record("J3", lines=["TEA-2"]),
        record("J4", lines=[{"sku": "TEA-2", "quantity": True, "paid": "50.00"}]),
        record("J5", paid="50.00", lines=[{"sku": "TEA-2", "quantity": 1, "paid": 49.999}]),
        record("J6", paid_at="2026-06-18T10:00:00"),
        record("J7", buyer_id=None),
        record("J1"),  # the same order again
        record("J8", lines=[{"sku": "TEA-2", "quantity": 1, "paid": "1.00"}] * 201),
        record("J9", paid="1.00", lines=[{"sku": "TEA-2", "quantity": 1, "paid": "2.00"}]),
        record("J10"),
    ]
    summary = await run(db, "\n".join(lines), ImportFormat.JSONL, rejects=sink)
    assert (summary.rows_read, summary.orders_imported, summary.rows_rejected) == (13, 2, 11)
    assert reasons(summary) == {
        "UNREADABLE": (3, [2, 3, 5]),
        "MISSING_FIELD": (2, [4, 9]),
        "BAD_QUANTITY": (1, [6]),
        "BAD_MONEY": (1, [7]),
        "TIME_WITHOUT_OFFSET": (1, [8]),
        "DUPLICATE_ORDER": (1, [10]),
        "TOO_MANY_LINES": (1, [11]),
        "TOTAL_MISMATCH": (1, [12]),
    }
    written = [json.loads(text) for text in sink.getvalue().splitlines()]
    assert [w["reject_line"] for w in written] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert written[0] == {
        "reject_line": 2,
        "reject_reason": written[0]["reject_reason"],
        "raw": "{not json",
    }
    assert written[0]["reject_reason"].startswith("unreadable: line 2: not JSON")
    assert written[3]["reject_reason"] == "unreadable: line 5 lines[0]: not a JSON object."
    assert written[7]["order_id"] == "J7" and written[7]["buyer_id"] is None
    assert written[8]["reject_reason"] == (
        "duplicate_order: Order jd:J1 is already in this file at line 1."
    )


async def test_a_sku_priced_in_another_currency_is_rejected(db, shop):
    async with db.transaction() as session:
        session.add(
            Sku(
                product_id=shop.product,
                code="USD-1",
                name="imported",
                currency="USD",
                suggested_retail_price=Decimal("10.00"),
                cost_price=Decimal("5.00"),
            )
        )
    summary = await run(db, csv_text(row("T1", sku="USD-1", paid="10.00")))
    assert reasons(summary) == {"CURRENCY_MISMATCH": (1, [2])}


async def test_an_order_of_too_many_csv_rows_is_rejected_whole(db, shop):
    rows = [row("BIG", paid="201.00", sku="TEA-2", line_paid="1.00") for _ in range(201)]
    summary = await run(db, csv_text(row("T1"), *rows, row("T2")), batch_size=1)
    assert (summary.orders_imported, summary.orders_rejected) == (2, 1)
    assert summary.reasons[RejectReason.TOO_MANY_LINES].rows == 201
    assert summary.reasons[RejectReason.TOO_MANY_LINES].lines == [3, 4, 5, 6, 7]
    assert summary.rows_rejected == 201


async def test_an_overlong_line_is_rejected_without_being_held(db, shop):
    huge = row("T9", buyer="b" * (parsing.MAX_LINE_CHARS + 10))
    summary = await run(db, csv_text(row("T1"), huge, row("T2")))
    assert (summary.orders_imported, reasons(summary)) == (2, {"UNREADABLE": (1, [3])})
    summary = await run(
        db, "\n".join([record("J1"), "{" + " " * 70_000 + "}", record("J2")]), ImportFormat.JSONL
    )
    assert (summary.orders_imported, reasons(summary)) == (2, {"UNREADABLE": (1, [2])})


# --- rows of an order that are not together ---------------------------------------------------


def split_file() -> str:
    """Order A's rows apart: a paid line, another order, then A's free gift line."""
    return csv_text(
        row("A", paid="100.00", line_paid="100.00"),
        row("B", buyer="tb_b"),
        row("A", paid="100.00", sku="TEA-2", line_paid="0.00"),
    )


async def test_an_order_split_inside_a_batch_is_rejected_whole(db, shop):
    summary = await run(db, split_file())
    assert (summary.orders_imported, summary.orders_rejected, summary.orders_withdrawn) == (1, 2, 0)
    assert reasons(summary) == {"NOT_CONTIGUOUS": (2, [2, 4])}
    assert [o.external_id for o in await orders(db)] == ["B"]


async def test_an_order_split_across_batches_is_withdrawn_not_left_half_imported(db, shop):
    sink = io.StringIO()
    summary = await run(db, split_file(), batch_size=1, rejects=sink)
    assert (summary.orders_imported, summary.orders_withdrawn, summary.orders_rejected) == (1, 1, 1)
    assert reasons(summary) == {"NOT_CONTIGUOUS": (1, [4])}
    assert [o.external_id for o in await orders(db)] == ["B"]
    assert await count(db, OrderLine) == 1
    assert "also has rows from line 2" in sink.getvalue()
    # The withdrawn order's buyer is not left counting it in the per-customer metrics.
    async with db.read() as session:
        assert await metrics_differences(session) == []
    # Sorted, the same rows import whole.
    summary = await run(
        db,
        csv_text(
            row("A", paid="100.00", line_paid="100.00"),
            row("A", paid="100.00", sku="TEA-2", line_paid="0.00"),
        ),
    )
    assert summary.orders_imported == 1
    assert len(await lines_of(db, (await one(db, "A")).id)) == 2


# --- idempotency, dry runs, batches -------------------------------------------------------


async def test_a_re_run_imports_nothing_and_skips_every_order(db, shop):
    text = csv_text(row("T1"), row("T2", buyer="tb_2"), row("T3", sku="NOPE"))
    first = await run(db, text)
    again = await run(db, text, batch_size=1)
    assert (first.orders_imported, first.orders_skipped, first.orders_rejected) == (2, 0, 1)
    assert (again.orders_imported, again.orders_skipped, again.orders_rejected) == (0, 2, 1)
    assert (again.customers_created, again.violations) == (0, 0)
    assert await count(db, Order) == 2
    assert await count(db, OrderEvent) == 2


async def test_the_same_order_id_on_another_marketplace_is_another_order(db, shop):
    summary = await run(db, csv_text(row("X1"), row("X1", market="jd")))
    assert summary.orders_imported == 2


async def test_a_dry_run_counts_everything_and_commits_nothing(db, shop):
    text = csv_text(row("T1", paid="80.00"), row("T2", buyer="tb_2"), row("T3", sku="NOPE"))
    dry = await run(db, text, dry_run=True)
    assert dry.dry_run
    assert (dry.orders_imported, dry.orders_rejected, dry.customers_created, dry.violations) == (
        2,
        1,
        2,
        1,
    )
    assert await count(db, Order) == 0
    assert (
        await count(db, CustomerIdentity, CustomerIdentity.kind == IdentityKind.MARKETPLACE_BUYER)
        == 0
    )
    assert await count(db, ChannelViolation) == 0
    real = await run(db, text)
    assert (real.orders_imported, real.customers_created, real.violations) == (2, 2, 1)


async def test_a_batch_costs_the_same_statements_for_10_and_60_orders(db, shop, count_queries):
    def orders_of(prefix: str, n: int) -> str:
        return csv_text(
            *(
                row(f"{prefix}{i}", buyer=f"{prefix}_{i % (n // 2)}", phone=f"1390000{i:04d}")
                for i in range(n)
            )
        )

    with count_queries() as few:
        small = await run(db, orders_of("s", 10))
    with count_queries() as many:
        large = await run(db, orders_of("l", 60))
    assert (small.orders_imported, large.orders_imported) == (10, 60)
    # existing orders; SKUs (2); buyers and phones; max id (SQLite) or ids (PostgreSQL);
    # customers; identities and who holds them; orders; lines; events; then the order hooks:
    # metrics (claim the buyers' rows, drop emptied ones, upsert, attribute) and touchpoints
    assert few.count == many.count == 16, few.statements


async def test_an_empty_or_headerless_file_is_refused(db, shop):
    with pytest.raises(OrderImportError, match="empty"):
        await run(db, "")
    with pytest.raises(OrderImportError, match="lacks quantity, line_paid"):
        await run(db, "marketplace,order_id,buyer_id,paid_at,paid,sku\n")
    empty = await run(db, "", ImportFormat.JSONL)
    assert (empty.rows_read, empty.orders_imported) == (0, 0)


async def test_a_header_is_matched_whatever_its_case_order_or_extra_columns(db, shop):
    header = "Line Paid,SKU,Quantity,Paid,Paid-At,Buyer ID,Order ID,Marketplace,note"
    summary = await run(
        db, csv_text(f"100.00,TEA-1,1,100.00,{PAID_AT},tb_1,T1,Tmall,gift wrap", header=header)
    )
    assert summary.orders_imported == 1


async def test_encodings(db, shop):
    gbk = csv_text(row("T1", buyer="买家一号")).encode("gbk")
    summary = await run(db, gbk, encoding="gbk")
    assert summary.orders_imported == 1
    assert await buyer_owner(db, "tmall:买家一号") is not None
    with pytest.raises(OrderImportError, match="not utf-8-sig text; give the file's encoding"):
        await run(db, csv_text(row("T2", buyer="买家二号")).encode("gbk"))
    bom = ("\ufeff" + csv_text(row("T3"))).encode()
    assert (await run(db, bom)).orders_imported == 1


def test_the_format_comes_from_the_extension_or_the_option(tmp_path):
    assert records.detect_format(tmp_path / "x.CSV") is ImportFormat.CSV
    assert records.detect_format(tmp_path / "x.ndjson") is ImportFormat.JSONL
    assert records.detect_format(tmp_path / "x.txt", ImportFormat.JSONL) is ImportFormat.JSONL
    with pytest.raises(OrderImportError, match="--format"):
        records.detect_format(tmp_path / "x.json")


async def test_a_rejects_file_can_be_fixed_and_imported(db, shop):
    sink = io.StringIO()
    await run(db, csv_text(row("T1"), row("T2", sku="TEA-9")), rejects=sink)
    header, rejected = list(csv.reader(io.StringIO(sink.getvalue())))
    fields = dict(zip(header, rejected, strict=True))
    fields.update(sku="TEA-2", paid="50.00", line_paid="50.00")
    fixed = io.StringIO()
    csv.writer(fixed).writerows([header, list(fields.values())])
    summary = await run(db, fixed.getvalue())
    assert (summary.orders_imported, summary.rows_rejected) == (1, 0)
    assert (await one(db, "T2")).total == Decimal("50.00")


# --- races --------------------------------------------------------------------------------


async def test_concurrent_imports_of_one_file_import_each_order_once(db, shop):
    text = csv_text(
        *(row(f"T{i}", buyer=f"tb_{i % 7}", phone=f"1390000{i % 5:04d}") for i in range(40))
    )
    results = await asyncio.gather(*(run(db, text, batch_size=3) for _ in range(3)))
    assert sum(r.orders_imported for r in results) == 40
    assert sum(r.orders_skipped for r in results) == 80
    assert sum(r.customers_created for r in results) == 7
    assert await count(db, Order) == 40
    assert (
        await count(db, CustomerIdentity, CustomerIdentity.kind == IdentityKind.MARKETPLACE_BUYER)
        == 7
    )
    # No customer was left behind by a lost race.
    async with db.read() as session:
        bare = await session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(~Customer.id.in_(select(CustomerIdentity.customer_id)))
        )
    assert bare == 2  # bob and cat, who have no identity in the shop


async def test_an_import_and_upserts_of_the_same_buyers_make_one_customer_each(db, shop):
    buyers = [f"tb_{i}" for i in range(12)]
    text = csv_text(*(row(f"T{i}", buyer=b) for i, b in enumerate(buyers)))

    async def upsert(buyer: str) -> int:
        async with db.transaction() as session:
            result = await upsert_customer(
                session,
                CustomerDraft(
                    identities=[(IdentityKind.MARKETPLACE_BUYER, f"tmall:{buyer}")],
                    first_channel="tmall",
                ),
                actor="test",
                now=NOW,
            )
        return result.customer.id

    summary, *upserted = await asyncio.gather(
        run(db, text, batch_size=2), *(upsert(b) for b in reversed(buyers))
    )
    assert summary.orders_imported == 12
    placed = {o.external_id: o.customer_id for o in await orders(db)}
    for i, buyer in enumerate(buyers):
        owner = await buyer_owner(db, f"tmall:{buyer}")
        assert owner is not None
        assert placed[f"T{i}"] == owner.id == upserted[len(buyers) - 1 - i]
    async with db.read() as session:
        total = await session.scalar(select(func.count()).select_from(Customer))
    assert total == 3 + 12  # the shop's three and one per buyer


async def test_concurrent_imports_filling_the_same_customers_blanks_do_not_deadlock(db, shop):
    """Each import fills the blank contact phone of customers the others use too: their locks
    are taken in one order and are exclusive from the start (a shared lock upgraded by two
    transactions at once deadlocks)."""
    buyers = [f"tb_{i}" for i in range(8)]
    async with db.transaction() as session:
        for buyer in buyers:
            await upsert_customer(
                session,
                CustomerDraft(identities=[(IdentityKind.MARKETPLACE_BUYER, f"tmall:{buyer}")]),
                actor="test",
                now=NOW,
            )
    files = [
        csv_text(
            *(
                row(f"F{n}-{i}", buyer=buyer, phone=f"1390000{n}{i:03d}")
                for i, buyer in enumerate(buyers if n % 2 else reversed(buyers))
            )
        )
        for n in range(6)
    ]
    results = await asyncio.gather(*(run(db, text, batch_size=2) for text in files))
    assert [r.orders_imported for r in results] == [8] * 6
    assert sum(r.customers_created for r in results) == 0
    for buyer in buyers:
        owner = await buyer_owner(db, f"tmall:{buyer}")
        assert owner is not None and owner.contact_phone is not None


async def test_refunding_an_imported_order_leaves_level_spend_alone(db, shop):
    """Marketplace orders never counted toward member levels, so their refunds must not
    lower what does count."""
    from api.customers.models import QualifyingSpend
    from api.orders.lifecycle import refund as refunds

    summary = await run(db, record("R1"), ImportFormat.JSONL)
    assert summary.orders_imported == 1
    async with db.read() as session:
        order = await session.scalar(select(Order).where(Order.external_id == "R1"))
    async with db.transaction() as session:
        refunded = await refunds.refund(
            session,
            HQ,
            order.id,
            refunds.RefundDraft("r-1", "退货"),
            now=NOW,
            wiring=orders_wiring(),
        )
    assert refunded.order.status is OrderStatus.REFUNDED
    async with db.read() as session:
        spend = await session.scalar(select(func.count()).select_from(QualifyingSpend))
    assert spend == 0
