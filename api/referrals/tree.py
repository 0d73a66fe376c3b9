"""The referral tree: who invited whom below a customer, in one recursive statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.auth.scope import restrict
from api.customers.lookup import customers_by_id
from api.customers.models import Customer
from api.errors import DomainError
from api.referrals.errors import ReferralErrorCode
from api.referrals.models import Referral

MAX_TREE_DEPTH = 5
DEFAULT_TREE_DEPTH = 3
# A member sees whom they invited, not whom those friends invited in turn (strangers to them).
MEMBER_TREE_DEPTH = 1
# A tree is one list in one answer: past this many nodes (breadth first) it is cut short.
MAX_TREE_NODES = 500


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One invitee below the root. ``parent`` is the index of its inviter's node in the
    list (None: invited by the root)."""

    depth: int
    parent: int | None
    customer_id: int
    masked_name: str | None
    campaign_id: int
    registered_at: datetime
    first_order_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReferralTree:
    root: Customer
    depth: int
    nodes: list[TreeNode]
    truncated: bool  # more than MAX_TREE_NODES: the deepest are left out


def mask_name(name: str | None) -> str | None:
    """王小丫 → 王**: enough for an inviter to recognise a friend, not to identify a stranger."""
    if not name:
        return None
    return name[0] + "*" * max(1, len(name) - 1)


def _visible(principal: Principal, customer_id: Any) -> Any:
    """Whether a tree node's customer is in the principal's scope. HQ sees everyone; a
    member their invitees (names masked; their customer records stay hidden by the customer
    loaders; and only one level deep, see ``MEMBER_TREE_DEPTH``); anyone else what
    ``restrict`` gives them of customers."""
    if principal.is_hq or principal.is_member:
        return true()
    return exists(
        restrict(select(Customer.id).where(Customer.id == customer_id), Customer, principal)
    )


def tree_statement(
    principal: Principal, root_id: int, depth: int, limit: int = MAX_TREE_NODES
) -> Select[Any]:
    """The ONE recursive statement: the referrals below ``root_id`` down to ``depth``
    levels, breadth first, at most ``limit`` rows. Only customers in the principal's scope
    are read, and the recursion descends only from them: a customer outside it is left out
    with everything below them (not even their number shows). A referral of oneself (a
    merge made inviter and invitee one) invited no one."""
    # (referral id, invitee, inviter, depth): the first level of the recursion.
    anchor: Select[int, int, int, Any] = select(
        Referral.id.label("referral_id"),
        Referral.invitee_id.label("customer_id"),
        Referral.inviter_id.label("inviter_id"),
        literal_column("1").label("depth"),
    ).where(
        Referral.inviter_id == root_id,
        Referral.invitee_id != root_id,
        _visible(principal, Referral.invitee_id),
    )
    tree = anchor.cte("referral_tree", recursive=True)
    step = (
        select(Referral.id, Referral.invitee_id, Referral.inviter_id, tree.c.depth + 1)
        .join(tree, Referral.inviter_id == tree.c.customer_id)
        .where(
            tree.c.depth < depth,
            Referral.invitee_id != Referral.inviter_id,
            _visible(principal, Referral.invitee_id),
        )
    )
    tree = tree.union_all(step)
    return (
        select(
            tree.c.customer_id,
            tree.c.inviter_id,
            tree.c.depth,
            Referral.campaign_id,
            Referral.registered_at,
            Referral.first_order_at,
            Customer.name,
        )
        .join(Referral, Referral.id == tree.c.referral_id)
        .join(Customer, Customer.id == tree.c.customer_id)
        .order_by(tree.c.depth, Referral.registered_at, Referral.id)
        .limit(limit)
    )


async def referral_tree(
    session: AsyncSession, principal: Principal, customer_id: int, depth: int
) -> ReferralTree | None:
    """Who invited whom below a customer; None when the customer is not the principal's to
    see (a member: only themself; a partner: its recruits; HQ: anyone). A member's tree is
    at most ``MEMBER_TREE_DEPTH`` deep whatever ``depth`` asks. Two statements: the root's
    visibility, and the tree."""
    if not 0 < depth <= MAX_TREE_DEPTH:
        raise DomainError.one(
            ReferralErrorCode.INVALID, f"depth is between 1 and {MAX_TREE_DEPTH}.", "depth"
        )
    if principal.is_member:
        depth = min(depth, MEMBER_TREE_DEPTH)
    root = (await customers_by_id(session, principal, [customer_id])).get(customer_id)
    if root is None:
        return None
    index: dict[int, int] = {}
    nodes: list[TreeNode] = []
    rows = (
        await session.execute(tree_statement(principal, root.id, depth, MAX_TREE_NODES + 1))
    ).all()
    for row in rows[:MAX_TREE_NODES]:
        parent = None if row.inviter_id == root.id else index[row.inviter_id]
        index[row.customer_id] = len(nodes)
        nodes.append(
            TreeNode(
                depth=row.depth,
                parent=parent,
                customer_id=row.customer_id,
                masked_name=mask_name(row.name),
                campaign_id=row.campaign_id,
                registered_at=row.registered_at,
                first_order_at=row.first_order_at,
            )
        )
    return ReferralTree(root=root, depth=depth, nodes=nodes, truncated=len(rows) > MAX_TREE_NODES)
