"""The staff and integration grants of the token endpoint, and PKCE for the code grant."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge

from api.auth.oauth.server import OAuthServer
from api.auth.oauth.snapshots import SECRET_OR_PUBLIC, AuthorizationCode, Client, RefreshToken, User
from api.auth.oauth.threads import on_loop


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_OR_PUBLIC
    server: OAuthServer

    def authenticate_user(self, username: str, password: str) -> User | None:
        return on_loop(self.server.store.login, username, password)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_OR_PUBLIC
    server: OAuthServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        on_loop(self.server.store.save_code, code, request)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found = on_loop(self.server.store.take_code, code, client.client_id)
        return None if found is None or found.is_expired() else found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Already gone: take_code consumed it atomically."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return on_loop(self.server.store.user, authorization_code.user_id)


class S256Required(CodeChallenge):
    """PKCE with S256 on every authorization request. authlib's ``required`` only refuses at
    the token exchange, and it accepts the ``plain`` method; we refuse both up front."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: send code_challenge with method S256.")
        super().validate_code_challenge(grant, redirect_uri)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_OR_PUBLIC
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh returns a new refresh token
    server: OAuthServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return on_loop(
            self.server.store.rotate_refresh_token,
            refresh_token,
            self.request.client.client_id,
            self.request.payload.scope,
        )

    def authenticate_user(self, refresh_token: RefreshToken) -> Any:
        if refresh_token.customer_id is not None and self.server.members is not None:
            # A member: whoever the customer is now (a merge redirects to the survivor).
            return on_loop(self.server.members.member, refresh_token.customer_id)
        if refresh_token.user_id is None:
            return None
        return on_loop(self.server.store.user, refresh_token.user_id)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Already rotated in authenticate_refresh_token, atomically."""
