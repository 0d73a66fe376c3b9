"""Demo data for `qudao seed --demo`: a small brand's channel network, through the services.

Besides partners and stores it creates member levels, earning rules, coupon templates and a few
members with points and coupons (and a marketplace buyer who duplicates one of them), a small
catalog with price bands and an online-exclusive SKU, stock at the stores and the warehouse (one
store below its safety level), a pickup order waiting at a store and a counter sale, price
lists by tier with a contract list and purchase orders in several states
(api/purchasing/demo.py), one demo login per staff role (all with the documented
password below), the first-party console client (`qudao-console`, password grant), an
integration client for one agent and the members' mini-program (`qudao-miniprogram`, public,
phone code and WeChat logins). Client secrets are stored hashed: the seed returns them so
`qudao seed --demo` can print them, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import otp, wechat
from api.auth import service as auth
from api.auth.principal import Principal, Role
from api.catalog import editing, queries, rules
from api.catalog.models import SalesChannel
from api.coupons import claims as coupon_claims
from api.coupons import templates as coupon_templates
from api.coupons.models import CouponChannel, CouponKind, CouponOrigin, CouponTemplate, Stacking
from api.customers.levels import LevelDraft, create_level
from api.customers.membership import JoinRequest, join
from api.customers.models import ConsentPurpose, IdentityKind, LevelMetric
from api.customers.profile import ConsentDecision, CustomerDraft
from api.customers.qualification import record_spend
from api.customers.upsert import upsert_customer
from api.db import Database, utcnow
from api.growth.demo import seed_growth
from api.inventory import adjusting
from api.loyalty import adjustments as loyalty_adjustments
from api.loyalty import earning as loyalty_earning
from api.orders import placing
from api.orders.drafts import LineDraft, OrderDraft
from api.orders.models import Fulfillment
from api.partners import service
from api.partners.models import Partner, PartnerStatus, PartnerTier, PartnerType
from api.purchasing.demo import seed_purchasing
from api.wiring import Wiring

SEEDER = Principal(subject="seed", role=Role.HQ_ADMIN)

# code, name, type, tier, parent code, territories
DEMO_PARTNERS = [
    ("SH-DIST", "上海浦江商贸有限公司", PartnerType.DISTRIBUTOR, PartnerTier.A, None, ["310000"]),
    ("ZJ-DIST", "杭州西湖供应链有限公司", PartnerType.DISTRIBUTOR, PartnerTier.A, None, ["330000"]),
    ("BJ-DIST", "北京京华分销有限公司", PartnerType.DISTRIBUTOR, PartnerTier.B, None, ["110000"]),
    ("SH-PD-AG", "浦东新区代理商", PartnerType.AGENT, PartnerTier.B, "SH-DIST", ["310115"]),
    ("SH-XH-AG", "徐汇区代理商", PartnerType.AGENT, PartnerTier.C, "SH-DIST", ["310104"]),
    (
        "HZ-FR-01",
        "杭州湖滨加盟店",
        PartnerType.FRANCHISE_STORE,
        PartnerTier.B,
        "ZJ-DIST",
        ["330102"],
    ),
    ("SH-DIRECT", "上海直营门店", PartnerType.DIRECT_STORE, PartnerTier.A, None, []),
    ("TMALL", "天猫官方旗舰店", PartnerType.MARKETPLACE_SHOP, PartnerTier.A, None, []),
    ("JD", "京东自营旗舰店", PartnerType.MARKETPLACE_SHOP, PartnerTier.A, None, []),
    ("DOUYIN", "抖音官方旗舰店", PartnerType.MARKETPLACE_SHOP, PartnerTier.B, None, []),
    ("SH-GL-01", "张江社区团长", PartnerType.GROUP_LEADER, PartnerTier.C, "SH-PD-AG", ["310115"]),
]

# code, name, partner code, region, address, offers pickup
DEMO_STORES = [
    ("S-SH-001", "陆家嘴旗舰店", "SH-PD-AG", "310115", "上海市浦东新区世纪大道100号", True),
    ("S-SH-002", "张江店", "SH-PD-AG", "310115", "上海市浦东新区张江路88号", True),
    ("S-SH-003", "徐家汇店", "SH-XH-AG", "310104", "上海市徐汇区漕溪北路1号", True),
    ("S-HZ-001", "湖滨银泰店", "HZ-FR-01", "330102", "杭州市上城区延安路258号", True),
    ("S-BJ-001", "国贸店", "BJ-DIST", "110105", "北京市朝阳区建国门外大街1号", False),
    ("S-SH-DIR", "南京西路直营店", "SH-DIRECT", "310106", "上海市静安区南京西路1266号", True),
    ("W-SH-HQ", "华东总仓", None, "310112", "上海市闵行区莘庄工业区申富路1号", False),
]


# Every demo login has this password. Documented (README, Makefile): demo databases only.
DEMO_PASSWORD = "qudao-demo-2026"

# email, role, partner code, store code
DEMO_USERS = [
    ("admin@demo.qudao.dev", Role.HQ_ADMIN, None, None),
    ("channel@demo.qudao.dev", Role.CHANNEL_MANAGER, None, None),
    ("marketing@demo.qudao.dev", Role.MARKETER, None, None),
    ("partner@demo.qudao.dev", Role.PARTNER_ADMIN, "SH-PD-AG", None),
    ("store@demo.qudao.dev", Role.STORE_STAFF, None, "S-SH-001"),
]
DEMO_EMAILS: dict[Role, str] = {role: email for email, role, _, _ in DEMO_USERS}

CONSOLE_CLIENT_ID = "qudao-console"
# The members' mini-program: a public client (no secret to ship in the app) that logs
# members in by phone code or WeChat (see api/auth/member_login.py).
MINIPROGRAM_CLIENT_ID = "qudao-miniprogram"
MINIPROGRAM_GRANTS = {otp.GRANT_TYPE, wechat.GRANT_TYPE, "refresh_token"}
INTEGRATION_PARTNER = "SH-PD-AG"
INTEGRATION_SCOPES = {
    "partners:read",
    "orders:write",
    "stock:write",
    "customers:read",
    "coupons:redeem",
}


@dataclass(frozen=True, slots=True)
class SeededClient:
    client_id: str
    secret: str
    grant_types: str
    scopes: str


@dataclass(frozen=True, slots=True)
class DemoSeed:
    """What `seed_demo` created, secrets included: the only time they can be shown."""

    password: str
    users: tuple[tuple[str, Role], ...]
    console: SeededClient
    integration: SeededClient
    integration_partner: str
    miniprogram_client_id: str = MINIPROGRAM_CLIENT_ID  # public: no secret


async def seed_demo(db: Database, wiring: Wiring) -> DemoSeed | None:
    """Insert the demo network and its logins unless partners exist already (then None)."""
    async with db.transaction() as session:
        if await session.scalar(select(Partner.id).limit(1)) is not None:
            return None
        partners, stores = await _seed_network(session)
        seeded = await _seed_identities(session, partners, stores)
        members = await _seed_crm(session, stores, wiring)
        await _seed_commerce(session, stores, members, wiring)
        await seed_purchasing(session, SEEDER, partners, stores)
        await seed_growth(session, SEEDER, stores, members)
        return seeded


async def _seed_network(session: AsyncSession) -> tuple[dict[str, int], dict[str, int]]:
    ids: dict[str, int] = {}
    for code, name, type_, tier, parent, territories in DEMO_PARTNERS:
        partner = await service.create_partner(
            session,
            SEEDER,
            service.PartnerDraft(
                code=code,
                name=name,
                type=type_,
                status=PartnerStatus.ACTIVE,
                tier=tier,
                parent_id=ids[parent] if parent else None,
                territories=territories,
                contact_name="渠道联系人",
                contact_phone="13800138000",
                contact_email=f"{code.lower()}@partners.example.com",
            ),
        )
        ids[code] = partner.id
    store_ids: dict[str, int] = {}
    for code, name, partner_code, region, address, pickup in DEMO_STORES:
        store = await service.create_store(
            session,
            SEEDER,
            service.StoreDraft(
                code=code,
                name=name,
                region_code=region,
                address=address,
                partner_id=ids[partner_code] if partner_code else None,
                offers_pickup=pickup,
            ),
        )
        store_ids[code] = store.id
    return ids, store_ids


async def _seed_identities(
    session: AsyncSession, partners: dict[str, int], stores: dict[str, int]
) -> DemoSeed:
    for email, role, partner_code, store_code in DEMO_USERS:
        await auth.create_user(
            session,
            email=email,
            password=DEMO_PASSWORD,
            role=role,
            partner_id=partners[partner_code] if partner_code else None,
            store_id=stores[store_code] if store_code else None,
        )
    console = await auth.create_client(
        session,
        name="Qudao console (demo)",
        grant_types={"password", "refresh_token"},
        first_party=True,
    )
    console.client.client_id = CONSOLE_CLIENT_ID  # a fixed id the docs can name
    miniprogram = await auth.create_client(
        session,
        name="Qudao mini-program (demo)",
        grant_types=MINIPROGRAM_GRANTS,
        first_party=True,
        public=True,
    )
    miniprogram.client.client_id = MINIPROGRAM_CLIENT_ID
    integration = await auth.create_client(
        session,
        name=f"ERP of {INTEGRATION_PARTNER} (demo)",
        grant_types={"client_credentials"},
        scopes=INTEGRATION_SCOPES,
        partner_id=partners[INTEGRATION_PARTNER],
    )
    await session.flush()
    return DemoSeed(
        password=DEMO_PASSWORD,
        users=tuple((email, role) for email, role, _, _ in DEMO_USERS),
        console=_seeded(console),
        integration=_seeded(integration),
        integration_partner=INTEGRATION_PARTNER,
    )


# --- the private domain: levels, earning rules, coupons, members -----------------------------

# code, name, rank, qualifying spend in a rolling year (CNY)
DEMO_LEVELS = [
    ("regular", "普卡会员", 0, "0"),
    ("silver", "银卡会员", 1, "2000"),
    ("gold", "金卡会员", 2, "8000"),
    ("platinum", "铂金会员", 3, "20000"),
]

# name, phone, recruiting store (None: not a member yet), spend so far, points granted, tags
DEMO_CUSTOMERS = [
    ("王芳", "13900000001", "S-SH-001", "2600", 1200, ["skincare"]),
    ("李娜", "13900000002", "S-SH-001", "9200", 5200, ["vip"]),
    ("张伟", "13900000003", "S-SH-002", "300", 150, []),
    ("刘洋", "13900000004", "S-SH-003", "21000", 8800, ["vip", "makeup"]),
    ("陈静", "13900000005", "S-HZ-001", "1200", 600, []),
    ("杨敏", "13900000006", "S-SH-DIR", "0", 0, ["new"]),
    ("赵磊", "13900000007", None, "0", 0, []),
]
# A Tmall buyer who left the same phone as 王芳 on an order: customerDuplicates finds them.
DEMO_MARKETPLACE_BUYER = ("tmall:tb_wangfang_88", "13900000001")


async def _seed_levels_and_earning_rules(session: AsyncSession, now: datetime) -> None:
    levels = {}
    for code, name, rank, threshold in DEMO_LEVELS:
        level = await create_level(
            session,
            SEEDER,
            LevelDraft(
                code=code,
                name=name,
                rank=rank,
                metric=LevelMetric.SPEND,
                threshold=Decimal(threshold),
            ),
        )
        levels[code] = level.id
    for name, multiplier, channel, level_code in (
        ("每消费1元积1分", "1", None, None),
        ("小程序下单双倍积分", "2", "mini_program", None),
        ("金卡会员1.5倍积分", "1.5", None, "gold"),
    ):
        await loyalty_earning.create_earning_rule(
            session,
            SEEDER,
            loyalty_earning.EarningRuleDraft(
                name=name,
                points_per_yuan=Decimal(1),
                multiplier=Decimal(multiplier),
                channel=channel,
                level_id=levels[level_code] if level_code else None,
                priority=1 if channel or level_code else 0,
            ),
            now,
        )


async def _seed_coupon_templates(session: AsyncSession, now: datetime) -> list[CouponTemplate]:
    templates = [
        await coupon_templates.create_template(session, SEEDER, draft, now=now)
        for draft in (
            # 线上领券、线下核销: claimed in the mini-program, used in any store.
            coupon_templates.TemplateDraft(
                name="满200减30 门店券",
                kind=CouponKind.AMOUNT_OFF_THRESHOLD,
                claim_channel=CouponChannel.ONLINE,
                use_channel=CouponChannel.OFFLINE,
                total_stock=1000,
                threshold_amount=Decimal(200),
                discount_amount=Decimal(30),
                valid_days=30,
                per_person_limit=2,
            ),
            coupon_templates.TemplateDraft(
                name="全场8.5折 最高减50",
                kind=CouponKind.PERCENT_OFF,
                claim_channel=CouponChannel.BOTH,
                use_channel=CouponChannel.BOTH,
                total_stock=500,
                percent_off=15,
                max_discount=Decimal(50),
                valid_days=14,
                stacking=Stacking.EXCLUSIVE,
            ),
            coupon_templates.TemplateDraft(
                name="新会员直减10元",
                kind=CouponKind.FIXED_OFF,
                claim_channel=CouponChannel.BOTH,
                use_channel=CouponChannel.BOTH,
                total_stock=5000,
                discount_amount=Decimal(10),
                valid_days=30,
                stacking=Stacking.STACKABLE,
            ),
        )
    ]
    return templates


async def _seed_crm(
    session: AsyncSession, stores: dict[str, int], wiring: Wiring
) -> dict[str, int]:
    """Levels, rules, coupon templates and the demo customers; returns their ids by name."""
    now = utcnow()
    await _seed_levels_and_earning_rules(session, now)
    templates = await _seed_coupon_templates(session, now)
    ids: dict[str, int] = {}
    for index, (name, phone, store, spend, points, tags) in enumerate(DEMO_CUSTOMERS):
        draft = CustomerDraft(
            identities=[(IdentityKind.PHONE, phone)],
            name=name,
            first_channel="store" if store else "mini_program",
            tags=tags,
            consents=[ConsentDecision(ConsentPurpose.MARKETING_MESSAGES, True, "seed")],
        )
        if store is None:
            customer = (await upsert_customer(session, draft, actor="seed")).customer
        else:
            customer = await join(
                session,
                SEEDER,
                JoinRequest(draft=draft, store_id=stores[store]),
                wiring=wiring.customers,
                now=now,
            )
        ids[name] = customer.id
        if spend != "0":
            await record_spend(
                session,
                customer.id,
                Decimal(spend),
                source_type="seed",
                source_id=f"spend-{index}",
                at=now,
            )
        if points:
            await loyalty_adjustments.adjust(
                session,
                customer.id,
                points,
                idempotency_key=f"seed-welcome-{index}",
                reason="开卡礼 (demo)",
                actor="seed",
                now=now,
                policy=wiring.settings.points_policy,
            )
        if store is not None:
            await coupon_claims.claim(
                session,
                SEEDER,
                templates[index % len(templates)].id,
                customer.id,
                channel=CouponChannel.ONLINE,
                now=now,
                origin=CouponOrigin.GRANT,
            )
    buyer, phone = DEMO_MARKETPLACE_BUYER
    await upsert_customer(
        session,
        CustomerDraft(
            identities=[(IdentityKind.MARKETPLACE_BUYER, buyer)],
            contact_phone=phone,
            first_channel="marketplace",
        ),
        actor="seed",
    )
    return ids


def _band(channel: SalesChannel, floor: str, ceiling: str) -> rules.BandDraft:
    return rules.BandDraft(channel, Decimal(floor), Decimal(ceiling))


# sku code, name, suggested retail price, cost, exclusive channels, bands
DemoSku = tuple[str, str, str, str, tuple[SalesChannel, ...], list[rules.BandDraft]]
# code, name, SKUs
DEMO_PRODUCTS: list[tuple[str, str, list[DemoSku]]] = [
    (
        "TEA-LJ",
        "明前龙井",
        [
            (
                "TEA-LJ-250",
                "250g 礼盒",
                "298",
                "120",
                (),
                [
                    _band(SalesChannel.MINI_PROGRAM, "268", "298"),
                    _band(SalesChannel.WEB, "268", "298"),
                    _band(SalesChannel.STORE_POS, "258", "298"),
                    _band(SalesChannel.TMALL, "248", "298"),
                ],
            ),
        ],
    ),
    (
        "CUP-QC",
        "青瓷茶杯",
        [("CUP-QC-1", "单只", "68", "22", (), [_band(SalesChannel.STORE_POS, "58", "68")])],
    ),
    (
        "TEA-BC",
        "白茶 线上专供",
        [
            (
                "TEA-BC-100",
                "100g 罐装",
                "158",
                "60",
                (SalesChannel.MINI_PROGRAM, SalesChannel.WEB),
                [_band(SalesChannel.MINI_PROGRAM, "138", "158")],
            )
        ],
    ),
]
# store code, SKU code, on hand, safety level (张江店 is short of 龙井: an open alert)
DEMO_STOCK = [
    ("W-SH-HQ", "TEA-LJ-250", 500, 100),
    ("W-SH-HQ", "CUP-QC-1", 800, 100),
    ("W-SH-HQ", "TEA-BC-100", 300, 50),
    ("S-SH-001", "TEA-LJ-250", 40, 10),
    ("S-SH-001", "CUP-QC-1", 60, 20),
    ("S-SH-002", "TEA-LJ-250", 6, 10),
    ("S-SH-003", "TEA-LJ-250", 25, 10),
    ("S-HZ-001", "TEA-LJ-250", 30, 10),
    ("S-SH-DIR", "TEA-LJ-250", 30, 10),
]


async def _seed_commerce(
    session: AsyncSession, stores: dict[str, int], members: dict[str, int], wiring: Wiring
) -> None:
    """Catalog, stock, a pickup order of 王芳's waiting at 陆家嘴旗舰店 and a counter sale to
    张伟 at 张江店."""
    now = utcnow()
    skus: dict[str, int] = {}
    for code, name, sku_rows in DEMO_PRODUCTS:
        drafts = [
            rules.SkuDraft(
                code=sku_code,
                name=sku_name,
                suggested_retail_price=Decimal(srp),
                cost_price=Decimal(cost),
                exclusive_channels=exclusive,
                price_bands=bands,
            )
            for sku_code, sku_name, srp, cost, exclusive, bands in sku_rows
        ]
        await editing.create_product(
            session, SEEDER, editing.ProductDraft(code=code, name=name, skus=drafts), now=now
        )
        created = await queries.skus_by_code(session, [d.code for d in drafts])
        skus.update({sku_code: sku.id for sku_code, sku in created.items()})
    for store, sku, on_hand, safety in DEMO_STOCK:
        await adjusting.adjust(
            session,
            SEEDER,
            adjusting.AdjustDraft(
                store_id=stores[store],
                sku_id=skus[sku],
                mode=adjusting.AdjustMode.SET,
                quantity=on_hand,
                reason="期初盘点 (demo)",
                idempotency_key=f"seed-{store}-{sku}",
                safety_level=safety,
            ),
            now=now,
        )
    for channel, fulfillment, store, customer in (
        (SalesChannel.MINI_PROGRAM, Fulfillment.PICKUP, "S-SH-001", "王芳"),
        (SalesChannel.STORE_POS, Fulfillment.IN_STORE, "S-SH-002", "张伟"),
    ):
        await placing.create_order(
            session,
            SEEDER,
            OrderDraft(
                channel=channel,
                fulfillment=fulfillment,
                lines=[LineDraft(quantity=1, sku_code="TEA-LJ-250")],
                store_id=stores[store],
                customer_id=members[customer],
                idempotency_key=f"seed-{store}",
            ),
            wiring=wiring.orders,
            now=now,
        )


def _seeded(new: auth.NewClient) -> SeededClient:
    assert new.secret is not None  # confidential clients
    return SeededClient(
        client_id=new.client.client_id,
        secret=new.secret,
        grant_types=new.client.grant_types,
        scopes=new.client.scopes,
    )
