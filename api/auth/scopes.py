"""Permissions are OAuth scopes, whoever the caller is.

A staff token carries its role's scopes (narrowed to what the login asked for); an
integration client's token carries what its client may have and asked for. Permission
classes then check one thing: the scope.
"""

from __future__ import annotations

from api.auth.principal import Role

SCOPES: dict[str, str] = {
    "partners:read": "read partners and stores",
    "partners:write": "create and change partners and stores",
    "orders:read": "read orders",
    "orders:write": "create orders and run them (pickup, cancel, refund)",
    "catalog:write": "create and change products, SKUs and price bands",
    "stock:write": "adjust stock",
    "customers:read": "read customers and members",
    "customers:write": "create, change and merge customers",
    "members:write": "enrol members (recruited by a store and guide) and set manual levels",
    "loyalty:write": "configure member levels and points earning rules",
    "coupons:write": "create coupon templates and grant coupons",
    "coupons:claim": "claim coupons (a member for themself)",
    "coupons:redeem": "redeem coupons at a store",
    "points:write": "grant and deduct points",
    "pii:read": "read personal data (phone numbers, emails) unmasked",
    "audit:read": "read the audit log",
    "growth:write": "record touchpoints (conversion steps)",
    "analytics:read": "read funnels, attribution, metrics and segments",
    "segments:write": "save segments and run grants on them",
    "referrals:write": "configure referral campaigns",
    "referrals:join": "invite others and accept an invite (a member for themself)",
    "spend:write": "record channel spend",
    "purchasing:read": "read purchase orders, the credit line and purchase prices",
    "purchasing:write": "create, submit, cancel and receive purchase orders",
    "purchasing:manage": "publish price lists, set credit lines, approve, reject and ship "
    "purchase orders, record payments",
}

# Never granted to a partner's integration client: they act on every partner's data.
HQ_ONLY_SCOPES = frozenset(
    {
        "partners:write",
        "catalog:write",
        "coupons:write",
        "loyalty:write",
        "customers:write",
        "audit:read",
        "referrals:write",
        "spend:write",
        "purchasing:manage",
    }
)

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.HQ_ADMIN: frozenset(SCOPES),
    Role.CHANNEL_MANAGER: frozenset(
        {
            "partners:read",
            "partners:write",
            "catalog:write",
            "orders:read",
            "orders:write",
            "stock:write",
            "customers:read",
            "pii:read",
            "analytics:read",
            "spend:write",
            "purchasing:read",
            "purchasing:write",
            "purchasing:manage",
        }
    ),
    Role.MARKETER: frozenset(
        {
            "partners:read",
            "customers:read",
            "customers:write",
            "members:write",
            "loyalty:write",
            "coupons:write",
            "points:write",
            "growth:write",
            "analytics:read",
            "segments:write",
            "referrals:write",
            "spend:write",
        }
    ),
    Role.PARTNER_ADMIN: frozenset(
        {
            "partners:read",
            "orders:read",
            "orders:write",
            "stock:write",
            "customers:read",
            "members:write",
            "coupons:redeem",
            "growth:write",
            "analytics:read",
            "segments:write",
            "purchasing:read",
            "purchasing:write",
        }
    ),
    Role.STORE_STAFF: frozenset(
        {
            "partners:read",
            "orders:read",
            "orders:write",
            "stock:write",
            "customers:read",
            "members:write",
            "coupons:redeem",
            "growth:write",
        }
    ),
    # An integration's scopes are its client's.
    Role.INTEGRATION: frozenset(),
    # A member's token reads only the member's own data (see api/auth/scope.py).
    # Members place and cancel their own orders; the orders service says which.
    Role.MEMBER: frozenset(
        {"customers:read", "coupons:claim", "orders:read", "orders:write", "referrals:join"}
    ),
}


def parse(scope: str | None) -> set[str]:
    return set((scope or "").split())


def render(scopes: set[str] | frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def unknown(scopes: set[str]) -> set[str]:
    return scopes - SCOPES.keys()
