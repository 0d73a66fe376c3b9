"""The bearer tokens the server issues: a signed access token, a random refresh token."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6750 import BearerTokenGenerator

from api.auth import scopes as scope_catalog
from api.auth.keys import KeyRing
from api.auth.oauth.snapshots import Client, TokenUser
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.secrets import new_secret
from api.auth.tokens import (
    TokenSubject,
    issue_access_token,
)
from api.settings import Settings


class AccessTokens(BearerTokenGenerator):
    def __init__(self, keys: KeyRing, settings: Settings) -> None:
        super().__init__(self._access_token, lambda **_: new_secret())
        self.keys = keys
        self.settings = settings

    def generate(
        self,
        grant_type: str,
        client: Client,
        user: TokenUser | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        allowed = scope_catalog.parse(client.get_allowed_scope(scope))
        # With a user, the role bounds the scopes; without one, the client's registration.
        allowed &= ROLE_SCOPES[user.role] if user is not None else client.registered_scopes
        return super().generate(
            grant_type,
            client,
            user,
            scope_catalog.render(allowed),
            self.settings.access_token_ttl,
            include_refresh_token and user is not None,
        )

    def _access_token(
        self, client: Client, grant_type: str, user: TokenUser | None, scope: str
    ) -> str:
        if user is not None:
            who = TokenSubject(
                user.get_user_id(), user.role, user.partner_id, user.store_id, user.customer_id
            )
        else:
            who = TokenSubject(f"client:{client.client_id}", Role.INTEGRATION, client.partner_id)
        return issue_access_token(
            self.keys,
            issuer=self.settings.issuer,
            client_id=client.client_id,
            who=who,
            scope=scope,
            ttl=self.settings.access_token_ttl,
        )
