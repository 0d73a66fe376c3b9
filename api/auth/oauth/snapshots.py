"""What authlib sees: plain snapshots of the OAuth rows, safe to hand across threads."""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

from authlib.oauth2.rfc6749 import ClientMixin

from api.auth import scopes as scope_catalog
from api.auth.models import OAuthAuthorizationCode, OAuthClient, OAuthRefreshToken, StaffUser
from api.auth.principal import Role
from api.auth.secrets import digest_matches
from api.db import utcnow


class Client(ClientMixin):
    def __init__(self, row: OAuthClient) -> None:
        self.client_id = row.client_id
        self.secret_hash = row.secret_hash
        self.partner_id = row.partner_id
        self.first_party = row.first_party
        self.grant_types = set(row.grant_types.split())
        self.redirect_uris = row.redirect_uris.split()
        self.registered_scopes = set(row.scopes.split())
        # First-party apps act for a user, whose role bounds the scopes; integrations hold
        # exactly the scopes registered for them.
        self.scopes = set(scope_catalog.SCOPES) if row.first_party else self.registered_scopes

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        wanted = scope_catalog.parse(scope) if scope else self.scopes
        return scope_catalog.render(wanted & self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return digest_matches(self.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret_hash is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class TokenUser(Protocol):
    """Who a token is issued to: a staff ``User`` or a member (``api.auth.member_login.Member``)."""

    @property
    def role(self) -> Role: ...
    @property
    def partner_id(self) -> int | None: ...
    @property
    def store_id(self) -> int | None: ...
    @property
    def customer_id(self) -> int | None: ...
    def get_user_id(self) -> str: ...


class User:
    customer_id: int | None = None  # staff act for no customer (see member_login.Member)

    def __init__(self, row: StaffUser) -> None:
        self.id = row.id
        self.role = row.role
        self.partner_id = row.partner_id
        self.store_id = row.store_id

    def get_user_id(self) -> str:
        return f"user:{self.id}"


class AuthorizationCode:
    def __init__(self, row: OAuthAuthorizationCode) -> None:
        self.client_id = row.client_id
        self.user_id = row.user_id
        self.redirect_uri = row.redirect_uri
        self.scope = row.scope
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method
        self.expires_at = row.expires_at

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()


class RefreshToken:
    def __init__(self, row: OAuthRefreshToken) -> None:
        self.id = row.id
        self.family = row.family
        self.client_id = row.client_id
        self.user_id = row.user_id
        self.scope = row.scope
        self.expires_at = row.expires_at
        # A rotated token is spent: it may not be used, and introspection says so.
        self.revoked = row.revoked_at is not None or row.rotated_at is not None
        self.customer_id = family_customer(row.family)

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked


class AccessToken:
    def __init__(self, claims: dict[str, Any], revoked: bool) -> None:
        self.claims = claims
        self.revoked = revoked

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.claims.get("client_id")

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def is_expired(self) -> bool:
        return int(self.claims["exp"]) <= time.time()

    def is_revoked(self) -> bool:
        return self.revoked


def member_family(customer_id: int) -> str:
    """A new refresh-token family for a member's login.

    ``oauth_refresh_token.user_id`` names staff users, so a member's refresh token carries
    its customer in the family instead: ``c<customer id>.<random hex>`` (32 characters, at
    least 80 random bits; staff families are 32 hex digits and never contain a dot).
    """
    return f"c{customer_id}.{secrets.token_hex(16)}"[:32]


def family_customer(family: str) -> int | None:
    """The customer of a member's refresh-token family; None for a staff login."""
    head, dot, _ = family.partition(".")
    if not dot or not head.startswith("c") or not head[1:].isdigit():
        return None
    return int(head[1:])


SECRET_OR_PUBLIC = ["client_secret_basic", "client_secret_post", "none"]
