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
    "orders:write": "create and change orders",
    "stock:write": "adjust stock",
    "customers:read": "read customers and members",
    "customers:write": "create, change and merge customers",
    "coupons:write": "create coupon templates",
    "coupons:redeem": "redeem coupons at a store",
    "points:write": "grant and deduct points",
    "pii:read": "read personal data (phone numbers, emails) unmasked",
    "audit:read": "read the audit log",
}

# Never granted to a partner's integration client: they act on every partner's data.
HQ_ONLY_SCOPES = frozenset({"partners:write", "coupons:write", "audit:read"})

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.HQ_ADMIN: frozenset(SCOPES),
    Role.CHANNEL_MANAGER: frozenset(
        {
            "partners:read",
            "partners:write",
            "orders:read",
            "stock:write",
            "customers:read",
            "pii:read",
        }
    ),
    Role.MARKETER: frozenset(
        {"partners:read", "customers:read", "customers:write", "coupons:write", "points:write"}
    ),
    Role.PARTNER_ADMIN: frozenset(
        {
            "partners:read",
            "orders:read",
            "orders:write",
            "stock:write",
            "customers:read",
            "coupons:redeem",
        }
    ),
    Role.STORE_STAFF: frozenset(
        {"partners:read", "orders:read", "customers:read", "coupons:redeem"}
    ),
    # An integration's scopes are its client's; a member's token is about the member only.
    Role.INTEGRATION: frozenset(),
    Role.MEMBER: frozenset(),
}


def parse(scope: str | None) -> set[str]:
    return set((scope or "").split())


def render(scopes: set[str] | frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def unknown(scopes: set[str]) -> set[str]:
    return scopes - SCOPES.keys()
