"""A partner sees the customers it recruited, a store its own, a member only themself;
another partner's customer answers exactly like one that does not exist."""

from __future__ import annotations

import pytest

from api.auth.principal import Role
from tests.customers.conftest import MEMBER_JOIN, create_level, gid, join, pk
from tests.factories import create_customer

LOOKUP = """query($id: ID!) {
  node(id: $id) { id } nodes(ids: [$id]) { id } customer(id: $id) { id }
  customerDuplicates(customerId: $id) { score }
}"""


@pytest.fixture
async def world(gql, network):
    await create_level(gql, "silver", 0, "0")
    people = {
        "a1": await create_customer(gql, "13600000001", name="a1"),
        "a2": await create_customer(gql, "13600000002", name="a2", contactPhone="13600000003"),
        "b1": await create_customer(gql, "13600000003", name="b1"),
        "n": await create_customer(gql, "13600000004", name="not a member"),
    }
    await join(gql, customerId=people["a1"]["id"], storeId=network["SA"]["id"])
    await join(gql, customerId=people["a2"]["id"], storeId=network["SA2"]["id"])
    await join(gql, customerId=people["b1"]["id"], storeId=network["SB"]["id"])
    return {**people, **network}


@pytest.fixture
def partner_a(as_principal, world):
    return as_principal(Role.PARTNER_ADMIN, partner_id=pk(world["A"]["id"]), subject="user:42")


async def listed(client, args: str = "") -> list[str]:
    data = await client(f"{{ customers{args} {{ totalCount nodes {{ name }} }} }}")
    names = [n["name"] for n in data["customers"]["nodes"]]
    assert data["customers"]["totalCount"] == len(names)
    return names


async def test_a_partner_lists_only_the_customers_it_recruited(partner_a, world):
    b = world["B"]["id"]
    assert await listed(partner_a) == ["a1", "a2"]
    for probe in (
        '(filter: {identity: {kind: PHONE, value: "13600000003"}})',
        f'(filter: {{recruitedPartnerIds: ["{b}"]}})',
        f'(filter: {{recruitedStoreIds: ["{world["SB"]["id"]}"]}})',
        '(filter: {search: "b1"})',
        "(filter: {isMember: false})",
        '(filter: {levelCodes: ["silver"], isMember: true})',
    ):
        assert set(await listed(partner_a, probe)) <= {"a1", "a2"}, probe


@pytest.mark.parametrize("who", ["b1", "n"])
async def test_another_partners_customer_answers_like_a_missing_one(partner_a, world, who):
    seen = await partner_a.raw(LOOKUP, {"id": world[who]["id"]})
    absent = await partner_a.raw(LOOKUP, {"id": gid("Customer", 987654)})
    assert seen == absent
    assert seen["data"] == {
        "node": None,
        "nodes": [None],
        "customer": None,
        "customerDuplicates": [],
    }


async def test_mutations_on_another_partners_customer_say_not_found(partner_a, world):
    set_level = (
        "mutation($c: ID!) { memberLevelSet(input: {customerId: $c, levelId: null}) "
        "{ customer { id } errors { code field message } } }"
    )
    for target in (world["b1"]["id"], gid("Customer", 987654)):
        result = (await partner_a(set_level, {"c": target}))["memberLevelSet"]
        assert result == {
            "customer": None,
            "errors": [
                {
                    "code": "NOT_FOUND",
                    "field": ["input", "customerId"],
                    "message": "No such customer.",
                }
            ],
        }
    # Enrolling by id needs a customer the partner may see; the unrecruited one is not.
    for target in (world["n"]["id"], gid("Customer", 987654)):
        result = (
            await partner_a(
                MEMBER_JOIN, {"input": {"customerId": target, "storeId": world["SA"]["id"]}}
            )
        )["memberJoin"]
        assert [e["code"] for e in result["errors"]] == ["NOT_FOUND"]
    # Merging needs customers:write, which no partner holds.
    body = await partner_a.raw(
        "mutation($t: ID!, $s: ID!) { customersMerge(input: {targetId: $t, sourceIds: [$s]}) "
        "{ errors { code } } }",
        {"t": world["a1"]["id"], "s": world["b1"]["id"]},
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_redirect_never_leads_into_another_partners_customer(gql, as_principal, world):
    # HQ merges B's b1 into A's a2 (the same phone). A recruited first, so the survivor and
    # its membership are A's; B's old id now leads nowhere B may look.
    result = await gql(
        "mutation($t: ID!, $s: ID!) { customersMerge(input: {targetId: $t, sourceIds: [$s]}) "
        "{ errors { code } conflicts { field } } }",
        {"t": world["a2"]["id"], "s": world["b1"]["id"]},
    )
    assert result["customersMerge"]["errors"] == []
    assert {"field": "recruitedStore"} in result["customersMerge"]["conflicts"]
    partner_a = as_principal(Role.PARTNER_ADMIN, partner_id=pk(world["A"]["id"]))
    partner_b = as_principal(Role.PARTNER_ADMIN, partner_id=pk(world["B"]["id"]))
    old_id = world["b1"]["id"]
    gone = await partner_b.raw(LOOKUP, {"id": old_id})
    assert gone == await partner_b.raw(LOOKUP, {"id": gid("Customer", 987654)})
    assert await listed(partner_b) == []
    assert (await partner_a(LOOKUP, {"id": old_id}))["customer"] == {"id": world["a2"]["id"]}


async def test_a_store_principal_sees_its_store_only(as_principal, world):
    clerk = as_principal(
        Role.STORE_STAFF, partner_id=pk(world["A"]["id"]), store_id=pk(world["SA"]["id"])
    )
    assert await listed(clerk) == ["a1"]
    assert (await clerk(LOOKUP, {"id": world["a2"]["id"]}))["customer"] is None


async def test_a_member_sees_only_themself(as_principal, world):
    me = pk(world["a1"]["id"])
    member = as_principal(Role.MEMBER, customer_id=me, subject=f"customer:{me}")
    assert await listed(member) == ["a1"]
    assert await listed(member, '(filter: {search: "a"})') == ["a1"]
    assert (await member(LOOKUP, {"id": world["a2"]["id"]}))["customer"] is None
    own = await member(
        "query($id: ID!) { customer(id: $id) { identities { value } membership { level { code } } "
        "levelHistory { nodes { reason } } } }",
        {"id": world["a1"]["id"]},
    )
    assert own["customer"] == {
        "identities": [{"value": "136****0001"}],  # members hold no pii:read
        "membership": {"level": {"code": "silver"}},
        "levelHistory": {"nodes": [{"reason": "join"}]},
    }
    body = await member.raw(
        MEMBER_JOIN, {"input": {"customerId": world["a1"]["id"], "storeId": world["SA"]["id"]}}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_member_levels_are_programme_configuration_everyone_reads(as_principal, world):
    level = await as_principal(Role.MEMBER, customer_id=pk(world["a1"]["id"]))(
        "{ memberLevels { id code } }"
    )
    (silver,) = level["memberLevels"]
    partner = as_principal(Role.PARTNER_ADMIN, partner_id=pk(world["B"]["id"]))
    data = await partner(
        "query($id: ID!) { node(id: $id) { id ... on MemberLevel { code } } }", {"id": silver["id"]}
    )
    assert data["node"] == {"id": silver["id"], "code": "silver"}
