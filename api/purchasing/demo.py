"""Purchasing's part of the demo seed (``api/seed.py``): price lists by tier and a contract
list, credit lines, and purchase orders of 浦东新区代理商 in several states."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.catalog.queries import skus_by_code
from api.db import utcnow
from api.partners.models import PartnerTier
from api.purchasing import credit_lines, pricing, service
from api.purchasing.pricing import BreakDraft, ItemDraft, PriceListDraft

# partner code, credit limit (cents)
DEMO_CREDIT = [("SH-DIST", 20_000_000), ("SH-PD-AG", 5_000_000), ("SH-XH-AG", 500_000)]
# (key, [(sku code, quantity)], the steps taken after creating it)
DEMO_ORDERS = [
    ("demo-draft", [("CUP-QC-1", 24)], ()),
    ("demo-submitted", [("TEA-LJ-250", 20)], ("submit",)),
    ("demo-approved", [("TEA-LJ-250", 50), ("CUP-QC-1", 48)], ("submit", "approve")),
    ("demo-shipped", [("TEA-LJ-250", 10)], ("submit", "approve", "ship")),
    ("demo-closed", [("CUP-QC-1", 12)], ("submit", "approve", "ship", "receive", "pay")),
]
DEMO_BUYER, DEMO_DELIVER_TO, DEMO_WAREHOUSE = "SH-PD-AG", "S-SH-001", "W-SH-HQ"


async def seed_purchasing(
    session: AsyncSession, hq: Principal, partners: dict[str, int], stores: dict[str, int]
) -> None:
    now = utcnow()
    skus = {
        code: sku.id
        for code, sku in (await skus_by_code(session, ["TEA-LJ-250", "CUP-QC-1"])).items()
    }
    tea, cup = skus["TEA-LJ-250"], skus["CUP-QC-1"]
    since = now - timedelta(days=30)
    for name, tier, tea_cents, cup_cents in (
        ("A 级经销价 2026", PartnerTier.A, 18_000, 3_800),
        ("B 级经销价 2026", PartnerTier.B, 19_000, 4_000),
        ("C 级经销价 2026", PartnerTier.C, 20_000, 4_200),
    ):
        items = [
            ItemDraft(
                tea, tea_cents, pack_size=10, breaks=[BreakDraft(50, 300), BreakDraft(100, 500)]
            ),
            ItemDraft(cup, cup_cents, min_quantity=12, pack_size=12),
        ]
        await pricing.create_price_list(
            session, hq, PriceListDraft(name=name, valid_from=since, items=items, tier=tier)
        )
    await pricing.create_price_list(
        session,
        hq,
        PriceListDraft(
            name="浦东新区代理商 合同价",
            valid_from=since,
            partner_id=partners[DEMO_BUYER],
            items=[ItemDraft(tea, 17_500, pack_size=10, breaks=[BreakDraft(50, 300)])],
        ),
    )
    for code, limit in DEMO_CREDIT:
        await credit_lines.set_credit(
            session, hq, partners[code], limit_cents=limit, payment_terms_days=30, now=now
        )
    for key, lines, steps in DEMO_ORDERS:
        draft = service.OrderDraft(
            store_id=stores[DEMO_DELIVER_TO],
            lines=[(skus[code], quantity) for code, quantity in lines],
            idempotency_key=key,
            partner_id=partners[DEMO_BUYER],
        )
        order_id = (await service.create_order(session, hq, draft, now=now)).order.id
        for step in steps:
            if step == "ship":
                await service.ship(
                    session,
                    hq,
                    order_id,
                    warehouse_id=stores[DEMO_WAREHOUSE],
                    tracking_number=f"SF{order_id:08d}",
                    now=now,
                )
            else:
                take = {
                    "submit": service.submit,
                    "approve": service.approve,
                    "receive": service.receive,
                    "pay": service.record_payment,
                }[step]
                await take(session, hq, order_id, now=now)
