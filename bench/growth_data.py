"""Growth benchmark data: a CRM in use, generated into PostgreSQL with COPY.

``python -m bench.growth_data --url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_growth``
fills a migrated database with ``--customers`` customers (1,000,000 by default) and exactly
``--orders`` orders (5,000,000), and everything the segments and the funnel read:

* a handful of partners (distributors, franchise and direct stores, a marketplace flagship
  shop, a community group leader) with ~30 stores and three shopping guides each, the four
  member levels of the demo seed, 300 SKUs of 60 products with a popularity skew;
* customers arriving over three years (more of them lately) by one of three ways: a
  marketplace purchase (65%), a store visit (25%) or the mini-program (10%); 0.3% of them
  merged into an older customer;
* their journey as touchpoints, three to four a customer, with the drop-off of a real funnel:
  marketplace purchase → package-insert QR scan (one of 40 QR codes) → WeCom friend of a
  guide → community group (40% skip it) → member registered → first private-domain order →
  repurchase; a step that would fall after the data's "now" does not happen;
* their orders, consistent with the journey (marketplace orders before the first private
  one, private orders only from the first-order step on, and a repurchase step at the second
  private order), 1-4 lines each, statuses and refunds as in life; most customers have 1-3
  orders, a capped Pareto tail has up to ~250;
* member levels from lifetime spend, tags on 15% of customers, consents and a points
  account for members; ``customer_metrics`` and RFM scores computed from the orders by the
  analytics service (``rebuild_customer_metrics`` per 100,000 ids, ``score_rfm``).

Deterministic: one seeded ``random.Random`` walks the customers in id order, so the same
options give the same rows. The data's "now" is fixed (``ANCHOR``); the benchmark evaluates
relative dates (``-90d``) against it. Rows go in with ``COPY`` (asyncpg
``copy_records_to_table`` on the raw connection, in chunks of ``CHUNK`` customers) while a
thread generates the next chunk, so Python and PostgreSQL each keep one core busy.
Foreign keys are not checked row by row during the load (``session_replication_role =
replica`` skips their triggers); every foreign key of the filled tables is verified with one
anti-join afterwards instead. Then ``VACUUM ANALYZE``.

Re-runnable: a row in ``bench_growth_marker`` records what was generated; a database that
already holds the requested size (same seed and generator version) is left alone. Anything
else (another size, ``--regenerate``, an interrupted run) drops and recreates the database,
which is why its name must contain "bench".
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import api.models  # noqa: F401  (every table on Base.metadata)
from api.analytics.metrics import rebuild_customer_metrics
from api.analytics.rfm_scoring import score_rfm
from api.db import Base, Database
from api.migrate import upgrade
from bench.data import guard_database_name

DEFAULT_CUSTOMERS = 1_000_000
DEFAULT_ORDERS = 5_000_000
SEED = 20261124
# Bump when the generated data changes shape: a database made by another version is rebuilt.
VERSION = 2
CHUNK = 20_000  # customers a chunk: ~100k orders, ~170k lines, ~60k touchpoints
# The data's "now": relative dates in segments are evaluated against it.
ANCHOR = datetime(2026, 11, 24, tzinfo=UTC)
HISTORY_DAYS = 3 * 365
DAY = 86_400.0
HOUR = 3_600.0
MARKER = "bench_growth_marker"
# Wide enough for the result table when output is piped (rich assumes 80 columns then).
console = Console(width=None if sys.stdout.isatty() else 110)

# --- reference data -------------------------------------------------------------------------

LEVELS = (  # id, code, name, rank, threshold (the demo seed's levels)
    (1, "regular", "普卡会员", 0, Decimal(0)),
    (2, "silver", "银卡会员", 1, Decimal(2000)),
    (3, "gold", "金卡会员", 2, Decimal(8000)),
    (4, "platinum", "铂金会员", 3, Decimal(20000)),
)
# Lifetime spend (cents) that places a generated member at a level: the levels' thresholds,
# applied to lifetime spend instead of a rolling year (gold and platinum: ~10% of members).
LEVEL_SPEND_CENTS = tuple((int(t) * 100, id_) for id_, _, _, _, t in reversed(LEVELS))
PARTNERS = (  # id, code, name, type, stores
    (1, "GP-DIST-EAST", "华东经销商", "distributor", 7),
    (2, "GP-DIST-NORTH", "华北经销商", "distributor", 6),
    (3, "GP-DIST-SOUTH", "华南经销商", "distributor", 6),
    (4, "GP-FRAN-HZ", "杭州加盟店", "franchise_store", 3),
    (5, "GP-FRAN-CD", "成都加盟店", "franchise_store", 3),
    (6, "GP-DIRECT", "品牌直营", "direct_store", 6),
    (7, "GP-FLAGSHIP", "天猫京东抖音旗舰店", "marketplace_shop", 0),
    (8, "GP-GROUP", "社区团长", "group_leader", 0),
)
FLAGSHIP_PARTNER = 7
GROUP_PARTNER = 8
GUIDES_PER_STORE = 3
PRODUCTS = 60
SKUS_PER_PRODUCT = 5
QR_CODES = 40
REGIONS = ("310115", "310104", "330102", "330106", "110105", "110108", "440305", "510104")

MARKETPLACES = ("tmall", "jd", "douyin")
MARKETPLACE_CUM = (0.5, 0.8, 1.0)
PRIVATE = ("mini_program", "store_pos", "web", "group_buy")
PRIVATE_CUM = (0.6, 0.9, 0.95, 1.0)
ORIGIN_CUM = (0.65, 0.9, 1.0)  # marketplace, store, mini-program
LINES_CUM = (0.55, 0.83, 0.95, 1.0)  # 1-4 lines an order
QUANTITY_CUM = (0.8, 0.95, 1.0)  # 1-3 units a line
TAGS = (  # tag, share of tagged customers
    ("skincare", 0.30),
    ("makeup", 0.22),
    ("price_sensitive", 0.18),
    ("new_mom", 0.12),
    ("vip", 0.10),
    ("gift_buyer", 0.06),
    ("vip_blacklist", 0.02),
)
TAGGED_SHARE = 0.15
MERGED_SHARE = 0.003

# Funnel steps (api.growth.models.TouchpointStep values).
MP, QR, WECOM, COMMUNITY, MEMBER, FIRST, REPEAT = (
    "marketplace_purchase",
    "qr_scan",
    "wecom_added",
    "community_joined",
    "member_registered",
    "first_order",
    "repurchase",
)

CUSTOMER_COLUMNS = (
    "id",
    "status",
    "merged_into_id",
    "name",
    "gender",
    "attributes",
    "first_channel",
    "member_since",
    "recruited_partner_id",
    "recruited_store_id",
    "recruited_guide_id",
    "level_id",
    "created_at",
    "updated_at",
)
ORDER_COLUMNS = (
    "id",
    "channel",
    "fulfillment",
    "status",
    "customer_id",
    "partner_id",
    "store_id",
    "reported_by_partner",
    "delivery_region_code",
    "currency",
    "subtotal",
    "coupon_discount",
    "points_used",
    "points_discount",
    "total",
    "cost_total",
    "refunded_amount",
    "points_earned",
    "external_id",
    "placed_at",
    "completed_at",
    "closed_at",
    "created_at",
    "updated_at",
)
LINE_COLUMNS = (
    "id",
    "order_id",
    "line_no",
    "sku_id",
    "sku_code",
    "product_id",
    "quantity",
    "unit_price",
    "unit_cost",
    "subtotal",
    "discount",
    "total",
    "refunded_quantity",
)
TOUCHPOINT_COLUMNS = (
    "id",
    "recorded_scope",
    "event_id",
    "customer_id",
    "step",
    "source_channel",
    "partner_id",
    "store_id",
    "guide_id",
    "campaign_id",
    "order_id",
    "occurred_at",
    "recorded_by",
    "created_at",
)
TAG_COLUMNS = ("customer_id", "tag", "created_at")
CONSENT_COLUMNS = ("customer_id", "purpose", "granted", "source", "decided_at")
POINTS_COLUMNS = ("customer_id", "balance", "pending", "debt", "version", "updated_at")
# COPY order within a chunk: parents first (the foreign keys are verified afterwards).
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("customer", CUSTOMER_COLUMNS),
    ("customer_tag", TAG_COLUMNS),
    ("customer_consent", CONSENT_COLUMNS),
    ("points_account", POINTS_COLUMNS),
    ("customer_order", ORDER_COLUMNS),
    ("order_line", LINE_COLUMNS),
    ("touchpoint", TOUCHPOINT_COLUMNS),
)
# Tables whose ids the generator assigns: their sequences are moved past them at the end.
ID_TABLES = (
    "member_level",
    "partner",
    "store",
    "staff_user",
    "product",
    "sku",
    "customer",
    "customer_order",
    "order_line",
    "touchpoint",
)
ZERO = Decimal(0)


def money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


@dataclass(frozen=True, slots=True)
class StoreRef:
    id: int
    partner_id: int
    guides: tuple[int, ...]
    offers_pickup: bool


@dataclass(frozen=True, slots=True)
class SkuRef:
    id: int
    code: str
    product_id: int
    price_cents: int
    cost_cents: int
    # As Decimals: the unit price, the unit cost, the line subtotal of 1, 2 and 3 units.
    price: Decimal
    cost: Decimal
    subtotals: tuple[Decimal, ...]


@dataclass(frozen=True, slots=True)
class Reference:
    stores: tuple[StoreRef, ...]
    skus: tuple[SkuRef, ...]
    sku_cum: tuple[float, ...]  # cumulative popularity weights (Zipf-like)


def reference_data() -> tuple[Reference, dict[str, list[dict[str, Any]]]]:
    """The small tables, as rows to insert, and the references the generator draws from."""
    created = ANCHOR - timedelta(days=HISTORY_DAYS + 30)
    rows: dict[str, list[dict[str, Any]]] = {
        "member_level": [
            {
                "id": id_,
                "code": code,
                "name": name,
                "rank": rank,
                "metric": "spend",
                "threshold": threshold,
                "window_days": 365,
                "grace_days": 30,
                "created_at": created,
            }
            for id_, code, name, rank, threshold in LEVELS
        ],
        "partner": [],
        "store": [],
        "staff_user": [],
        "product": [],
        "sku": [],
    }
    stores: list[StoreRef] = []
    store_id = guide_id = 0
    for partner_id, code, name, type_, store_count in PARTNERS:
        rows["partner"].append(
            {
                "id": partner_id,
                "code": code,
                "name": name,
                "type": type_,
                "status": "active",
                "tier": "a" if partner_id <= 3 else "b",
                "created_at": created,
                "updated_at": created,
            }
        )
        for _ in range(store_count):
            store_id += 1
            offers_pickup = store_id % 3 != 0
            rows["store"].append(
                {
                    "id": store_id,
                    "partner_id": partner_id,
                    "code": f"GS{store_id:03d}",
                    "name": f"{name} 门店 {store_id:03d}",
                    "region_code": REGIONS[store_id % len(REGIONS)],
                    "address": f"增长路 {store_id} 号",
                    "offers_pickup": offers_pickup,
                    "status": "open",
                    "kind": "store",
                    "created_at": created,
                }
            )
            guides = []
            for _ in range(GUIDES_PER_STORE):
                guide_id += 1
                guides.append(guide_id)
                rows["staff_user"].append(
                    {
                        "id": guide_id,
                        "email": f"guide{guide_id:03d}@bench-growth.example.com",
                        "password_hash": "!",  # no login: these are benchmark guides
                        "role": "store_staff",
                        "partner_id": partner_id,
                        "store_id": store_id,
                        "is_active": True,
                        "created_at": created,
                    }
                )
            stores.append(StoreRef(store_id, partner_id, tuple(guides), offers_pickup))
    skus: list[SkuRef] = []
    weights: list[float] = []
    for p in range(1, PRODUCTS + 1):
        rows["product"].append(
            {
                "id": p,
                "code": f"GP-{p:03d}",
                "name": f"增长基准商品 {p:03d}",
                "status": "active",
                "created_at": created,
                "updated_at": created,
            }
        )
        for v in range(SKUS_PER_PRODUCT):
            sku_id = (p - 1) * SKUS_PER_PRODUCT + v + 1
            price = 2900 + (sku_id * 7919) % 87000  # 29 to 899 yuan
            cost = price * (30 + sku_id % 16) // 100
            code = f"GSKU-{sku_id:04d}"
            rows["sku"].append(
                {
                    "id": sku_id,
                    "product_id": p,
                    "code": code,
                    "name": f"增长基准商品 {p:03d} 规格 {v + 1}",
                    "currency": "CNY",
                    "suggested_retail_price": money(price),
                    "cost_price": money(cost),
                    "active": True,
                    "created_at": created,
                }
            )
            skus.append(
                SkuRef(
                    sku_id,
                    code,
                    p,
                    price,
                    cost,
                    money(price),
                    money(cost),
                    tuple(money(price * q) for q in (1, 2, 3)),
                )
            )
            weights.append(1 / (sku_id**0.9))  # a few bestsellers, a long tail
    # Shuffle popularity over the catalog so bestsellers are not all cheap (low ids).
    random.Random(SEED).shuffle(weights)
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return Reference(tuple(stores), tuple(skus), tuple(c / total for c in cum)), rows


# --- the customers ----------------------------------------------------------------------------


@dataclass(slots=True)
class Planned:
    """One order a customer's journey calls for (``role``) or a free one (role None)."""

    at: float  # seconds relative to ANCHOR (<= 0)
    channel: str
    role: str | None


@dataclass(slots=True)
class Journey:
    cid: int
    created: float
    origin_channel: str
    store: StoreRef | None = None
    guide: int | None = None
    member_at: float | None = None
    campaign: str | None = None
    steps: list[tuple[str, float]] = field(default_factory=list)
    orders: list[Planned] = field(default_factory=list)
    repeat_at: float | None = None  # a private order after this is a free repurchase
    weight: float = 0.0  # share of the chunk's free orders


@dataclass(slots=True)
class Chunk:
    first: int
    customers: int
    rows: dict[str, list[tuple[Any, ...]]]

    @property
    def orders(self) -> int:
        return len(self.rows["customer_order"])


class Generator:
    """Walks the customers in id order with one seeded RNG; ``chunks()`` yields the rows."""

    def __init__(self, ref: Reference, customers: int, orders: int, seed: int = SEED) -> None:
        self.ref = ref
        self.customers = customers
        self.orders_target = orders
        self.rng = random.Random(seed)
        self.next_order = 1
        self.next_line = 1
        self.next_touchpoint = 1
        self.orders_made = 0
        self.merged: set[int] = set()

    # Small helpers on the hot path.
    def pick(self, cum: Sequence[float]) -> int:
        return bisect.bisect(cum, self.rng.random())

    def at(self, offset: float) -> datetime:
        return ANCHOR + timedelta(seconds=int(offset))

    def chunks(self) -> Iterator[Chunk]:
        first = 1
        while first <= self.customers:
            last = min(first + CHUNK - 1, self.customers)
            # Orders due by the end of this chunk: the total hits --orders exactly.
            due = self.orders_target * last // self.customers
            yield self.chunk(first, last, due)
            first = last + 1

    def chunk(self, first: int, last: int, orders_due: int) -> Chunk:
        rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name, _ in TABLES}
        journeys: list[Journey] = []
        for cid in range(first, last + 1):
            journey = self.journey(cid, rows)
            if journey is not None:
                journeys.append(journey)
        required = sum(len(j.orders) for j in journeys)
        free = max(0, orders_due - self.orders_made - required)
        buyers = [j for j in journeys if j.weight > 0]
        if buyers and free:
            counts = [0] * len(buyers)
            for i in self.rng.choices(range(len(buyers)), [j.weight for j in buyers], k=free):
                counts[i] += 1
            for journey, count in zip(buyers, counts, strict=True):
                self.free_orders(journey, count)
        for journey in journeys:
            self.emit(journey, rows)
        return Chunk(first, last - first + 1, rows)

    def journey(self, cid: int, rows: dict[str, list[tuple[Any, ...]]]) -> Journey | None:
        """Plan a customer's journey; a merged customer is written at once and has none."""
        rnd = self.rng.random
        created = -HISTORY_DAYS * DAY * rnd() ** 1.3  # more customers lately
        if cid > 1 and rnd() < MERGED_SHARE:
            at = self.at(created)
            survivor = self.rng.randrange(1, cid)  # merged into an older, live customer
            while survivor in self.merged:
                survivor = self.rng.randrange(1, cid)
            self.merged.add(cid)
            nothing = (None,) * 4  # no membership, recruiter or level
            rows["customer"].append(
                (cid, "merged", survivor, None, None, "{}", None, None, *nothing, at, at)
            )
            return None
        ref = self.ref
        origin = self.pick(ORIGIN_CUM)
        steps: list[tuple[str, float]] = []
        if origin == 0:  # a marketplace buyer
            channel = MARKETPLACES[self.pick(MARKETPLACE_CUM)]
            journey = Journey(cid, created, channel)
            journey.orders.append(Planned(created, channel, MP))
            steps.append((MP, created))
            t = created
            while True:  # the steps in order; each may not happen, nor happen after "now"
                t += DAY * (1 + 11 * rnd())
                if rnd() >= 0.7 or t > 0:
                    break
                journey.campaign = f"QR-{int(QR_CODES * rnd() ** 1.7):03d}"
                steps.append((QR, t))
                t += DAY * 3 * rnd()
                if rnd() >= 0.75 or t > 0:
                    break
                journey.store = ref.stores[self.rng.randrange(len(ref.stores))]
                steps.append((WECOM, t))
                if rnd() < 0.6:  # joins the guide's community group, or skips it
                    t += DAY * 7 * rnd()
                    if t > 0:
                        break
                    steps.append((COMMUNITY, t))
                t += DAY * 30 * rnd()
                if rnd() >= 0.75 or t > 0:
                    break
                journey.member_at = t
                steps.append((MEMBER, t))
                t += self.rng.expovariate(1 / (20 * DAY))
                if rnd() >= 0.7 or t > 0:
                    break
                self.private_step(journey, steps, FIRST, t)
                t += self.rng.expovariate(1 / (45 * DAY))
                if rnd() < 0.6 and t <= 0:
                    self.private_step(journey, steps, REPEAT, t)
                break
        elif origin == 1:  # recruited in a store
            journey = Journey(cid, created, "store_pos")
            journey.store = ref.stores[self.rng.randrange(len(ref.stores))]
            journey.member_at = created
            steps.append((MEMBER, created))
            if rnd() < 0.8:
                steps.append((WECOM, created + HOUR * rnd()))
            community = created + DAY * 30 * rnd()
            if rnd() < 0.4 and community <= 0:
                steps.append((COMMUNITY, community))
            if rnd() < 0.85:
                self.private_step(journey, steps, FIRST, created + HOUR * rnd(), "store_pos")
                t = created + self.rng.expovariate(1 / (45 * DAY))
                if rnd() < 0.6 and t <= 0:
                    self.private_step(journey, steps, REPEAT, t)
        else:  # registered in the mini-program
            journey = Journey(cid, created, "mini_program")
            journey.member_at = created
            steps.append((MEMBER, created))
            t = created + self.rng.expovariate(1 / (10 * DAY))
            if rnd() < 0.6 and t <= 0:
                self.private_step(journey, steps, FIRST, t, "mini_program")
                t += self.rng.expovariate(1 / (45 * DAY))
                if rnd() < 0.55 and t <= 0:
                    self.private_step(journey, steps, REPEAT, t)
        if journey.store is not None:
            journey.guide = journey.store.guides[self.rng.randrange(GUIDES_PER_STORE)]
        journey.steps = steps
        if journey.orders:
            # The free orders go mostly to a heavy tail, repeat buyers first.
            weight = min(self.rng.paretovariate(1.3) - 1, 60.0)
            if journey.repeat_at is not None:
                weight *= 2.5
            elif origin != 0:
                weight *= 0.3
            journey.weight = weight
        return journey

    def private_step(
        self,
        journey: Journey,
        steps: list[tuple[str, float]],
        step: str,
        at: float,
        channel: str | None = None,
    ) -> None:
        channel = channel or PRIVATE[self.pick(PRIVATE_CUM)]
        steps.append((step, at))
        journey.orders.append(Planned(at, channel, step))
        if step == REPEAT:
            journey.repeat_at = at

    def free_orders(self, journey: Journey, count: int) -> None:
        """``count`` more orders over the customer's active span: private ones only after
        their repurchase step (so the journey's first and second private orders stay the
        first and second), marketplace ones otherwise."""
        rnd = self.rng.random
        start = journey.orders[0].at
        end = max(
            min(0.0, start + self.rng.expovariate(1 / (600 * DAY))),
            max(p.at for p in journey.orders),
        )
        marketplace = (
            journey.origin_channel
            if journey.origin_channel in MARKETPLACES
            else MARKETPLACES[self.pick(MARKETPLACE_CUM)]
        )
        for _ in range(count):
            at = start + (end - start) * rnd()
            if journey.repeat_at is not None and at > journey.repeat_at and rnd() < 0.7:
                channel = PRIVATE[self.pick(PRIVATE_CUM)]
            else:
                channel = marketplace
            journey.orders.append(Planned(at, channel, None))

    def emit(self, journey: Journey, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        rng, rnd = self.rng, self.rng.random
        cid = journey.cid
        created = self.at(journey.created)
        store = journey.store
        store_id = store.id if store else None
        partner_id = store.partner_id if store else None
        order_of_step: dict[str, int] = {}
        spent = 0
        journey.orders.sort(key=lambda p: p.at)
        member_at = journey.member_at
        for planned in journey.orders:
            order_id, revenue = self.order(planned, journey, rows)
            spent += revenue
            if planned.role is not None:
                order_of_step[planned.role] = order_id
        self.orders_made += len(journey.orders)

        level_id = None
        if member_at is not None:
            level_id = next(level for floor, level in LEVEL_SPEND_CENTS if spent >= floor)
        gender = ("female", "female", "male", None)[rng.randrange(4)]
        rows["customer"].append(
            (
                cid,
                "active",
                None,
                f"顾客{cid}",
                gender,
                "{}",
                journey.origin_channel,
                self.at(member_at) if member_at is not None else None,
                partner_id if member_at is not None else None,
                store_id if member_at is not None else None,
                journey.guide if member_at is not None else None,
                level_id,
                created,
                created,
            )
        )
        if rnd() < TAGGED_SHARE:
            first = self.pick(_TAG_CUM)
            tags = {TAGS[first][0]}
            if rnd() < 0.3:
                tags.add(TAGS[self.pick(_TAG_CUM)][0])
            for tag in sorted(tags):
                rows["customer_tag"].append((cid, tag, created))
        if member_at is not None:
            joined = self.at(member_at)
            if rnd() < 0.9:
                rows["customer_consent"].append(
                    (cid, "marketing_messages", rnd() < 0.8, "registration", joined)
                )
            if rnd() < 0.6:
                rows["customer_consent"].append((cid, "profiling", True, "registration", joined))
            balance = int(spent // 100 * rnd())  # a yuan a point, some of it spent
            rows["points_account"].append((cid, balance, 0, 0, 1, joined))

        source = journey.origin_channel
        for step, offset in journey.steps:
            tid = self.next_touchpoint
            self.next_touchpoint += 1
            on_store = step not in (MP, QR) and store is not None
            scope = "system" if step in (MP, FIRST, REPEAT) else "hq"
            if on_store and scope == "hq":
                scope = f"partner:{partner_id}"
            at = self.at(offset)
            rows["touchpoint"].append(
                (
                    tid,
                    scope,
                    f"bench-{cid}-{step}",
                    cid,
                    step,
                    source,
                    partner_id if on_store else None,
                    store_id if on_store else None,
                    journey.guide if on_store else None,
                    journey.campaign if step == QR else None,
                    order_of_step.get(step),
                    at,
                    None,
                    at,
                )
            )

    def order(
        self, planned: Planned, journey: Journey, rows: dict[str, list[tuple[Any, ...]]]
    ) -> tuple[int, int]:
        """Write one order and its lines; return its id and counted revenue in cents."""
        rng, rnd = self.rng, self.rng.random
        order_id = self.next_order
        self.next_order += 1
        channel = planned.channel
        at = self.at(planned.at)
        store_id = partner_id = region = external_id = None
        if channel in MARKETPLACES:
            fulfillment, partner_id, external_id = "delivery", FLAGSHIP_PARTNER, str(order_id)
        elif channel == "store_pos":
            fulfillment = "in_store"
            store = journey.store or self.ref.stores[rng.randrange(len(self.ref.stores))]
            store_id, partner_id = store.id, store.partner_id
        elif channel == "mini_program" and rnd() < 0.35:
            fulfillment = "pickup"
            store = journey.store if journey.store and journey.store.offers_pickup else None
            store = store or self.ref.stores[0]
            store_id, partner_id = store.id, store.partner_id
        else:
            fulfillment = "delivery"
            partner_id = GROUP_PARTNER if channel == "group_buy" else None
        if fulfillment == "delivery":
            region = REGIONS[rng.randrange(len(REGIONS))]

        status = "completed"
        if planned.role is None:
            roll = rnd()
            if roll < 0.03:
                status = "refunded"
            elif roll < 0.055:
                status = "partially_refunded"
            elif roll < 0.08 and channel not in ("store_pos",):
                status = "cancelled"
            elif roll < 0.10 and fulfillment == "pickup":
                status = "expired"
            elif roll < 0.115 and planned.at > -7 * DAY and channel not in ("store_pos",):
                status = "placed" if fulfillment != "pickup" or roll < 0.11 else "ready_for_pickup"

        subtotal = cost = 0
        lines = rows["order_line"]
        first_line = len(lines)
        skus, sku_cum = self.ref.skus, self.ref.sku_cum
        for line_no in range(1, 2 + self.pick(LINES_CUM)):
            sku = skus[bisect.bisect(sku_cum, rnd())]
            quantity = 1 + self.pick(QUANTITY_CUM)
            line_total = sku.subtotals[quantity - 1]
            subtotal += sku.price_cents * quantity
            cost += sku.cost_cents * quantity
            refunded = quantity if status == "refunded" else 0
            lines.append(
                [
                    self.next_line,
                    order_id,
                    line_no,
                    sku.id,
                    sku.code,
                    sku.product_id,
                    quantity,
                    sku.price,
                    sku.cost,
                    line_total,
                    ZERO,
                    line_total,
                    refunded,
                ]
            )
            self.next_line += 1
        refunded_cents = subtotal if status == "refunded" else 0
        if status == "partially_refunded":
            # One unit of the first line back; a single unit order is refunded in full then.
            line = lines[first_line]
            if len(lines) - first_line == 1 and line[6] == 1:
                status = "completed"
            else:
                line[12] = 1
                refunded_cents = skus[line[3] - 1].price_cents
        for i in range(first_line, len(lines)):
            lines[i] = tuple(lines[i])

        counted = status in ("placed", "ready_for_pickup", "completed", "partially_refunded")
        revenue = subtotal - refunded_cents if counted else 0
        member = journey.member_at is not None and planned.at >= journey.member_at
        points = (subtotal - refunded_cents) // 100 if member and channel not in MARKETPLACES else 0
        total = money(subtotal)
        done = at + timedelta(hours=1 + 72 * rnd())
        completed_at = done if status in ("completed", "refunded", "partially_refunded") else None
        closed_at = done if status in ("cancelled", "expired") else None
        rows["customer_order"].append(
            (
                order_id,
                channel,
                fulfillment,
                status,
                journey.cid,
                partner_id,
                store_id,
                channel == "store_pos" and partner_id != 6,  # partners' own POS report in
                region,
                "CNY",
                total,
                ZERO,
                0,
                ZERO,
                total,
                money(cost),
                money(refunded_cents),
                points,
                external_id,
                at,
                completed_at,
                closed_at,
                at,
                completed_at or closed_at or at,
            )
        )
        return order_id, revenue


_TAG_CUM = tuple(sum(share for _, share in TAGS[: i + 1]) for i in range(len(TAGS)))


# --- loading ----------------------------------------------------------------------------------


@dataclass
class Marker:
    customers: int
    orders: int
    seed: int
    version: int
    generated_at: datetime
    seconds: float


def pg_admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


async def read_marker(url: str) -> Marker | None:
    """The marker of a complete generation, or None (no database, no marker, a crash)."""
    target = make_url(url)
    admin = create_async_engine(pg_admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
            )
    finally:
        await admin.dispose()
    if not exists:
        return None
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            if not await conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": MARKER}):
                return None
            row = (
                await conn.execute(
                    text(
                        f"SELECT customers, orders, seed, version, generated_at, seconds "
                        f"FROM {MARKER} ORDER BY generated_at DESC LIMIT 1"
                    )
                )
            ).first()
    finally:
        await engine.dispose()
    return Marker(*row) if row else None


async def recreate_database(url: str) -> None:
    guard_database_name(url)
    name = make_url(url).database
    admin = create_async_engine(pg_admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


async def insert_reference(conn: AsyncConnection, rows: dict[str, list[dict[str, Any]]]) -> None:
    for table_name, table_rows in rows.items():
        await conn.execute(Base.metadata.tables[table_name].insert(), table_rows)


def _produce(generator: Generator, out: queue.Queue[Chunk | BaseException | None]) -> None:
    try:
        for chunk in generator.chunks():
            out.put(chunk)
        out.put(None)
    except BaseException as exc:  # handed to the loading side, which re-raises it
        out.put(exc)


async def load(engine: AsyncEngine, generator: Generator, progress: Progress) -> dict[str, int]:
    """COPY the generator's chunks; a thread makes chunk n+1 while chunk n is copied."""
    chunks: queue.Queue[Chunk | BaseException | None] = queue.Queue(maxsize=2)
    producer = threading.Thread(target=_produce, args=(generator, chunks), daemon=True)
    producer.start()
    counts = {name: 0 for name, _ in TABLES}
    customers_task = progress.add_task("customers", total=generator.customers)
    orders_task = progress.add_task("orders", total=generator.orders_target)
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        # Foreign keys are verified once at the end (verify_foreign_keys), not per row.
        await raw.execute("SET session_replication_role = replica")
        await raw.execute("SET synchronous_commit = off")
        while True:
            chunk = await asyncio.to_thread(chunks.get)
            if chunk is None:
                break
            if isinstance(chunk, BaseException):
                raise chunk
            for name, columns in TABLES:
                records = chunk.rows[name]
                if records:
                    await raw.copy_records_to_table(name, records=records, columns=columns)
                    counts[name] += len(records)
            progress.update(customers_task, advance=chunk.customers)
            progress.update(orders_task, advance=chunk.orders)
        await raw.execute("RESET session_replication_role")
    producer.join()
    return counts


async def move_sequences(conn: AsyncConnection) -> None:
    for table in ID_TABLES:
        await conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 1))"
            )
        )


METRICS_BATCH = 100_000  # customer ids a rebuild transaction, as `qudao metrics rebuild` does


async def build_metrics(url: str, customers: int) -> None:
    """customer_metrics and RFM scores, by the analytics service: what the incremental
    upkeep must agree with is what the benchmark reads."""
    db = Database(url)
    try:
        for start in range(1, customers + 1, METRICS_BATCH):
            async with db.transaction() as session:
                await rebuild_customer_metrics(
                    session, range(start, start + METRICS_BATCH), now=ANCHOR
                )
        async with db.transaction() as session:
            await score_rfm(session, ANCHOR)
    finally:
        await db.dispose()


FILLED = (
    "customer",
    "customer_tag",
    "customer_consent",
    "points_account",
    "customer_order",
    "order_line",
    "touchpoint",
    "customer_metrics",
    "store",
    "staff_user",
    "sku",
)


async def verify_foreign_keys(conn: AsyncConnection) -> None:
    """Every foreign key of the filled tables holds (they were not checked during COPY)."""
    for table_name in FILLED:
        table = Base.metadata.tables[table_name]
        for fk in table.foreign_key_constraints:
            (column,) = fk.column_keys
            (element,) = fk.elements
            parent = element.column
            orphans = await conn.scalar(
                text(
                    f"SELECT count(*) FROM {table_name} c WHERE c.{column} IS NOT NULL "
                    f"AND NOT EXISTS (SELECT 1 FROM {parent.table.name} p "
                    f"WHERE p.{parent.name} = c.{column})"
                )
            )
            if orphans:
                raise AssertionError(f"{orphans} rows of {table_name}.{column} have no parent")


async def fill(url: str, customers: int, orders: int, *, show: bool = True) -> dict[str, int]:
    """Fill a migrated, empty database: the reference data, the customers (COPY), the
    sequences, the metrics; then verify every foreign key. Returns the rows per table."""
    started = time.perf_counter()
    ref, reference_rows = reference_data()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await insert_reference(conn, reference_rows)
        generator = Generator(ref, customers, orders)
        columns = (
            TextColumn("{task.description:>9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, disable=not show) as progress:
            counts = await load(engine, generator, progress)
        loaded = time.perf_counter()
        if show:
            console.print(
                f"copied in {loaded - started:.0f} s: "
                + ", ".join(f"{n:,} {name}" for name, n in counts.items())
            )
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            await move_sequences(conn)
            # Statistics before the metrics: the rebuild's statements need sane plans.
            await conn.execute(text("ANALYZE"))
        await build_metrics(url, customers)
        metrics_done = time.perf_counter()
        async with autocommit.connect() as conn:
            await verify_foreign_keys(conn)
        if show:
            console.print(
                f"customer_metrics (rebuild_customer_metrics, score_rfm) in "
                f"{metrics_done - loaded:.0f} s; foreign keys verified in "
                f"{time.perf_counter() - metrics_done:.0f} s"
            )
    finally:
        await engine.dispose()
    return counts


async def generate(url: str, customers: int, orders: int) -> float:
    """Recreate, migrate and fill the database, VACUUM ANALYZE it and leave the marker;
    return the seconds it took."""
    started = time.perf_counter()
    await recreate_database(url)
    await asyncio.to_thread(upgrade, url)
    await fill(url, customers, orders)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            vacuum_started = time.perf_counter()
            # Visibility map and hint bits set, statistics fresh: a database in use, not a
            # freshly loaded one (autovacuum is off on the bench machine).
            await conn.execute(text("VACUUM ANALYZE"))
            console.print(f"VACUUM ANALYZE in {time.perf_counter() - vacuum_started:.0f} s")
            seconds = time.perf_counter() - started
            await conn.execute(
                text(
                    f"CREATE TABLE {MARKER} (customers integer, orders integer, seed integer, "
                    "version integer, generated_at timestamptz, seconds double precision)"
                )
            )
            await conn.execute(
                text(f"INSERT INTO {MARKER} VALUES (:c, :o, :s, :v, now(), :t)"),
                {"c": customers, "o": orders, "s": SEED, "v": VERSION, "t": seconds},
            )
    finally:
        await engine.dispose()
    console.print(f"generated in {seconds:.0f} s")
    return seconds


async def ensure_data(url: str, customers: int, orders: int, regenerate: bool = False) -> Marker:
    """Generate unless the database already holds this size; return the marker."""
    if not url.startswith("postgresql"):
        raise SystemExit("the growth benchmark runs on PostgreSQL only (COPY, ~5 GB of data)")
    marker = await read_marker(url)
    wanted = (customers, orders, SEED, VERSION)
    if (
        regenerate
        or marker is None
        or ((marker.customers, marker.orders, marker.seed, marker.version) != wanted)
    ):
        await generate(url, customers, orders)
        marker = await read_marker(url)
        assert marker is not None
    else:
        console.print(
            f"data already generated ({marker.customers:,} customers, {marker.orders:,} orders, "
            f"on {marker.generated_at:%Y-%m-%d %H:%M} in {marker.seconds:.0f} s): reused"
        )
    return marker


async def database_size(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text("SELECT pg_database_size(current_database())")))
    finally:
        await engine.dispose()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("BENCH_GROWTH_URL"),
        help="PostgreSQL database to fill (its name must contain 'bench'); "
        "default $BENCH_GROWTH_URL",
    )
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS)
    parser.add_argument(
        "--regenerate", action="store_true", help="generate even if the data is there"
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.url:
        parser.error("give --url or set BENCH_GROWTH_URL")
    if args.customers < 100 or args.orders < args.customers:
        parser.error("--customers must be at least 100 and --orders at least --customers")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.growth_data",
        description="Fill a PostgreSQL database with the growth benchmark's data.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    asyncio.run(ensure_data(args.url, args.customers, args.orders, args.regenerate))
    size = asyncio.run(database_size(args.url))
    console.print(f"database size: {size / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
