"""Reading customers: filters, keyset pages, personal data, duplicate suggestions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from api.auth.principal import Role
from api.customers.models import Customer
from tests.customers.conftest import add_staff, create_level, gid, join, pk
from tests.factories import create_customer


async def names(gql, args: str) -> list[str]:
    data = await gql(f"{{ customers{args} {{ nodes {{ name }} }} }}")
    return [n["name"] for n in data["customers"]["nodes"]]


@pytest.fixture
async def crowd(gql, db, network):
    """Six customers: members of three stores (two guides), tags, levels, consents."""
    silver = await create_level(gql, "silver", 0, "0")
    await create_level(gql, "gold", 1, "1000")
    guide = await add_staff(
        db, "guide@a.example.com", Role.STORE_STAFF, pk(network["A"]["id"]), pk(network["SA"]["id"])
    )
    people = {}
    people["ann"] = await create_customer(
        gql,
        "13800000011",
        name="Ann Wang",
        tags=["vip", "tmall"],
        consents=[{"purpose": "MARKETING_MESSAGES", "granted": True, "source": "store"}],
    )
    people["bo"] = await create_customer(gql, "13800000012", name="Bo Li", tags=["vip"])
    people["cai"] = await create_customer(gql, "13800000013", name="Cai Wang", tags=["tmall"])
    people["dan"] = await create_customer(
        gql,
        "13800000014",
        name="Dan Zhao",
        consents=[{"purpose": "MARKETING_MESSAGES", "granted": False, "source": "store"}],
    )
    people["eve"] = await create_customer(gql, "13800000015", name="Eve 100%_off")
    people["fay"] = await create_customer(
        gql, identities=[{"kind": "EMAIL", "value": "fay@example.com"}], name="Fay"
    )
    await join(
        gql,
        customerId=people["ann"]["id"],
        storeId=network["SA"]["id"],
        guideId=gid("StaffUser", guide),
    )
    await join(gql, customerId=people["bo"]["id"], storeId=network["SA2"]["id"])
    await join(gql, customerId=people["cai"]["id"], storeId=network["SB"]["id"])
    await join(gql, customerId=people["dan"]["id"], storeId=network["SH"]["id"])
    gold = (await gql("{ memberLevels { id code } }"))["memberLevels"][1]["id"]
    await gql(
        "mutation($c: ID!, $l: ID) { memberLevelSet(input: {customerId: $c, levelId: $l}) "
        "{ errors { code } } }",
        {"c": people["bo"]["id"], "l": gold},
    )
    # Spread the creation times over four days (ids stay in creation order).
    base = datetime(2024, 3, 1, tzinfo=UTC)
    async with db.transaction() as session:
        for offset, key in enumerate(["ann", "bo", "cai", "dan", "eve", "fay"]):
            await session.execute(
                update(Customer)
                .where(Customer.id == pk(people[key]["id"]))
                .values(created_at=base + timedelta(days=offset // 2))
            )
    return {**people, "silver": silver, "gold": gold, "guide": guide, **network}


async def test_filters(gql, crowd):
    c = crowd
    assert await names(gql, '(filter: {identity: {kind: PHONE, value: "+86 138-0000-0013"}})') == [
        "Cai Wang"
    ]
    assert await names(gql, '(filter: {identity: {kind: EMAIL, value: "FAY@example.com"}})') == [
        "Fay"
    ]
    assert await names(gql, '(filter: {tags: ["vip", "tmall"]})') == ["Ann Wang"]
    assert await names(gql, '(filter: {anyTags: ["vip", "tmall"]})') == [
        "Ann Wang",
        "Bo Li",
        "Cai Wang",
    ]
    assert await names(gql, '(filter: {levelCodes: ["gold"]})') == ["Bo Li"]
    assert await names(gql, f'(filter: {{levelIds: ["{c["silver"]}"]}})') == [
        "Ann Wang",
        "Cai Wang",
        "Dan Zhao",
    ]
    assert await names(gql, f'(filter: {{recruitedStoreIds: ["{c["SA"]["id"]}"]}})') == ["Ann Wang"]
    assert await names(
        gql, f'(filter: {{recruitedGuideIds: ["{gid("StaffUser", c["guide"])}"]}})'
    ) == ["Ann Wang"]
    assert await names(gql, f'(filter: {{recruitedPartnerIds: ["{c["A"]["id"]}"]}})') == [
        "Ann Wang",
        "Bo Li",
    ]
    assert await names(gql, "(filter: {isMember: false})") == ["Eve 100%_off", "Fay"]
    assert await names(
        gql,
        '(filter: {createdAt: {from: "2024-03-02T00:00:00Z", to: "2024-03-03T00:00:00Z"}})',
    ) == ["Cai Wang", "Dan Zhao"]
    assert await names(gql, '(filter: {search: "wang"})') == ["Ann Wang", "Cai Wang"]
    # LIKE wildcards in a search are literal characters.
    assert await names(gql, '(filter: {search: "%_"})') == ["Eve 100%_off"]
    assert await names(
        gql, "(filter: {consent: {purpose: MARKETING_MESSAGES, granted: true}})"
    ) == ["Ann Wang"]
    assert await names(gql, '(filter: {isMember: true, anyTags: ["vip"], search: "li"})') == [
        "Bo Li"
    ]


async def test_an_invalid_identity_filter_is_a_bad_request(gql, crowd):
    body = await gql.raw(
        '{ customers(filter: {identity: {kind: PHONE, value: "123"}}) { nodes { id } } }'
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_keyset_pages_forwards_backwards_and_by_creation_time(gql, crowd):
    query = """query($first: Int, $after: String, $last: Int, $before: String) {
      customers(first: $first, after: $after, last: $last, before: $before) {
        totalCount nodes { name } pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
      } }"""
    page1 = (await gql(query, {"first": 4}))["customers"]
    assert [n["name"] for n in page1["nodes"]] == ["Ann Wang", "Bo Li", "Cai Wang", "Dan Zhao"]
    assert page1["totalCount"] == 6
    assert page1["pageInfo"]["hasNextPage"] is True
    page2 = (await gql(query, {"first": 4, "after": page1["pageInfo"]["endCursor"]}))["customers"]
    assert [n["name"] for n in page2["nodes"]] == ["Eve 100%_off", "Fay"]
    assert page2["pageInfo"] == {**page2["pageInfo"], "hasNextPage": False, "hasPreviousPage": True}
    back = (await gql(query, {"last": 2, "before": page2["pageInfo"]["startCursor"]}))["customers"]
    assert [n["name"] for n in back["nodes"]] == ["Cai Wang", "Dan Zhao"]

    newest = await gql(
        "{ customers(sortKey: CREATED_AT, reverse: true, first: 3) { nodes { name } } }"
    )
    assert [n["name"] for n in newest["customers"]["nodes"]] == ["Fay", "Eve 100%_off", "Dan Zhao"]


AUDITED = (
    '{ auditEvents(filter: {action: "pii.read"}) { nodes { actor objectType objectId detail } } }'
)


async def test_personal_data_is_masked_without_pii_read_and_audited_with_it(gql, as_principal):
    await create_customer(
        gql,
        "13900001234",
        identities=[
            {"kind": "EMAIL", "value": "wang.li@example.com"},
            {"kind": "WECHAT_UNIONID", "value": "oUnionX"},
        ],
        name="Masked",
        contactPhone="13911112222",
    )
    query = "{ customers { nodes { id contactPhone identities { kind value } } } }"
    marketer = as_principal(Role.MARKETER, subject="user:7")  # customers:read, no pii:read
    before = len((await gql(AUDITED))["auditEvents"]["nodes"])
    masked = (await marketer(query))["customers"]["nodes"][0]
    assert masked["contactPhone"] == "139****2222"
    assert {(i["kind"], i["value"]) for i in masked["identities"]} == {
        ("PHONE", "139****1234"),
        ("EMAIL", "w***@example.com"),
        ("WECHAT_UNIONID", "oUnionX"),
    }
    assert len((await gql(AUDITED))["auditEvents"]["nodes"]) == before  # masked: not audited

    plain = (await gql(query))["customers"]["nodes"][0]
    assert plain["contactPhone"] == "13911112222"
    assert ("PHONE", "13900001234") in {(i["kind"], i["value"]) for i in plain["identities"]}
    audited = (await gql(AUDITED))["auditEvents"]["nodes"][: -before or None]
    assert {(e["actor"], e["objectType"], e["objectId"]) for e in audited} == {
        ("user:1", "Customer", plain["id"])
    }
    assert sorted(f for e in audited for f in e["detail"]["fields"]) == [
        "contactPhone",
        "identities",
    ]


DUPLICATES = """query($id: ID!, $first: Int) {
  customerDuplicates(customerId: $id, first: $first) { customer { name } reasons score }
}"""


async def test_duplicate_suggestions_with_reasons_and_scores(gql, as_principal, network):
    anchor = await create_customer(
        gql,
        "13800000021",
        identities=[
            {"kind": "EMAIL", "value": "anchor@example.com"},
            {"kind": "WECHAT_OPENID", "value": "wxapp:oAnchor"},
        ],
        unionidHint="oUnionA",
        name="Wang Fang",
        birthday="1990-05-06",
    )
    await create_customer(
        gql, identities=[{"kind": "WECHAT_UNIONID", "value": "oUnionA"}], name="by unionid"
    )
    await create_customer(
        gql,
        identities=[{"kind": "MARKETPLACE_BUYER", "value": "jd:77"}],
        name="by contact phone",
        contactPhone="13800000021",
    )
    await create_customer(
        gql,
        identities=[{"kind": "WECHAT_OPENID", "value": "wxother:o2"}],
        unionidHint="oUnionA",
        name="by openid hint",
    )
    await create_customer(gql, "13800000022", contactEmail="Anchor@Example.com", name="by email")
    await create_customer(gql, "13800000023", name="wang fang", birthday="1990-05-06")
    both = await create_customer(
        gql, "13800000024", contactPhone="13800000021", name="Wang Fang", birthday="1990-05-06"
    )
    await create_customer(gql, "13800000025", name="Wang Fang", birthday="1991-01-01")  # no

    found = (await gql(DUPLICATES, {"id": anchor["id"]}))["customerDuplicates"]
    assert [(d["customer"]["name"], d["reasons"], d["score"]) for d in found] == [
        ("Wang Fang", ["SAME_PHONE", "SAME_NAME_AND_BIRTHDAY"], 0.96),
        ("by unionid", ["SAME_UNIONID"], 0.95),
        ("by openid hint", ["SAME_UNIONID"], 0.95),
        ("by contact phone", ["SAME_PHONE"], 0.9),
        ("by email", ["SAME_EMAIL"], 0.8),
        ("wang fang", ["SAME_NAME_AND_BIRTHDAY"], 0.6),
    ]
    top = (await gql(DUPLICATES, {"id": anchor["id"], "first": 2}))["customerDuplicates"]
    assert [d["customer"]["name"] for d in top] == ["Wang Fang", "by unionid"]
    # From the other side: the phone matches the anchor's phone identity.
    reverse = (await gql(DUPLICATES, {"id": both["id"]}))["customerDuplicates"]
    assert reverse[0]["customer"]["name"] == "Wang Fang" and "SAME_PHONE" in reverse[0]["reasons"]

    body = await gql.raw(DUPLICATES, {"id": anchor["id"], "first": 51})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_duplicates_stay_within_the_callers_scope(gql, as_principal, network):
    mine = await create_customer(gql, "13800000031", name="Mine")
    twin_of_mine = await create_customer(
        gql, "13800000032", contactPhone="13800000031", name="Twin"
    )
    theirs = await create_customer(gql, "13800000033", contactPhone="13800000031", name="Theirs")
    await join(gql, customerId=mine["id"], storeId=network["SA"]["id"])
    await join(gql, customerId=twin_of_mine["id"], storeId=network["SA2"]["id"])
    await join(gql, customerId=theirs["id"], storeId=network["SB"]["id"])
    partner_a = as_principal(Role.PARTNER_ADMIN, partner_id=pk(network["A"]["id"]))
    found = (await partner_a(DUPLICATES, {"id": mine["id"]}))["customerDuplicates"]
    assert [d["customer"]["name"] for d in found] == ["Twin"]
    # Another partner's customer answers like a missing one: no suggestions.
    assert (await partner_a(DUPLICATES, {"id": theirs["id"]}))["customerDuplicates"] == []
    assert (await partner_a(DUPLICATES, {"id": gid("Customer", 98765)}))["customerDuplicates"] == []
