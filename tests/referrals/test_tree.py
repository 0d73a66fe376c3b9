"""The referral tree: who invited whom below a customer, depth-limited, in one recursive
statement; and who sees which tree and which of its nodes (a member: whom they invited,
no further; a partner: the customers it sees, the others left out with all below them).

The tree (everyone in one campaign, accepted top down)::

    ann (partner A's member)
    ├── dan (recruited by partner B)
    │   └── gus (partner A)
    │       └── hal
    │           └── ivy
    │               └── jon
    └── eve (partner A)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from tests.orders.conftest import (
    caller,
    gid,
    member,
    partner_admin,
    store_staff,
    token_of,
)
from tests.referrals.conftest import accept, invite, make_campaign, newcomer

TREE = """query($id: ID!, $depth: Int) { referralTree(customerId: $id, depth: $depth) {
  depth truncated root { id }
  nodes { depth parent displayName registeredAt firstOrderAt
    customer { id name } campaign { id } } } }"""


@dataclass(frozen=True, slots=True)
class Family:
    campaign: int
    dan: int
    eve: int
    gus: int
    hal: int
    ivy: int
    jon: int


@pytest_asyncio.fixture
async def family(db: Any, shop: Any) -> Family:
    campaign = await make_campaign(db)
    dan = await newcomer(db, name="丁大", recruited_partner_id=shop.partner_b)
    eve = await newcomer(db, name="伊娃", recruited_partner_id=shop.partner_a)
    gus = await newcomer(db, name="古斯", recruited_partner_id=shop.partner_a)
    hal, ivy, jon = [await newcomer(db, name=n) for n in ("哈尔", "艾薇", "乔恩")]
    for inviter, invitee in ((shop.ann, dan), (shop.ann, eve), (dan, gus), (gus, hal)):
        await accept(db, invitee, await invite(db, inviter, campaign))
    for inviter, invitee in ((hal, ivy), (ivy, jon)):
        await accept(db, invitee, await invite(db, inviter, campaign))
    return Family(campaign, dan, eve, gus, hal, ivy, jon)


def shape(tree: dict[str, Any]) -> list[tuple[int, int | None, str | None]]:
    """(depth, parent index, the customer's id or None) per node."""
    return [
        (n["depth"], n["parent"], n["customer"]["id"] if n["customer"] else None)
        for n in tree["nodes"]
    ]


async def test_hq_sees_the_whole_tree_down_to_the_depth_asked(gql, shop, family):
    c = family
    tree = (await gql(TREE, {"id": gid("Customer", shop.ann)}))["referralTree"]
    assert (tree["depth"], tree["truncated"], tree["root"]) == (
        3,
        False,
        {"id": gid("Customer", shop.ann)},
    )
    assert shape(tree) == [
        (1, None, gid("Customer", c.dan)),
        (1, None, gid("Customer", c.eve)),
        (2, 0, gid("Customer", c.gus)),
        (3, 2, gid("Customer", c.hal)),
    ]
    assert [n["displayName"] for n in tree["nodes"]] == ["丁*", "伊*", "古*", "哈*"]
    assert tree["nodes"][0]["campaign"] == {"id": gid("ReferralCampaign", c.campaign)}
    deepest = (await gql(TREE, {"id": gid("Customer", shop.ann), "depth": 5}))["referralTree"]
    assert [n["depth"] for n in deepest["nodes"]] == [1, 1, 2, 3, 4, 5]  # jon is the 6th level
    assert deepest["nodes"][5]["parent"] == 4
    one = (await gql(TREE, {"id": gid("Customer", shop.ann), "depth": 1}))["referralTree"]
    assert shape(one) == shape(tree)[:2]
    below = (await gql(TREE, {"id": gid("Customer", c.hal), "depth": 5}))["referralTree"]
    assert shape(below) == [
        (1, None, gid("Customer", c.ivy)),
        (2, 0, gid("Customer", c.jon)),
    ]
    leaf = (await gql(TREE, {"id": gid("Customer", c.jon)}))["referralTree"]
    assert leaf["nodes"] == []


async def test_the_depth_is_one_to_five_and_the_id_a_customers(gql, shop):
    for depth in (0, 6, -1):
        body = await gql.raw(TREE, {"id": gid("Customer", shop.ann), "depth": depth})
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    body = await gql.raw(TREE, {"id": gid("Store", shop.a1)})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_a_member_sees_whom_they_invited_masked_and_no_one_elses_tree(
    app, shop, family, issue_token
):
    ann = caller(app, token_of(issue_token, member(shop.ann)))
    # Whatever depth she asks for: whom dan invited in turn is none of her business.
    for depth in (1, 3, 5):
        tree = (await ann(TREE, {"id": gid("Customer", shop.ann), "depth": depth}))["data"][
            "referralTree"
        ]
        # Her friends' records are theirs: no customer, a masked name and the dates.
        assert tree["depth"] == 1
        assert shape(tree) == [(1, None, None), (1, None, None)]
        assert [n["displayName"] for n in tree["nodes"]] == ["丁*", "伊*"]
        assert all(n["registeredAt"] for n in tree["nodes"])
        assert tree["root"] == {"id": gid("Customer", shop.ann)}
    for other in (family.dan, shop.bob, 999):
        body = await ann(TREE, {"id": gid("Customer", other)})
        assert body["data"]["referralTree"] is None


async def test_a_partner_sees_its_recruits_trees_without_other_partners_customers(
    app, shop, family, issue_token
):
    a = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    tree = (await a(TREE, {"id": gid("Customer", shop.ann), "depth": 5}))["data"]["referralTree"]
    # dan is partner B's: left out, not even as a placeholder (that would count B's
    # customers for A), and nothing below him is read (not even gus, who is A's): his
    # invitations are B's customer's business.
    assert shape(tree) == [(1, None, gid("Customer", family.eve))]
    # gus is A's: his tree's people are nobody's recruits, so A sees none of them.
    gus = (await a(TREE, {"id": gid("Customer", family.gus)}))["data"]["referralTree"]
    assert gus["nodes"] == []

    b = caller(app, token_of(issue_token, partner_admin(shop.partner_b)))
    assert (await b(TREE, {"id": gid("Customer", shop.ann)}))["data"]["referralTree"] is None
    dan = (await b(TREE, {"id": gid("Customer", family.dan)}))["data"]["referralTree"]
    assert dan["nodes"] == []  # gus is A's


async def test_who_may_ask_at_all(app, shop, family, issue_token):
    staff = caller(app, token_of(issue_token, store_staff(shop.partner_a, shop.a1)))
    body = await staff(TREE, {"id": gid("Customer", shop.ann)})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]  # no scope


@pytest.mark.parametrize("depth", [1, 5])
async def test_the_tree_costs_the_same_statements_whatever_its_size(
    gql, shop, family, count_queries, depth
):
    with count_queries() as counter:
        tree = (await gql(TREE, {"id": gid("Customer", shop.ann), "depth": depth}))["referralTree"]
    assert len(tree["nodes"]) == (2 if depth == 1 else 6)
    # The root's visibility, the one recursive statement, then one batch of customers (the
    # root's and the nodes') and one of campaigns.
    assert counter.count == 4
