"""The OAuth server and everything it answers, in one place: its token generator, the grants
of the token endpoint and the revocation and introspection endpoints. The member grants are
added by ``api.auth.member_login.install``."""

from __future__ import annotations

from api.auth.keys import KeyRing
from api.auth.oauth.endpoints import Introspection, Revocation
from api.auth.oauth.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    PasswordGrant,
    RefreshTokenGrant,
    S256Required,
)
from api.auth.oauth.server import OAuthServer
from api.auth.oauth.token_generator import AccessTokens
from api.cache import Cache
from api.db import Database
from api.settings import Settings


def build_server(db: Database, cache: Cache, keys: KeyRing, settings: Settings) -> OAuthServer:
    server = OAuthServer(db, cache, keys, settings)
    server.register_token_generator("default", AccessTokens(keys, settings))
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(PasswordGrant)
    server.register_grant(AuthorizationCodeGrant, [S256Required()])
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    return server
