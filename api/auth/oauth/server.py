"""The authorization server: authlib's hooks for finding clients, saving tokens, answering."""

from __future__ import annotations

from typing import Any, Protocol

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidGrantError
from starlette.responses import JSONResponse, RedirectResponse, Response

from api.auth import scopes as scope_catalog
from api.auth.keys import KeyRing
from api.auth.oauth.snapshots import Client, TokenUser, User, member_family
from api.auth.oauth.store import OAuthStore
from api.auth.oauth.threads import on_loop
from api.cache import Cache
from api.db import Database
from api.settings import Settings


class MemberDirectory(Protocol):
    """The members' side of the server (``api.auth.member_login.MemberLogins``), as the refresh
    grant sees it: typed here so that this module need not import the member logins, which
    import it."""

    async def member(self, customer_id: int) -> TokenUser | None: ...


class OAuthServer(AuthorizationServer):
    """authlib's hooks; which grants and endpoints it answers is ``assembly.build_server``."""

    def __init__(self, db: Database, cache: Cache, keys: KeyRing, settings: Settings) -> None:
        super().__init__(scopes_supported=sorted(scope_catalog.SCOPES))
        self.store = OAuthStore(db, cache, settings)
        self.store.keys = keys
        self.keys = keys
        self.settings = settings
        # Member logins (phone code, WeChat): installed by api.auth.member_login.install.
        self.members: MemberDirectory | None = None

    def query_client(self, client_id: str) -> Client | None:
        return on_loop(self.store.client, client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        refresh = token.get("refresh_token")
        if refresh is None:
            return
        previous = request.refresh_token
        user = request.user
        if previous is not None:
            family = previous.family
        elif user is not None and user.customer_id is not None:
            family = member_family(user.customer_id)
        else:
            family = None
        saved = on_loop(
            self.store.save_refresh_token,
            refresh,
            request.client.client_id,
            user.id if isinstance(user, User) else None,
            token.get("scope", ""),
            family,
        )
        if not saved:
            raise InvalidGrantError("This login was revoked.")

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # built by the route, which read the body on the event loop

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        headers = dict(headers or [])
        if isinstance(body, dict):
            headers.pop("Content-Type", None)
            return JSONResponse(body, status_code=status, headers=headers)
        location = headers.pop("Location", None)
        if location is not None:
            return RedirectResponse(location, status_code=status, headers=headers)
        return Response(body or "", status_code=status, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No listeners: audit of logins happens in the routes."""
