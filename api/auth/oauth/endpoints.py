"""Revocation (RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from api.auth.oauth.server import OAuthServer
from api.auth.oauth.snapshots import SECRET_OR_PUBLIC, AccessToken, Client, RefreshToken
from api.auth.oauth.store import OAuthStore
from api.auth.oauth.threads import on_loop


def _find_token(
    store: OAuthStore, token: str, hint: str | None
) -> AccessToken | RefreshToken | None:
    if token.count(".") == 2 and hint != "refresh_token":
        return on_loop(store.access_token, token)
    return on_loop(store.find_refresh_token, token)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = SECRET_OR_PUBLIC
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find_token(self.server.store, token_string, token_type_hint)

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        if isinstance(token, AccessToken):
            on_loop(self.server.store.deny_access_token, token.claims)
        else:
            # A refresh token stands for a login: end it, every rotation included.
            on_loop(self.server.store.revoke_refresh_family, token.family)


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find_token(self.server.store, token_string, token_type_hint)

    def check_permission(self, token: Any, client: Client, request: OAuth2Request) -> bool:
        # A client may introspect its own tokens; first-party backends any token.
        return client.first_party or token.check_client(client)

    def introspect_token(self, token: Any) -> dict[str, Any]:
        if isinstance(token, AccessToken):
            claims = token.claims
            return {
                "active": True,
                "token_type": "Bearer",
                **{
                    k: claims[k]
                    for k in (
                        "client_id",
                        "scope",
                        "sub",
                        "exp",
                        "iat",
                        "iss",
                        "aud",
                        "jti",
                        "role",
                    )
                    if k in claims
                },
                **{k: claims[k] for k in ("partner_id", "store_id", "customer_id") if k in claims},
            }
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": token.client_id,
            "scope": token.scope,
            "sub": (
                f"customer:{token.customer_id}"
                if token.customer_id is not None
                else f"user:{token.user_id}"
                if token.user_id
                else None
            ),
            "exp": int(token.expires_at.timestamp()),
        }
