"""Who may see and do what, checked through the API as each kind of caller."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from graphql import get_named_type

from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.graphql.ids import encode_id
from api.graphql.schema import NODE_LOADERS, build_schema
from api.settings import Settings
from tests.factories import create_partner, create_store

SCHEMA = build_schema(Settings())._schema


class Caller:
    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def raw(self, query: str, variables: dict | None = None) -> dict:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t", headers=self.headers
        ) as http:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        return response.json()


async def _ok(gql, document: str, variables: dict) -> dict:
    (payload,) = (await gql(document, variables)).values()
    assert payload["errors"] == [], payload["errors"]
    return payload


@pytest.fixture
async def two_partners(gql, db):
    return await build_two_partners(gql, db)


async def build_two_partners(gql, db) -> dict:
    """Partner A (a second-level agent under B) with a store; partner B with a store; a member
    recruited at each store, each with points and a coupon; a coupon template usable only at
    B's stores; brand-wide configuration (a member level, an earning rule, a template)."""
    b = await create_partner(
        gql,
        "PB",
        type="DISTRIBUTOR",
        contact={"name": "Zhao", "phone": "13912345678", "email": "zhao@b.example.com"},
    )
    a = await create_partner(
        gql,
        "PA",
        parentId=b["id"],
        contact={"name": "Qian", "phone": "13800001111", "email": "qian@a.example.com"},
    )
    store_a = await create_store(gql, "SA", a["id"], offersPickup=True)
    store_b = await create_store(gql, "SB", b["id"])
    world = {"A": a, "B": b, "SA": store_a, "SB": store_b}
    for key, phone, store in (("CA", "13700000001", store_a), ("CB", "13700000002", store_b)):
        joined = await _ok(
            gql,
            "mutation($s: ID!, $p: String!) { memberJoin(input: {storeId: $s, identities: "
            "[{kind: PHONE, value: $p}]}) { customer { id } errors { code } } }",
            {"s": store["id"], "p": phone},
        )
        world[key] = joined["customer"]
    world["LEVEL"] = (
        await _ok(
            gql,
            'mutation { memberLevelCreate(input: {code: "silver", name: "银卡", rank: 1, '
            'metric: SPEND, threshold: "1000"}) { memberLevel { id } errors { code } } }',
            {},
        )
    )["memberLevel"]
    world["RULE"] = (
        await _ok(
            gql,
            'mutation { pointsEarningRuleCreate(input: {name: "all stores"}) '
            "{ rule { id } errors { code } } }",
            {},
        )
    )["rule"]
    template = (
        'mutation($partners: [ID!]!) { couponTemplateCreate(input: {name: "t", '
        'kind: FIXED_OFF, discountAmount: "10", claimChannel: BOTH, useChannel: BOTH, '
        "totalStock: 100, perPersonLimit: 5, validDays: 30, partnerIds: $partners}) "
        "{ couponTemplate { id } errors { code } } }"
    )
    world["TEMPLATE"] = (await _ok(gql, template, {"partners": []}))["couponTemplate"]
    world["TEMPLATE_B"] = (await _ok(gql, template, {"partners": [b["id"]]}))["couponTemplate"]
    grant = (
        "mutation($t: ID!, $c: ID!) { couponClaim(input: {templateId: $t, customerId: $c, "
        "channel: ONLINE}) { coupon { id code } errors { code } } }"
    )
    world["COUPON_A"] = (
        await _ok(gql, grant, {"t": world["TEMPLATE"]["id"], "c": world["CA"]["id"]})
    )["coupon"]
    world["COUPON_B"] = (
        await _ok(gql, grant, {"t": world["TEMPLATE_B"]["id"], "c": world["CB"]["id"]})
    )["coupon"]
    adjust = (
        "mutation($c: ID!, $k: String!) { pointsAdjust(input: {customerId: $c, amount: 100, "
        'reason: "welcome", idempotencyKey: $k}) { entry { id } errors { code } } }'
    )
    await _ok(gql, adjust, {"c": world["CA"]["id"], "k": "welcome-a"})
    world["ENTRY_B"] = (await _ok(gql, adjust, {"c": world["CB"]["id"], "k": "welcome-b"}))["entry"]
    await _commerce(gql, world)
    await _growth(gql, db, world)
    await _purchasing(gql, world)
    return world


async def _commerce(gql, world: dict) -> None:
    """A brand-wide product; stock below its safety level at SA and SB (so an alert is open at
    each); a sale to each member at their store; a pickup order of CA's waiting at SA."""
    product = (
        await _ok(
            gql,
            'mutation { productCreate(input: {code: "P1", name: "茶具", skus: [{code: "S1", '
            'name: "杯", suggestedRetailPrice: "100", costPrice: "40"}]}) '
            "{ product { id skus { id } } errors { code } } }",
            {},
        )
    )["product"]
    world["PRODUCT"], world["SKU"] = product, product["skus"][0]
    for store in ("SA", "SB"):
        adjusted = await _ok(
            gql,
            "mutation($s: ID!, $k: ID!, $key: String!) { stockAdjust(input: {storeId: $s, "
            'skuId: $k, mode: SET, quantity: 10, safetyLevel: 20, reason: "count", '
            "idempotencyKey: $key}) { stockLevel { id } movement { id } errors { code } } }",
            {"s": world[store]["id"], "k": world["SKU"]["id"], "key": store},
        )
        world[f"STOCK_{store}"], world[f"MOVEMENT_{store}"] = (
            adjusted["stockLevel"],
            adjusted["movement"],
        )
        alerts = await gql(
            "query($s: ID!) { stockAlerts(filter: {storeIds: [$s]}) { nodes { id } } }",
            {"s": world[store]["id"]},
        )
        (world[f"ALERT_{store}"],) = alerts["stockAlerts"]["nodes"]
    place = (
        "mutation($s: ID!, $c: ID!, $channel: SalesChannel!, $f: Fulfillment!) { "
        "orderCreate(input: {channel: $channel, fulfillment: $f, storeId: $s, customerId: $c, "
        'lines: [{sku: "S1", quantity: 1}]}) { order { id } errors { code field message } } }'
    )
    for key, store, customer in (("ORDER_A", "SA", "CA"), ("ORDER_B", "SB", "CB")):
        world[key] = (
            await _ok(
                gql,
                place,
                {
                    "s": world[store]["id"],
                    "c": world[customer]["id"],
                    "channel": "STORE_POS",
                    "f": "IN_STORE",
                },
            )
        )["order"]
    world["PICKUP_A"] = (
        await _ok(
            gql,
            place,
            {
                "s": world["SA"]["id"],
                "c": world["CA"]["id"],
                "channel": "MINI_PROGRAM",
                "f": "PICKUP",
            },
        )
    )["order"]


async def _growth(gql, db, world: dict) -> None:
    """A QR-scan touchpoint and a channel spend of each partner; a segment of each partner's
    admin and an HQ grant job on B's; a running referral campaign (HQ's programme)."""
    from api.auth.principal import Principal
    from api.segments import service as segments
    from api.segments.models import GrantAction

    now = datetime.now(UTC)
    for side, store in (("A", "SA"), ("B", "SB")):
        world[f"TOUCH_{side}"] = (
            await _ok(
                gql,
                "mutation($c: ID!, $s: ID!, $p: ID!, $now: DateTime!, $e: String!) { "
                "touchpointRecord(input: {eventId: $e, step: QR_SCAN, customer: {id: $c}, "
                'storeId: $s, partnerId: $p, campaignId: "QR-1", occurredAt: $now}) '
                "{ touchpoint { id } errors { code } } }",
                {
                    "c": world[f"C{side}"]["id"],
                    "s": world[store]["id"],
                    "p": world[side]["id"],
                    "now": now.isoformat(),
                    "e": f"scan-{side}",
                },
            )
        )["touchpoint"]
        world[f"SPEND_{side}"] = (
            await _ok(
                gql,
                "mutation($p: ID!, $k: String!) { channelSpendRecord(input: {channel: "
                'MINI_PROGRAM, partnerId: $p, periodStart: "2026-01-01", periodEnd: '
                '"2026-01-31", amount: "100.00", idempotencyKey: $k}) '
                "{ spend { id } errors { code } } }",
                {"p": world[side]["id"], "k": f"spend-{side}"},
            )
        )["spend"]
        admin = Principal(
            subject=f"user:{side}",
            role=Role.PARTNER_ADMIN,
            partner_id=pk(world[side]["id"]),
            scopes=frozenset(ROLE_SCOPES[Role.PARTNER_ADMIN]),
        )
        async with db.transaction() as session:
            segment = await segments.create_segment(
                session, admin, name="复购", query="orders_count >= 1", description=None, now=now
            )
        world[f"SEGMENT_{side}"] = {"id": encode_id("Segment", segment.id), "pk": segment.id}
    marketer = Principal(
        subject="user:marketer",
        role=Role.MARKETER,
        scopes=frozenset(ROLE_SCOPES[Role.MARKETER]),
    )
    async with db.transaction() as session:
        job, _ = await segments.start_grant(
            session,
            marketer,
            segments.GrantRequest(
                segment_id=world["SEGMENT_B"]["pk"],
                campaign_key="welcome",
                action=GrantAction.POINTS,
                reason="welcome",
                points=10,
            ),
            now=now,
        )
    world["JOB_B"] = {"id": encode_id("SegmentGrantJob", job.id)}
    world["CAMPAIGN"] = (
        await _ok(
            gql,
            'mutation($now: DateTime!) { referralCampaignCreate(input: {name: "邀请有礼", '
            "startsAt: $now, registrationReward: {points: 10}}) "
            "{ referralCampaign { id } errors { code } } }",
            {"now": (now - timedelta(days=1)).isoformat()},
        )
    )["referralCampaign"]


async def _purchasing(gql, world: dict) -> None:
    """A contract price list and a credit line for each partner; a draft purchase order of
    each (HQ places them for the partners)."""
    for side, store in (("A", "SA"), ("B", "SB")):
        prices = await _ok(
            gql,
            "mutation($p: ID!, $sku: ID!, $from: DateTime!) { priceListCreate(input: {name: "
            '"contract", partnerId: $p, validFrom: $from, items: [{skuId: $sku, unitPrice: '
            '"10"}]}) { priceList { id } errors { code } } }',
            {
                "p": world[side]["id"],
                "sku": world["SKU"]["id"],
                "from": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            },
        )
        world[f"PRICE_LIST_{side}"] = prices["priceList"]
        await _ok(
            gql,
            'mutation($p: ID!) { partnerCreditSet(input: {partnerId: $p, limit: "1000"}) '
            "{ credit { limit { amount } } errors { code } } }",
            {"p": world[side]["id"]},
        )
        world[f"PO_{side}"] = (
            await _ok(
                gql,
                "mutation($p: ID!, $s: ID!, $sku: ID!) { purchaseOrderCreate(input: {partnerId: "
                '$p, storeId: $s, lines: [{skuId: $sku, quantity: 1}], idempotencyKey: "w"}) '
                "{ purchaseOrder { id } errors { code } } }",
                {"p": world[side]["id"], "s": world[store]["id"], "sku": world["SKU"]["id"]},
            )
        )["purchaseOrder"]


def pk(global_id: str) -> int:
    return int(base64.urlsafe_b64decode(global_id + "==").decode().split(":")[1])


@pytest.fixture
def partner_a(app, issue_token, two_partners) -> Caller:
    return Caller(
        app,
        issue_token(Role.PARTNER_ADMIN, partner_id=pk(two_partners["A"]["id"]), subject="user:42"),
    )


def missing_id_like(global_id: str) -> str:
    type_name = base64.urlsafe_b64decode(global_id + "==").decode().split(":")[0]
    return base64.urlsafe_b64encode(f"{type_name}:987654".encode()).decode().rstrip("=")


# --- viewer -----------------------------------------------------------------------------------


async def test_viewer_tells_who_is_calling(partner_a, two_partners):
    data = (
        await partner_a.raw(
            '{ viewer { kind subject role partner { code } store { code } can(scope: "pii:read") '
            "scopes } }"
        )
    )["data"]
    assert data["viewer"] == {
        "kind": "STAFF",
        "subject": "user:42",
        "role": "PARTNER_ADMIN",
        "partner": {"code": "PA"},
        "store": None,
        "can": False,
        "scopes": sorted(ROLE_SCOPES[Role.PARTNER_ADMIN]),
    }


async def test_viewer_for_anonymous(app):
    data = (await Caller(app, None).raw("{ viewer { kind role scopes partner { id } } }"))["data"]
    assert data["viewer"] == {"kind": "ANONYMOUS", "role": None, "scopes": [], "partner": None}


# --- isolation matrix -------------------------------------------------------------------------

# Which fixture object of partner B stands for each node type. A node type added later
# without an entry here fails test_every_node_type_is_in_the_matrix.
OTHER_PARTNERS_OBJECT = {
    "Partner": "B",
    "Store": "SB",
    "Customer": "CB",
    "Coupon": "COUPON_B",
    "CouponTemplate": "TEMPLATE_B",
    "PointsEntry": "ENTRY_B",
    "StockLevel": "STOCK_SB",
    "StockMovement": "MOVEMENT_SB",
    "StockAlert": "ALERT_SB",
    "Order": "ORDER_B",
    "Touchpoint": "TOUCH_B",
    "ChannelSpend": "SPEND_B",
    "Segment": "SEGMENT_B",
    "SegmentGrantJob": "JOB_B",
    "PurchaseOrder": "PO_B",
}
# Node types no partner principal sees at all, whoever owns them.
HQ_ONLY = {"AuditEvent", "ChannelViolation", "ReferralCampaign", "PriceList"}
# Brand-wide configuration every channel works with: no partner owns it.
BRAND_WIDE = {
    "MemberLevel": "LEVEL",
    "PointsEarningRule": "RULE",
    "Product": "PRODUCT",
    "Sku": "SKU",
}
TYPED_ROOT_FIELD = {
    "Partner": "partner",
    "Store": "store",
    "Customer": "customer",
    "Order": "order",
    "Segment": "segment",
    "SegmentGrantJob": "segmentGrantJob",
    "PurchaseOrder": "purchaseOrder",
}
FOREIGN = (
    "B",
    "SB",
    "CB",
    "COUPON_B",
    "TEMPLATE_B",
    "ENTRY_B",
    "STOCK_SB",
    "MOVEMENT_SB",
    "ALERT_SB",
    "ORDER_B",
    "TOUCH_B",
    "SPEND_B",
    "SEGMENT_B",
    "JOB_B",
    "PO_B",
)
OWN = (
    "A",
    "SA",
    "CA",
    "COUPON_A",
    "TEMPLATE",
    "STOCK_SA",
    "MOVEMENT_SA",
    "ALERT_SA",
    "ORDER_A",
    "PICKUP_A",
    "TOUCH_A",
    "SPEND_A",
    "SEGMENT_A",
    "PO_A",
)


def test_every_node_type_is_in_the_matrix():
    node_types = {t.name for t in SCHEMA.get_possible_types(SCHEMA.get_type("Node"))}
    assert node_types == set(NODE_LOADERS)
    uncovered = node_types - OTHER_PARTNERS_OBJECT.keys() - HQ_ONLY - BRAND_WIDE.keys()
    assert not uncovered, f"add these node types to the isolation matrix: {uncovered}"


@pytest.mark.parametrize("type_name", sorted(BRAND_WIDE))
async def test_brand_wide_configuration_is_readable_by_every_channel(
    partner_a, two_partners, type_name
):
    config = two_partners[BRAND_WIDE[type_name]]["id"]
    body = await partner_a.raw("query($id: ID!) { node(id: $id) { id } }", {"id": config})
    assert body["data"]["node"] == {"id": config}


@pytest.mark.parametrize("type_name", sorted(OTHER_PARTNERS_OBJECT))
async def test_another_partners_object_answers_like_a_missing_one(
    partner_a, two_partners, type_name
):
    other = two_partners[OTHER_PARTNERS_OBJECT[type_name]]["id"]
    missing = missing_id_like(other)
    field = TYPED_ROOT_FIELD.get(type_name)
    typed = f"{field}(id: $id) {{ id }}" if field else ""
    query = f"query($id: ID!) {{ node(id: $id) {{ id }} nodes(ids: [$id]) {{ id }} {typed} }}"
    seen = await partner_a.raw(query, {"id": other})
    absent = await partner_a.raw(query, {"id": missing})
    assert seen == absent
    expected = {"node": None, "nodes": [None]} | ({field: None} if field else {})
    assert seen["data"] == expected


async def test_the_same_objects_are_visible_to_their_own_partner(partner_a, two_partners):
    own = [two_partners[key]["id"] for key in OWN]
    body = await partner_a.raw("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": own})
    assert body["data"]["nodes"] == [{"id": i} for i in own]


def root_connections() -> list[str]:
    return sorted(
        name
        for name, f in SCHEMA.query_type.fields.items()
        if get_named_type(f.type).name.endswith("Connection")
    )


# How a partner principal may reach another partner's objects through each root connection:
# unfiltered, and with every filter that names an owner. Missing entries fail the test.
CONNECTION_PROBES = {
    "partners": [
        "",
        '(filter: {parentId: "$B"})',
        '(filter: {search: "PB"})',
        "(filter: {types: [DISTRIBUTOR]})",
    ],
    "stores": ["", '(filter: {partnerIds: ["$B"]})', '(filter: {regionCode: "310000"})'],
    "auditEvents": None,  # needs audit:read: refused outright (see the permission tests)
    "customers": [
        "",
        '(filter: {identity: {kind: PHONE, value: "13700000002"}})',
        '(filter: {recruitedPartnerIds: ["$B"]})',
        '(filter: {recruitedStoreIds: ["$SB"]})',
        "(filter: {isMember: true})",
        '(filter: {search: "1370"})',
    ],
    "couponTemplates": ["", "(filter: {kinds: [FIXED_OFF]})", "(filter: {claimable: true})"],
    "pointsEarningRules": [""],
    "products": ["", '(filter: {search: "P1"})', "(filter: {sellableOn: WEB})"],
    "stockLevels": [
        "",
        '(filter: {storeIds: ["$SB"]})',
        "(filter: {belowSafety: true})",
        '(filter: {skuIds: ["$SKU"]})',
    ],
    "stockMovements": ["", '(filter: {storeIds: ["$SB"]})', "(filter: {kinds: [ADJUST]})"],
    "stockAlerts": [
        "",
        '(filter: {storeIds: ["$SB"], includeResolved: true})',
        "(filter: {includeResolved: true})",
    ],
    "orders": [
        "",
        '(filter: {storeId: "$SB"})',
        '(filter: {customerId: "$CB"})',
        "(filter: {status: [COMPLETED]})",
        "(filter: {channel: [STORE_POS]})",
    ],
    "channelViolations": None,  # HQ's alone: refused outright for everyone else
    "touchpoints": [
        "",
        '(filter: {storeId: "$SB"})',
        '(filter: {customerId: "$CB"})',
        "(filter: {step: QR_SCAN})",
        '(filter: {campaignId: "QR-1"})',
    ],
    "channelSpends": ["", '(filter: {partnerId: "$B"})', "(filter: {channels: [MINI_PROGRAM]})"],
    "segments": [""],
    "referralCampaigns": None,  # HQ's programme and members' invites: refused for partners
    "purchaseOrders": ["", '(filter: {partnerId: "$B"})', "(filter: {statuses: [DRAFT]})"],
    "priceLists": None,  # HQ's: a partner reads its own prices through purchasePrice
}


def test_every_root_connection_is_probed():
    assert set(root_connections()) == set(CONNECTION_PROBES)


@pytest.mark.parametrize(
    ("field", "args"),
    [(field, args) for field, probes in CONNECTION_PROBES.items() for args in probes or ()],
)
async def test_connections_and_filters_never_show_another_partner(
    partner_a, two_partners, field, args
):
    for name in ("SB", "CB", "SKU", "B"):  # "$SB" before "$B"
        args = args.replace(f"${name}", two_partners[name]["id"])
    body = await partner_a.raw(f"{{ {field}{args} {{ totalCount nodes {{ id }} }} }}")
    ids = {n["id"] for n in body["data"][field]["nodes"]}
    foreign = {two_partners[key]["id"] for key in FOREIGN}
    assert not ids & foreign
    assert body["data"][field]["totalCount"] == len(ids)


async def test_nested_fields_stop_at_the_partner_boundary(partner_a, two_partners):
    data = (
        await partner_a.raw(
            "query($a: ID!) { partner(id: $a) { parent { id } stores { nodes { code } } } "
            "stores { nodes { partner { code parent { code } } } } }",
            {"a": two_partners["A"]["id"]},
        )
    )["data"]
    assert data["partner"] == {"parent": None, "stores": {"nodes": [{"code": "SA"}]}}
    assert data["stores"]["nodes"] == [{"partner": {"code": "PA", "parent": None}}]


async def test_a_store_principal_sees_its_store_only(app, issue_token, two_partners, gql):
    other_store = await create_store(gql, "SA2", two_partners["A"]["id"])
    clerk = Caller(
        app,
        issue_token(
            Role.STORE_STAFF,
            partner_id=pk(two_partners["A"]["id"]),
            store_id=pk(two_partners["SA"]["id"]),
        ),
    )
    data = (
        await clerk.raw(
            "query($s: ID!) { stores { nodes { code } } store(id: $s) { id } }",
            {"s": other_store["id"]},
        )
    )["data"]
    assert data == {"stores": {"nodes": [{"code": "SA"}]}, "store": None}


# --- PII ----------------------------------------------------------------------------------------


async def test_contacts_are_masked_without_pii_read(partner_a, two_partners):
    data = (await partner_a.raw("{ partners { nodes { contact { name phone email } } } }"))["data"]
    assert data["partners"]["nodes"] == [
        {"contact": {"name": "Qian", "phone": "138****1111", "email": "q***@a.example.com"}}
    ]


async def test_unmasked_reads_are_audited(gql, two_partners):
    data = await gql("{ partners { nodes { code contact { phone } } } }")
    assert {n["contact"]["phone"] for n in data["partners"]["nodes"]} == {
        "13912345678",
        "13800001111",
    }
    events = await gql(
        '{ auditEvents(filter: {action: "pii.read"}) { nodes { actor objectType '
        "objectId detail } } }"
    )
    audited = events["auditEvents"]["nodes"]
    assert {e["objectId"] for e in audited} == {two_partners["A"]["id"], two_partners["B"]["id"]}
    assert all(e["actor"] == "user:1" and e["objectType"] == "Partner" for e in audited)


# --- audit of mutations ---------------------------------------------------------------------------


async def test_every_mutation_is_audited_with_its_outcome(gql, app, issue_token):
    created = await create_partner(gql, "AUD1")
    await gql(
        'mutation { partnerCreate(input: {code: "AUD1", name: "dup", type: AGENT}) '
        "{ partner { id } } }"
    )  # rejected: duplicate code (errors not even selected)
    marketer = Caller(app, issue_token(Role.MARKETER, subject="user:7"))
    await marketer.raw(
        'mutation { partnerCreate(input: {code: "AUD2", name: "x", type: AGENT}) '
        "{ partner { id } } }"
    )
    events = (
        await gql("{ auditEvents { nodes { actor role action objectType objectId detail ip } } }")
    )["auditEvents"]["nodes"]
    assert [(e["actor"], e["action"], e["objectId"], e["detail"]["outcome"]) for e in events] == [
        ("user:7", "partnerCreate", None, "refused"),
        ("user:1", "partnerCreate", None, "rejected"),
        ("user:1", "partnerCreate", created["id"], "ok"),
    ]
    assert events[0]["role"] == "marketer" and events[0]["ip"] == "127.0.0.1"


async def test_only_audit_readers_see_the_log(partner_a):
    body = await partner_a.raw("{ auditEvents { nodes { id } } }")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# --- authorization matrix -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    document: str
    # Any one of these lets a caller past the permission check; the first is the one an
    # integration client is given in the "with the scope" case.
    scopes: tuple[str, ...]
    # Past the check, only HQ staff succeed; a partner-level caller gets FORBIDDEN in the payload.
    hq_only: bool = False
    # A member holding the scope succeeds (acting for themself).
    members: bool = False
    # Past the check, a member still gets FORBIDDEN in the payload: store work, not theirs.
    staff_only: bool = False
    # Only a member acting for themself succeeds; anyone else past the check is FORBIDDEN.
    members_only: bool = False
    # What a caller who may act gets instead of success when the fixture world makes the
    # action itself impossible (e.g. an unknown invite code): proof it got past the checks.
    business_refusals: tuple[str, ...] = ()
    # Scopes needed on top of one of ``scopes`` (checked before any data is read).
    also_needs: tuple[str, ...] = ()


# One case per mutation. A mutation added later without a case fails
# test_every_mutation_is_in_the_matrix. Documents may use $id (partner A), $sa (store SA),
# $ca / $cb (the members recruited at SA / SB), $t (a brand-wide coupon template), $code (a
# coupon of CA's), $level (a member level), $product / $sku (a brand-wide product and its SKU),
# $sold (a completed sale to CA at SA), $pickup (CA's pickup order waiting at SA) and
# $pickupCode (its code).
MUTATION_CASES = {
    "partnerCreate": Case(
        'mutation { partnerCreate(input: {code: "NEW1", name: "n", type: AGENT}) '
        "{ partner { code } errors { code } } }",
        ("partners:write",),
        hq_only=True,
    ),
    "partnerUpdate": Case(
        'mutation($id: ID!) { partnerUpdate(input: {id: $id, name: "renamed"}) '
        "{ partner { name } errors { code } } }",
        ("partners:write",),
        hq_only=True,
    ),
    "storeCreate": Case(
        'mutation { storeCreate(input: {code: "NEWS", name: "n", regionCode: '
        '"310115", address: "a"}) { store { code } errors { code } } }',
        ("partners:write",),
        hq_only=True,
    ),
    "customerUpsert": Case(
        'mutation { customerUpsert(input: {identities: [{kind: PHONE, value: "13600000001"}]}) '
        "{ customer { id } errors { code } } }",
        ("customers:write",),
        hq_only=True,
    ),
    "customerUpdate": Case(
        'mutation($ca: ID!) { customerUpdate(input: {id: $ca, tagsAdd: ["vip"]}) '
        "{ customer { id } errors { code } } }",
        ("customers:write",),
        hq_only=True,
    ),
    "customersMerge": Case(
        "mutation($ca: ID!, $cb: ID!) { customersMerge(input: {targetId: $ca, "
        "sourceIds: [$cb], dryRun: true}) { dryRun errors { code } } }",
        ("customers:write",),
        hq_only=True,
    ),
    "memberJoin": Case(
        "mutation($sa: ID!) { memberJoin(input: {storeId: $sa, identities: "
        '[{kind: PHONE, value: "13600000002"}]}) { customer { id } errors { code } } }',
        ("members:write",),
    ),
    "memberLevelCreate": Case(
        'mutation { memberLevelCreate(input: {code: "gold", name: "金卡", rank: 2, '
        'metric: SPEND, threshold: "5000"}) { memberLevel { id } errors { code } } }',
        ("loyalty:write",),
        hq_only=True,
    ),
    "memberLevelUpdate": Case(
        'mutation($level: ID!) { memberLevelUpdate(input: {id: $level, name: "银卡会员"}) '
        "{ memberLevel { id } errors { code } } }",
        ("loyalty:write",),
        hq_only=True,
    ),
    "memberLevelSet": Case(
        "mutation($ca: ID!, $level: ID!) { memberLevelSet(input: {customerId: $ca, "
        "levelId: $level}) { customer { id } errors { code } } }",
        ("members:write",),
    ),
    "pointsAdjust": Case(
        'mutation($ca: ID!) { pointsAdjust(input: {customerId: $ca, amount: 5, reason: "m", '
        'idempotencyKey: "matrix-1"}) { entry { id } errors { code } } }',
        ("points:write",),
    ),
    "pointsEarningRuleCreate": Case(
        'mutation { pointsEarningRuleCreate(input: {name: "double", multiplier: "2"}) '
        "{ rule { id } errors { code } } }",
        ("loyalty:write",),
        hq_only=True,
    ),
    "couponTemplateCreate": Case(
        'mutation { couponTemplateCreate(input: {name: "n", kind: FIXED_OFF, discountAmount: '
        '"5", claimChannel: BOTH, useChannel: BOTH, totalStock: 10, validDays: 7}) '
        "{ couponTemplate { id } errors { code } } }",
        ("coupons:write",),
        hq_only=True,
    ),
    "couponTemplateUpdate": Case(
        "mutation($t: ID!) { couponTemplateUpdate(input: {id: $t, totalStock: 200}) "
        "{ couponTemplate { id } errors { code } } }",
        ("coupons:write",),
        hq_only=True,
    ),
    "couponClaim": Case(
        "mutation($t: ID!, $ca: ID!) { couponClaim(input: {templateId: $t, customerId: $ca, "
        "channel: ONLINE}) { coupon { id } errors { code } } }",
        ("coupons:write", "coupons:claim"),
        hq_only=True,  # granting to a customer is HQ's ...
        members=True,  # ... claiming is the member's own
    ),
    "couponRedeem": Case(
        "mutation($code: String!, $sa: ID!) { couponRedeem(input: {code: $code, storeId: $sa}) "
        "{ coupon { id } errors { code } } }",
        ("coupons:redeem",),
    ),
    "productCreate": Case(
        'mutation { productCreate(input: {code: "P2", name: "n", skus: [{code: "S2", '
        'name: "n", suggestedRetailPrice: "10", costPrice: "4"}]}) '
        "{ product { id } errors { code } } }",
        ("catalog:write",),
        hq_only=True,
    ),
    "productUpdate": Case(
        'mutation($product: ID!) { productUpdate(input: {id: $product, name: "renamed"}) '
        "{ product { id } errors { code } } }",
        ("catalog:write",),
        hq_only=True,
    ),
    "skuCreate": Case(
        'mutation($product: ID!) { skuCreate(input: {productId: $product, sku: {code: "S3", '
        'name: "n", suggestedRetailPrice: "10", costPrice: "4"}}) { sku { id } errors { code } } }',
        ("catalog:write",),
        hq_only=True,
    ),
    "skuUpdate": Case(
        'mutation($sku: ID!) { skuUpdate(input: {id: $sku, suggestedRetailPrice: "120"}) '
        "{ sku { id } errors { code } } }",
        ("catalog:write",),
        hq_only=True,
    ),
    "stockAdjust": Case(
        "mutation($sa: ID!, $sku: ID!) { stockAdjust(input: {storeId: $sa, skuId: $sku, "
        'mode: DELTA, quantity: 1, reason: "m", idempotencyKey: "matrix-1"}) '
        "{ stockLevel { id } errors { code } } }",
        ("stock:write",),
        staff_only=True,
    ),
    "orderCreate": Case(
        "mutation($sa: ID!) { orderCreate(input: {channel: STORE_POS, fulfillment: IN_STORE, "
        'storeId: $sa, lines: [{sku: "S1", quantity: 1}]}) { order { id } errors { code } } }',
        ("orders:write",),
        staff_only=True,  # members order online, for themselves (tests/orders)
    ),
    "orderMarkReady": Case(
        "mutation($pickup: ID!) { orderMarkReady(input: {orderId: $pickup}) "
        "{ order { id } errors { code } } }",
        ("orders:write",),
        staff_only=True,
    ),
    "orderPickup": Case(
        "mutation($pickupCode: String!, $sa: ID!) { orderPickup(input: {code: $pickupCode, "
        "storeId: $sa}) { order { id } errors { code } } }",
        ("orders:write",),
        staff_only=True,
    ),
    "orderCancel": Case(
        'mutation($pickup: ID!) { orderCancel(input: {orderId: $pickup, reason: "matrix"}) '
        "{ order { id } errors { code } } }",
        ("orders:write",),  # a member cancels their own order before it is ready
    ),
    "orderRefund": Case(
        'mutation($sold: ID!) { orderRefund(input: {orderId: $sold, reason: "matrix", '
        'idempotencyKey: "matrix-1"}) { order { id } errors { code } } }',
        ("orders:write",),
        staff_only=True,
    ),
    "touchpointRecord": Case(
        "mutation($ca: ID!, $sa: ID!, $now: DateTime!) { touchpointRecord(input: {eventId: "
        '"matrix-1", step: WECOM_ADDED, customer: {id: $ca}, storeId: $sa, occurredAt: $now}) '
        "{ touchpoint { id } errors { code } } }",
        ("growth:write",),
        staff_only=True,
    ),
    "touchpointsRecord": Case(
        "mutation($ca: ID!, $sa: ID!, $now: DateTime!) { touchpointsRecord(input: {touchpoints: "
        '[{eventId: "matrix-2", step: COMMUNITY_JOINED, customer: {id: $ca}, storeId: $sa, '
        "occurredAt: $now}]}) { results { status } errors { code } } }",
        ("growth:write",),
        staff_only=True,
    ),
    "channelSpendRecord": Case(
        'mutation { channelSpendRecord(input: {channel: WEB, periodStart: "2026-02-01", '
        'periodEnd: "2026-02-28", amount: "50.00", idempotencyKey: "matrix-1"}) '
        "{ spend { id } errors { code } } }",
        ("spend:write",),
        hq_only=True,
    ),
    "referralCampaignCreate": Case(
        'mutation($now: DateTime!) { referralCampaignCreate(input: {name: "r", startsAt: $now, '
        "firstOrderReward: {points: 50}}) { referralCampaign { id } errors { code } } }",
        ("referrals:write",),
        hq_only=True,
    ),
    "referralInviteCreate": Case(
        "mutation($campaign: ID!) { referralInviteCreate(input: {campaignId: $campaign}) "
        "{ invite { code } errors { code } } }",
        ("referrals:join",),
        members_only=True,
    ),
    "referralAccept": Case(
        'mutation { referralAccept(input: {code: "NOSUCHCODE", deviceId: "d-1"}) '
        "{ referral { registeredAt } errors { code } } }",
        ("referrals:join",),
        members_only=True,
        business_refusals=("UNKNOWN_CODE",),
    ),
    "segmentCreate": Case(
        'mutation { segmentCreate(input: {name: "n", query: "orders_count >= 2"}) '
        "{ segment { id } errors { code } } }",
        ("segments:write",),
    ),
    "segmentUpdate": Case(
        'mutation($segment: ID!) { segmentUpdate(input: {id: $segment, name: "renamed"}) '
        "{ segment { id } errors { code } } }",
        ("segments:write",),
    ),
    "segmentDelete": Case(
        "mutation($segment: ID!) { segmentDelete(input: {id: $segment}) "
        "{ deletedSegmentId errors { code } } }",
        ("segments:write",),
    ),
    "segmentGrantStart": Case(
        "mutation($segment: ID!) { segmentGrantStart(input: {segmentId: $segment, "
        'campaignKey: "matrix", action: POINTS, points: 5, reason: "m"}) '
        "{ job { id } errors { code } } }",
        ("segments:write",),
        also_needs=("points:write",),
    ),
    "priceListCreate": Case(
        'mutation($sku: ID!, $now: DateTime!) { priceListCreate(input: {name: "n", tier: A, '
        'validFrom: $now, items: [{skuId: $sku, unitPrice: "9.90"}]}) '
        "{ priceList { id } errors { code } } }",
        ("purchasing:manage",),
        hq_only=True,
    ),
    "partnerCreditSet": Case(
        'mutation($id: ID!) { partnerCreditSet(input: {partnerId: $id, limit: "2000"}) '
        "{ credit { limit { amount } } errors { code } } }",
        ("purchasing:manage",),
        hq_only=True,
    ),
    "purchaseOrderCreate": Case(
        "mutation($id: ID!, $sa: ID!, $sku: ID!) { purchaseOrderCreate(input: {partnerId: $id, "
        'storeId: $sa, lines: [{skuId: $sku, quantity: 2}], idempotencyKey: "matrix-1"}) '
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:write",),
    ),
    "purchaseOrderSubmit": Case(
        "mutation($po: ID!) { purchaseOrderSubmit(input: {id: $po}) "
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:write",),
    ),
    "purchaseOrderCancel": Case(
        "mutation($po: ID!) { purchaseOrderCancel(input: {id: $po}) "
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:write",),
    ),
    "purchaseOrderReceive": Case(
        "mutation($po: ID!) { purchaseOrderReceive(input: {id: $po}) "
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:write",),
        business_refusals=("BAD_STATE",),  # a draft: nothing shipped to receive
    ),
    "purchaseOrderApprove": Case(
        "mutation($po: ID!) { purchaseOrderApprove(input: {id: $po}) "
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:manage",),
        hq_only=True,
        business_refusals=("BAD_STATE",),  # a draft is not submitted yet
    ),
    "purchaseOrderReject": Case(
        'mutation($po: ID!) { purchaseOrderReject(input: {id: $po, reason: "matrix"}) '
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:manage",),
        hq_only=True,
        business_refusals=("BAD_STATE",),
    ),
    "purchaseOrderShip": Case(
        "mutation($po: ID!, $sa: ID!) { purchaseOrderShip(input: {id: $po, warehouseId: $sa, "
        'trackingNumber: "T"}) { purchaseOrder { id } errors { code } } }',
        ("purchasing:manage",),
        hq_only=True,
        business_refusals=("NOT_FOUND",),  # a partner's store is no HQ warehouse
    ),
    "purchaseAllocate": Case(
        "mutation($sa: ID!, $sku: ID!) { purchaseAllocate(input: {warehouseId: $sa, "
        "skuId: $sku}) { allocations { quantity } errors { code } } }",
        ("purchasing:manage",),
        hq_only=True,
        business_refusals=("NOT_FOUND",),  # a partner's store is no HQ warehouse
    ),
    "purchaseOrderPaymentRecord": Case(
        "mutation($po: ID!) { purchaseOrderPaymentRecord(input: {id: $po}) "
        "{ purchaseOrder { id } errors { code } } }",
        ("purchasing:manage",),
        hq_only=True,
        business_refusals=("BAD_STATE",),
    ),
}

CALLERS = {
    "anonymous": None,
    "member": (Role.MEMBER, None),
    **{role.name: (role, None) for role in Role if role not in (Role.INTEGRATION, Role.MEMBER)},
    "integration without the scope": (Role.INTEGRATION, set()),
    "integration with the scope": (Role.INTEGRATION, "the scope"),
}
HQ_ROLES = (Role.HQ_ADMIN, Role.CHANNEL_MANAGER, Role.MARKETER)


async def _pickup_code(db, order_pk: int) -> str:
    """Only the member sees a pickup code over the API; the matrix's store callers are
    handed it, as the member would show it at the counter."""
    from api.orders.models import Order

    async with db.read() as session:
        return (await session.get(Order, order_pk)).pickup_code


PARTNER_LEVEL = (Role.PARTNER_ADMIN, Role.STORE_STAFF, Role.INTEGRATION)


class _UnreachedWorld(dict):
    """Ids of the right shape for every key of ``two_partners``, pointing at nothing."""

    def __missing__(self, key: str) -> dict:
        return {"id": encode_id("Partner", 999_999), "code": "NOCODE"}


_UNREACHED_WORLD = _UnreachedWorld()


def test_every_mutation_is_in_the_matrix():
    assert set(SCHEMA.mutation_type.fields) == set(MUTATION_CASES)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("mutation", sorted(MUTATION_CASES))
async def test_authorization_matrix(app, db, gql, issue_token, mutation, caller):
    case = MUTATION_CASES[mutation]
    spec = CALLERS[caller]
    held: set[str] = set()
    if spec is not None:
        role, scopes = spec
        held = set(ROLE_SCOPES[role]) if scopes is None else set(scopes)
        if scopes == "the scope":
            held = {case.scopes[0]}
    # A caller without the scope is turned away before any data is read: it needs no world,
    # only well-formed ids (building the world is most of this matrix's time).
    passes_the_check = bool(held & set(case.scopes)) and held >= set(case.also_needs)
    two_partners = await build_two_partners(gql, db) if passes_the_check else _UNREACHED_WORLD
    token = None
    if spec is not None:
        token = issue_token(
            role,
            partner_id=pk(two_partners["A"]["id"]) if role in PARTNER_LEVEL else None,
            store_id=pk(two_partners["SA"]["id"]) if role is Role.STORE_STAFF else None,
            customer_id=pk(two_partners["CA"]["id"]) if role is Role.MEMBER else None,
            scopes=held,
        )
    variables = {
        "id": two_partners["A"]["id"],
        "sa": two_partners["SA"]["id"],
        "ca": two_partners["CA"]["id"],
        "cb": two_partners["CB"]["id"],
        "t": two_partners["TEMPLATE"]["id"],
        "code": two_partners["COUPON_A"]["code"],
        "level": two_partners["LEVEL"]["id"],
        "product": two_partners["PRODUCT"]["id"],
        "sku": two_partners["SKU"]["id"],
        "sold": two_partners["ORDER_A"]["id"],
        "pickup": two_partners["PICKUP_A"]["id"],
        "segment": two_partners["SEGMENT_A"]["id"],
        "campaign": two_partners["CAMPAIGN"]["id"],
        "po": two_partners["PO_A"]["id"],
        "now": datetime.now(UTC).isoformat(),
        "pickupCode": await _pickup_code(db, pk(two_partners["PICKUP_A"]["id"]))
        if passes_the_check
        else "000000",
    }
    body = await Caller(app, token).raw(case.document, variables)
    if spec is None:
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        return
    if not passes_the_check:
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert body["data"] is None
        return
    assert "errors" not in body, body["errors"]
    (payload,) = body["data"].values()
    role = spec[0]
    member = role is Role.MEMBER
    if case.members_only:
        succeeds = member
    else:
        succeeds = (
            role in HQ_ROLES
            or (member and case.members)
            or (not case.hq_only and not (member and case.staff_only))
        )
    if succeeds and case.business_refusals:
        assert {e["code"] for e in payload["errors"]} <= set(case.business_refusals), payload
    elif succeeds:
        assert payload["errors"] == [], payload
    else:
        codes = [e["code"] for e in payload["errors"]]
        assert codes and set(codes) == {"FORBIDDEN"}, payload


async def test_a_partners_integration_client_cannot_hold_hq_scopes(db, two_partners):
    from api.auth import service
    from api.errors import DomainError

    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await service.create_client(
                session,
                name="ERP",
                grant_types={"client_credentials"},
                scopes={"orders:write", "partners:write", "audit:read"},
                partner_id=pk(two_partners["A"]["id"]),
            )
    assert refused.value.problems[0].message == (
        "A partner's client cannot hold audit:read partners:write."
    )


async def test_public_clients_cannot_use_the_password_grant(db):
    from api.auth import service
    from api.errors import DomainError

    async with db.transaction() as session:
        with pytest.raises(DomainError) as refused:
            await service.create_client(
                session, name="SPA", grant_types={"password"}, first_party=True, public=True
            )
    assert refused.value.problems[0].message == "Public clients cannot use passwords."
