"""The coupons API: templates, claim, redeem (核销), lookup, and who sees what."""

from __future__ import annotations

from typing import Any

import pytest

from api.auth.principal import Principal, Role
from api.coupons import models
from api.db import utcnow
from api.graphql.ids import encode_id
from tests.conftest import GraphQLClient
from tests.coupons import conftest
from tests.coupons.conftest import DAY, as_client, new_customers, store_staff

# The API stamps claims and redemptions with the real clock: these templates are valid now.
NOW = utcnow()


async def new_template(db, **overrides):
    overrides.setdefault("valid_from", NOW - DAY)
    overrides.setdefault("valid_until", NOW + 30 * DAY)
    return await conftest.new_template(db, **overrides)


async def claim(db, template_id, customer_id, **kwargs):
    return await conftest.claim(db, template_id, customer_id, now=NOW, **kwargs)


async def redeem(db, principal, code, **kwargs):
    return await conftest.redeem(db, principal, code, now=NOW, **kwargs)


TEMPLATE_CREATE = """
mutation($input: CouponTemplateCreateInput!) {
  couponTemplateCreate(input: $input) {
    couponTemplate {
      id name kind status percentOff totalStock issued perPersonLimit stacking cancelPolicy
      threshold { amount currency } discount { amount currency } maxDiscount { amount currency }
      claimChannel useChannel validDays stores { id } partners { id }
    }
    errors { field message code }
  }
}"""

TEMPLATE_UPDATE = """
mutation($input: CouponTemplateUpdateInput!) {
  couponTemplateUpdate(input: $input) {
    couponTemplate { id status totalStock }
    errors { field message code }
  }
}"""

TEMPLATES = """
query($filter: CouponTemplateFilter) {
  couponTemplates(filter: $filter, first: 20) { totalCount nodes { id name } }
}"""

STATS = """
query($id: ID!) {
  node(id: $id) {
    ... on CouponTemplate {
      stats {
        issued claimed granted redeemed voided expired remaining
        claimsByChannel { channel count }
        redemptionsByStore { store { id } count }
      }
    }
  }
}"""

CLAIM = """
mutation($input: CouponClaimInput!) {
  couponClaim(input: $input) {
    coupon { id code status origin claimChannel validFrom validUntil template { name } }
    created
    errors { field message code }
  }
}"""

REDEEM = """
mutation($input: CouponRedeemInput!) {
  couponRedeem(input: $input) {
    coupon { id code status redeemedAt redeemedStore { id } }
    errors { field message code }
  }
}"""

LOOKUP = """
query($code: String!, $storeId: ID) {
  coupon(code: $code, storeId: $storeId) {
    code status validUntil redeemable problem holderName holderPhone template { name }
  }
}"""

MY_COUPONS = """
query($id: ID!) {
  customer(id: $id) { coupons(first: 10) { totalCount nodes { id code template { name } } } }
}"""


def gid(type_name: str, pk: int) -> str:
    return encode_id(type_name, pk)


async def as_principal(app, issue_token, role: Role, **who: Any):
    return GraphQLClient(as_client(app, issue_token(role, **who))())


@pytest.fixture
def member_of(app, issue_token):
    async def build(customer_id: int) -> GraphQLClient:
        return await as_principal(
            app, issue_token, Role.MEMBER, customer_id=customer_id, subject=f"c:{customer_id}"
        )

    return build


async def test_hq_creates_a_template_and_reads_it_back_as_money(gql, world):
    result = await gql(
        TEMPLATE_CREATE,
        {
            "input": {
                "name": "满200减30",
                "kind": "AMOUNT_OFF_THRESHOLD",
                "thresholdAmount": "200.00",
                "discountAmount": "30.00",
                "claimChannel": "ONLINE",
                "useChannel": "OFFLINE",
                "totalStock": 500,
                "perPersonLimit": 2,
                "validDays": 14,
                "storeIds": [gid("Store", world.store_a1)],
                "partnerIds": [gid("Partner", world.partner_b)],
            }
        },
    )
    payload = result["couponTemplateCreate"]
    assert payload["errors"] == []
    template = payload["couponTemplate"]
    assert template["threshold"] == {"amount": "200.00", "currency": "CNY"}
    assert template["discount"] == {"amount": "30.00", "currency": "CNY"}
    assert template["maxDiscount"] is None
    assert (template["claimChannel"], template["useChannel"]) == ("ONLINE", "OFFLINE")
    assert (template["status"], template["issued"], template["validDays"]) == ("ACTIVE", 0, 14)
    assert template["stores"] == [{"id": gid("Store", world.store_a1)}]
    assert template["partners"] == [{"id": gid("Partner", world.partner_b)}]


async def test_bad_template_input_is_a_user_error_on_its_field(gql, world):
    result = await gql(
        TEMPLATE_CREATE,
        {
            "input": {
                "name": "折上折",
                "kind": "PERCENT_OFF",
                "percentOff": 120,
                "claimChannel": "BOTH",
                "useChannel": "BOTH",
                "totalStock": 0,
                "validDays": 7,
                "storeIds": ["bm90LWFuLWlk"],
            }
        },
    )
    errors = result["couponTemplateCreate"]["errors"]
    assert {(tuple(e["field"]), e["code"]) for e in errors} == {
        (("input", "storeIds", "0"), "INVALID"),
    }
    result = await gql(
        TEMPLATE_CREATE,
        {
            "input": {
                "name": "折上折",
                "kind": "PERCENT_OFF",
                "percentOff": 120,
                "claimChannel": "BOTH",
                "useChannel": "BOTH",
                "totalStock": 0,
                "validDays": 7,
            }
        },
    )
    errors = result["couponTemplateCreate"]["errors"]
    assert {(tuple(e["field"]), e["code"]) for e in errors} == {
        (("input", "percentOff"), "INVALID"),
        (("input", "totalStock"), "INVALID"),
    }


async def test_templates_are_paused_and_their_stock_raised(gql, db):
    template = await new_template(db, total_stock=5)
    update = {"id": gid("CouponTemplate", template.id), "status": "PAUSED", "totalStock": 8}
    payload = (await gql(TEMPLATE_UPDATE, {"input": update}))["couponTemplateUpdate"]
    assert payload["couponTemplate"]["status"] == "PAUSED"
    assert payload["couponTemplate"]["totalStock"] == 8
    lower = {"id": gid("CouponTemplate", template.id), "totalStock": 3}
    payload = (await gql(TEMPLATE_UPDATE, {"input": lower}))["couponTemplateUpdate"]
    assert [e["code"] for e in payload["errors"]] == ["INVALID"]


async def test_partners_see_only_templates_usable_at_their_stores(app, issue_token, gql, db, world):
    anywhere = await new_template(db, name="全场通用")
    await new_template(db, name="A专享", partner_ids=[world.partner_a])
    await new_template(db, name="A2门店", store_ids=[world.store_a2])
    only_b = await new_template(db, name="B专享", store_ids=[world.store_b1])

    async def names(client: GraphQLClient) -> set[str]:
        data = await client(TEMPLATES)
        return {n["name"] for n in data["couponTemplates"]["nodes"]}

    assert await names(gql) == {"全场通用", "A专享", "A2门店", "B专享"}
    admin_a = await as_principal(app, issue_token, Role.PARTNER_ADMIN, partner_id=world.partner_a)
    assert await names(admin_a) == {"全场通用", "A专享", "A2门店"}
    staff_a1 = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.store_a1
    )
    assert await names(staff_a1) == {"全场通用", "A专享"}
    # Another partner's exclusive template by id: exactly like a missing one.
    node = await admin_a(
        "query($id: ID!) { node(id: $id) { id } }", {"id": gid("CouponTemplate", only_b.id)}
    )
    assert node == {"node": None}
    # Filters.
    data = await gql(TEMPLATES, {"filter": {"search": "专享"}})
    assert data["couponTemplates"]["totalCount"] == 2
    data = await gql(TEMPLATES, {"filter": {"claimable": True, "kinds": ["FIXED_OFF"]}})
    assert data["couponTemplates"]["totalCount"] == 4
    # Stats are HQ's.
    body = await admin_a.raw(STATS, {"id": gid("CouponTemplate", anywhere.id)})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_member_claims_for_themself_and_sees_only_their_coupons(db, world, member_of, gql):
    template = await new_template(db, name="会员礼券", per_person_limit=2)
    ann = await member_of(world.ann)
    variables = {
        "input": {
            "templateId": gid("CouponTemplate", template.id),
            "channel": "ONLINE",
            "claimKey": "k-1",
        }
    }
    first = (await ann(CLAIM, variables))["couponClaim"]
    assert first["errors"] == [] and first["created"] is True
    coupon = first["coupon"]
    assert (coupon["status"], coupon["origin"], coupon["claimChannel"]) == (
        "CLAIMED",
        "CLAIM",
        "ONLINE",
    )
    retried = (await ann(CLAIM, variables))["couponClaim"]
    assert retried["created"] is False and retried["coupon"]["id"] == coupon["id"]

    # Naming Bob: Bob is a missing customer to Ann.
    variables["input"] |= {"customerId": gid("Customer", world.bob), "claimKey": "k-2"}
    refused = (await ann(CLAIM, variables))["couponClaim"]
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("NOT_FOUND", ["input", "customerId"])
    ]
    bobs = await claim(db, template.id, world.bob)

    mine = (await ann(MY_COUPONS, {"id": gid("Customer", world.ann)}))["customer"]["coupons"]
    assert mine["totalCount"] == 1
    assert mine["nodes"] == [
        {"id": coupon["id"], "code": coupon["code"], "template": {"name": "会员礼券"}}
    ]
    assert await ann(MY_COUPONS, {"id": gid("Customer", world.bob)}) == {"customer": None}
    node = await ann("query($id: ID!) { node(id: $id) { id } }", {"id": gid("Coupon", bobs.id)})
    assert node == {"node": None}
    # HQ sees Bob's whole code; Bob's recruiting partner only its tail.
    hq = await gql(MY_COUPONS, {"id": gid("Customer", world.bob)})
    assert hq["customer"]["coupons"]["nodes"][0]["code"] == bobs.code


async def test_partners_see_their_recruits_coupons_with_the_code_masked(
    db, world, app, issue_token
):
    template = await new_template(db)
    anns = await claim(db, template.id, world.ann)
    admin_a = await as_principal(app, issue_token, Role.PARTNER_ADMIN, partner_id=world.partner_a)
    data = await admin_a(MY_COUPONS, {"id": gid("Customer", world.ann)})
    (node,) = data["customer"]["coupons"]["nodes"]
    assert node["code"] == "*" * 12 + anns.code[-4:]
    admin_b = await as_principal(app, issue_token, Role.PARTNER_ADMIN, partner_id=world.partner_b)
    assert await admin_b(MY_COUPONS, {"id": gid("Customer", world.ann)}) == {"customer": None}
    found = await admin_b(
        "query($id: ID!) { node(id: $id) { id } }", {"id": gid("Coupon", anns.id)}
    )
    assert found == {"node": None}


async def test_hq_grants_to_any_customer_and_nobody_else_grants(db, world, gql, app, issue_token):
    template = await new_template(db)
    variables = {
        "input": {
            "templateId": gid("CouponTemplate", template.id),
            "customerId": gid("Customer", world.bob),
            "channel": "OFFLINE",
            "storeId": gid("Store", world.store_b1),
        }
    }
    granted = (await gql(CLAIM, variables))["couponClaim"]
    assert granted["errors"] == [] and granted["coupon"]["origin"] == "GRANT"
    staff = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_b, store_id=world.store_b1
    )
    body = await staff.raw(CLAIM, variables)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_store_staff_redeem_and_failures_come_back_as_codes(db, world, app, issue_token):
    template = await new_template(db, store_ids=[world.store_a1])
    held = await claim(db, template.id, world.ann)
    staff_a1 = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.store_a1
    )
    staff_a2 = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.store_a2
    )
    admin_a = await as_principal(app, issue_token, Role.PARTNER_ADMIN, partner_id=world.partner_a)
    # Store a2 can never use an a1-only coupon: to a2 it is no coupon. A's admin, who could
    # use it at a1, is told a2 is the wrong store.
    wrong = (await staff_a2(REDEEM, {"input": {"code": held.code}}))["couponRedeem"]
    assert [(e["code"], e["field"]) for e in wrong["errors"]] == [("NOT_FOUND", ["input", "code"])]
    at_a2 = {"code": held.code, "storeId": gid("Store", world.store_a2)}
    wrong = (await admin_a(REDEEM, {"input": at_a2}))["couponRedeem"]
    assert [(e["code"], e["field"]) for e in wrong["errors"]] == [
        ("WRONG_STORE", ["input", "code"])
    ]
    # The counter cannot call its use online.
    online = {"code": held.code, "channel": "ONLINE"}
    wrong = (await staff_a1(REDEEM, {"input": online}))["couponRedeem"]
    assert [(e["code"], e["field"]) for e in wrong["errors"]] == [
        ("FORBIDDEN", ["input", "channel"])
    ]
    elsewhere = {"code": held.code, "storeId": gid("Store", world.store_a1)}
    wrong = (await staff_a2(REDEEM, {"input": elsewhere}))["couponRedeem"]
    assert [(e["code"], e["field"]) for e in wrong["errors"]] == [
        ("NOT_FOUND", ["input", "storeId"])
    ]
    done = await staff_a1(REDEEM, {"input": {"code": held.code, "orderRef": "POS-1"}})
    coupon = done["couponRedeem"]["coupon"]
    assert coupon["status"] == "REDEEMED"
    assert coupon["redeemedStore"] == {"id": gid("Store", world.store_a1)}
    assert coupon["code"].endswith(held.code[-4:]) and coupon["code"].startswith("****")
    again = (await staff_a1(REDEEM, {"input": {"code": held.code}}))["couponRedeem"]
    assert [e["code"] for e in again["errors"]] == ["ALREADY_REDEEMED"]


async def test_a_member_cannot_redeem(db, world, member_of):
    template = await new_template(db)
    held = await claim(db, template.id, world.ann)
    ann = await member_of(world.ann)
    body = await ann.raw(REDEEM, {"input": {"code": held.code}})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] is None


async def test_the_redeeming_store_looks_a_code_up_with_the_holder_masked(
    db, world, app, issue_token
):
    template = await new_template(db, partner_ids=[world.partner_a])
    held = await claim(db, template.id, world.ann)
    staff_a2 = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.store_a2
    )
    found = (await staff_a2(LOOKUP, {"code": held.code.lower()}))["coupon"]
    assert found["redeemable"] is True and found["problem"] is None
    assert (found["holderName"], found["holderPhone"]) == ("王**", "138****1234")
    assert found["template"] == {"name": template.name}
    await redeem(db, staff_of(world), held.code)
    found = (await staff_a2(LOOKUP, {"code": held.code}))["coupon"]
    assert (found["redeemable"], found["problem"], found["status"]) == (
        False,
        "ALREADY_REDEEMED",
        "REDEEMED",
    )
    # Partner B can never use it: to B it does not exist. Nor does an unknown code.
    staff_b1 = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_b, store_id=world.store_b1
    )
    assert await staff_b1(LOOKUP, {"code": held.code}) == {"coupon": None}
    assert await staff_a2(LOOKUP, {"code": "ABCDEFGHJKMNPQRS"}) == {"coupon": None}
    # A's staff naming B's store: out of reach, null too.
    assert await staff_a2(LOOKUP, {"code": held.code, "storeId": gid("Store", world.store_b1)}) == {
        "coupon": None
    }


async def test_another_partners_exclusive_coupon_looks_like_an_unknown_code(
    db, world, app, issue_token
):
    """The review's scenario: partner A states whichever channel and learns B's template, the
    holder and when it was used. Now nothing: null, and NOT_FOUND as for a made-up code."""
    only_b = await new_template(
        db, partner_ids=[world.partner_b], use_channel=models.CouponChannel.ONLINE
    )
    held = await claim(db, only_b.id, world.bob)
    pos_a = await as_principal(
        app, issue_token, Role.INTEGRATION, partner_id=world.partner_a, scopes={"coupons:redeem"}
    )
    staff_a1 = await as_principal(
        app, issue_token, Role.STORE_STAFF, partner_id=world.partner_a, store_id=world.store_a1
    )
    lookup = """
    query($code: String!, $storeId: ID, $channel: CouponChannel) {
      coupon(code: $code, storeId: $storeId, channel: $channel) {
        code problem holderName holderPhone template { name }
      }
    }"""
    at_a1 = gid("Store", world.store_a1)

    async def answers(code: str) -> list[Any]:
        seen: list[Any] = []
        for channel in ("ONLINE", "OFFLINE", None):
            variables = {"code": code, "storeId": at_a1, "channel": channel}
            seen.append(await pos_a(lookup, variables))
            seen.append(
                (await pos_a(REDEEM, {"input": variables | {"orderRef": "X"}}))["couponRedeem"]
            )
        seen.append(await staff_a1(lookup, {"code": code}))
        seen.append((await staff_a1(REDEEM, {"input": {"code": code}}))["couponRedeem"])
        return seen

    unknown = await answers("ABCDEFGHJKMNPQRS")
    assert unknown[0] == {"coupon": None}
    assert unknown[1]["errors"] == [
        {"field": ["input", "code"], "message": "No such coupon.", "code": "NOT_FOUND"}
    ]
    assert await answers(held.code) == unknown
    # Once B has used it, still nothing, and nothing about when.
    shop_b = Principal(
        "client:b",
        Role.INTEGRATION,
        partner_id=world.partner_b,
        scopes=frozenset(["coupons:redeem"]),
    )
    await redeem(
        db, shop_b, held.code, store_id=world.store_b1, channel=models.CouponChannel.ONLINE
    )
    assert await answers(held.code) == unknown


async def test_a_member_claims_only_online(db, world, member_of):
    offline = await new_template(db, claim_channel=models.CouponChannel.OFFLINE)
    ann = await member_of(world.ann)
    from_home = {
        "templateId": gid("CouponTemplate", offline.id),
        "channel": "OFFLINE",
        "storeId": gid("Store", world.store_a1),
    }
    refused = (await ann(CLAIM, {"input": from_home}))["couponClaim"]
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("FORBIDDEN", ["input", "channel"])
    ]
    # Without a channel the claim is online, which this campaign is not.
    unstated = {"templateId": gid("CouponTemplate", offline.id)}
    refused = (await ann(CLAIM, {"input": unstated}))["couponClaim"]
    assert [e["code"] for e in refused["errors"]] == ["WRONG_CHANNEL"]
    assert refused["coupon"] is None


def staff_of(world):
    return store_staff(world.partner_a, world.store_a1)


async def test_hq_sees_stats_through_the_api(db, world, gql):
    template = await new_template(db, per_person_limit=3)
    await claim(db, template.id, world.ann)
    held = await claim(db, template.id, world.ann)
    await redeem(db, staff_of(world), held.code)
    data = await gql(STATS, {"id": gid("CouponTemplate", template.id)})
    stats = data["node"]["stats"]
    assert (stats["issued"], stats["claimed"], stats["redeemed"], stats["remaining"]) == (
        2,
        2,
        1,
        98,
    )
    assert stats["claimsByChannel"] == [{"channel": "online", "count": 2}]
    assert stats["redemptionsByStore"] == [
        {"store": {"id": gid("Store", world.store_a1)}, "count": 1}
    ]


COUPON_PAGE = """
query($n: Int!) {
  customers(first: $n) {
    nodes {
      id
      coupons(first: 5) {
        totalCount
        nodes { code status validUntil template { name kind discount { amount } }
                redeemedStore { name } }
      }
    }
  }
}"""


async def test_customers_with_their_coupons_cost_the_same_for_5_and_50(db, gql, count_queries):
    store_owner = await new_customers(db, 50)
    templates = [await new_template(db, name=f"券{i}", per_person_limit=3) for i in range(3)]
    for customer_id in store_owner:
        for t in templates:
            await claim(db, t.id, customer_id)
    with count_queries() as few:
        small = await gql(COUPON_PAGE, {"n": 5})
    with count_queries() as many:
        large = await gql(COUPON_PAGE, {"n": 50})
    assert len(small["customers"]["nodes"]) == 5 and len(large["customers"]["nodes"]) == 50
    assert all(c["coupons"]["totalCount"] == 3 for c in large["customers"]["nodes"])
    assert few.count == many.count == 4, many.statements


async def test_a_partner_integration_redeems_only_at_its_partners_stores(
    db, world, app, issue_token
):
    template = await new_template(db)
    anns = await claim(db, template.id, world.ann)
    bobs = await claim(db, template.id, world.bob)
    pos_b = await as_principal(
        app, issue_token, Role.INTEGRATION, partner_id=world.partner_b, scopes={"coupons:redeem"}
    )
    at_a = {"code": anns.code, "storeId": gid("Store", world.store_a1), "orderRef": "ERP-1"}
    refused = (await pos_b(REDEEM, {"input": at_a}))["couponRedeem"]
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("NOT_FOUND", ["input", "storeId"])
    ]
    # Any holder's coupon at its own store: coupons are HQ's campaigns, usable where allowed.
    for code in (bobs.code, anns.code):
        at_b = {"code": code, "storeId": gid("Store", world.store_b1), "orderRef": "ERP-2"}
        done = (await pos_b(REDEEM, {"input": at_b}))["couponRedeem"]
        assert done["errors"] == [] and done["coupon"]["status"] == "REDEEMED"
    # Without coupons:redeem nothing is redeemed, nor are templates listed.
    reader = await as_principal(
        app, issue_token, Role.INTEGRATION, partner_id=world.partner_b, scopes={"orders:read"}
    )
    body = await reader.raw(REDEEM, {"input": at_a})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await reader.raw(TEMPLATES)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
