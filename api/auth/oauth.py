"""The OAuth 2 authorization server: authlib's synchronous server behind Starlette routes.

authlib has no async server, so each endpoint call runs in a worker thread
(``anyio.to_thread``); the hooks authlib calls (find a client, save a token, ...) hop back
onto the event loop (``anyio.from_thread``) to use the same async database and cache as the
API. The token endpoint is not the hot path; GraphQL requests never come here.
"""

from __future__ import annotations

import base64
import contextlib
import html
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
from anyio import from_thread
from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import delete, select, update
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from api.auth import scopes as scope_catalog
from api.auth import service
from api.auth.keys import KeyRing
from api.auth.models import OAuthAuthorizationCode, OAuthClient, OAuthRefreshToken, StaffUser
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.secrets import digest, digest_matches, new_secret, verify_password
from api.auth.tokens import (
    InvalidToken,
    TokenSubject,
    decode_access_token,
    deny,
    issue_access_token,
)
from api.cache import Cache, CacheUnavailable
from api.db import Database, advisory_lock, utcnow
from api.settings import Settings
from api.text import check_texts

if TYPE_CHECKING:
    from api.auth.member_login import MemberLogins

P = ParamSpec("P")
R = TypeVar("R")


def _on_loop(fn: Callable[P, Awaitable[R]], *args: P.args) -> R:
    """Run an async function on the event loop from authlib's worker thread."""
    return from_thread.run(fn, *args)  # type: ignore[arg-type]


# --- what authlib sees: plain snapshots, safe to hand across threads ------------------------


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


class TooManyAttempts(OAuth2Error):
    error = "too_many_attempts"
    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(description="Too many failed logins; try again later.")
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(max(1, round(self.retry_after))))]


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


# --- the store: every database and cache access of the OAuth server ---------------------------


class OAuthStore:
    def __init__(self, db: Database, cache: Cache, settings: Settings) -> None:
        self.db = db
        self.cache = cache
        self.settings = settings

    async def client(self, client_id: str) -> Client | None:
        async with self.db.read() as session:
            row = await service.client_by_client_id(session, client_id)
        return Client(row) if row else None

    async def user(self, user_id: int) -> User | None:
        async with self.db.read() as session:
            row = await session.get(StaffUser, user_id)
        return User(row) if row and row.is_active else None

    async def login(self, email: str, password: str) -> User | None:
        """Check a password, with a lockout after repeated failures for that email.

        The attempt is counted *before* the (slow, ~100 ms) password check, so concurrent
        guesses cannot all slip past the limit; a successful login clears the count.
        """
        key = f"login-attempts:{email.strip().lower()}"
        attempts, reset = await self.cache.hit(key, self.settings.failed_login_window)
        if attempts > self.settings.failed_login_limit:
            raise TooManyAttempts(reset)
        async with self.db.read() as session:
            row = await service.user_by_email(session, email)
        hashed = row.password_hash if row and row.is_active else None
        if not await anyio.to_thread.run_sync(verify_password, hashed, password):
            return None
        # Redis down: the count stays until its window ends; the login stands.
        with contextlib.suppress(CacheUnavailable):
            await self.cache.delete(key)
        return User(row)  # type: ignore[arg-type]

    async def save_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        async with self.db.transaction() as session:
            session.add(
                OAuthAuthorizationCode(
                    code_hash=digest(code),
                    client_id=request.client.client_id,
                    user_id=request.user.id,
                    redirect_uri=data.get("redirect_uri") or "",
                    scope=request.payload.scope or "",
                    code_challenge=data.get("code_challenge") or "",
                    code_challenge_method=data.get("code_challenge_method") or "plain",
                    expires_at=utcnow() + timedelta(seconds=self.settings.auth_code_ttl),
                )
            )

    async def take_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """Consume a code: of two concurrent exchanges of one code, only one gets it."""
        stmt = (
            delete(OAuthAuthorizationCode)
            .where(
                OAuthAuthorizationCode.code_hash == digest(code),
                OAuthAuthorizationCode.client_id == client_id,
            )
            .returning(OAuthAuthorizationCode)
        )
        async with self.db.transaction() as session:
            row = (await session.execute(stmt)).scalar_one_or_none()
        return AuthorizationCode(row) if row else None

    async def save_refresh_token(
        self, token: str, client_id: str, user_id: int | None, scope: str, family: str | None
    ) -> bool:
        """Store a new refresh token; False when its family was revoked meanwhile.

        Two refreshes racing with one token: the loser revokes the family, possibly before
        the winner stores its successor. Storing is therefore refused once the family has a
        revoked member, under a per-family lock (SQLite writers are serialized anyway).
        """
        async with self.db.transaction() as session:
            if family is not None:
                await advisory_lock(session, f"refresh-family:{family}")
                revoked = await session.scalar(
                    select(OAuthRefreshToken.id)
                    .where(
                        OAuthRefreshToken.family == family,
                        OAuthRefreshToken.revoked_at.is_not(None),
                    )
                    .limit(1)
                )
                if revoked is not None:
                    return False
            session.add(
                OAuthRefreshToken(
                    token_hash=digest(token),
                    family=family or uuid.uuid4().hex,
                    client_id=client_id,
                    user_id=user_id,
                    scope=scope,
                    expires_at=utcnow() + timedelta(seconds=self.settings.refresh_token_ttl),
                )
            )
        return True

    async def find_refresh_token(self, token: str) -> RefreshToken | None:
        async with self.db.read() as session:
            row = await session.scalar(
                select(OAuthRefreshToken).where(OAuthRefreshToken.token_hash == digest(token))
            )
        return RefreshToken(row) if row else None

    async def rotate_refresh_token(
        self, token: str, client_id: str, requested_scope: str | None
    ) -> RefreshToken | None:
        """Mark a refresh token used, once. Presenting a used one again means it leaked (or a
        client raced itself): the whole family is revoked and the caller must log in again.

        A request that fails for other reasons (another client's token, a wider scope) does
        not spend the token: those are checked first.
        """
        now = utcnow()
        async with self.db.read() as session:
            found = await session.scalar(
                select(OAuthRefreshToken).where(
                    OAuthRefreshToken.token_hash == digest(token),
                    OAuthRefreshToken.client_id == client_id,
                )
            )
        if found is None:
            return None
        if not scope_catalog.parse(requested_scope) <= scope_catalog.parse(found.scope):
            view = RefreshToken(found)
            view.revoked = False  # unspent: authlib answers invalid_scope
            return view
        stmt = (
            update(OAuthRefreshToken)
            .where(
                OAuthRefreshToken.token_hash == digest(token),
                OAuthRefreshToken.client_id == client_id,
                OAuthRefreshToken.rotated_at.is_(None),
                OAuthRefreshToken.revoked_at.is_(None),
                OAuthRefreshToken.expires_at > now,
            )
            .values(rotated_at=now)
            .returning(OAuthRefreshToken)
        )
        async with self.db.transaction() as session:
            # The family lock first, as in saving and revoking: a rotation that took the row
            # lock first and the family lock second deadlocked against a racing revocation.
            await advisory_lock(session, f"refresh-family:{found.family}")
            row = (await session.execute(stmt)).scalar_one_or_none()
            if row is not None:
                return RefreshToken(row)
            used = await session.scalar(
                select(OAuthRefreshToken.family).where(
                    OAuthRefreshToken.token_hash == digest(token),
                    OAuthRefreshToken.rotated_at.is_not(None),
                )
            )
            if used is not None:
                await self._revoke_family(session, used, now)
        return None

    async def revoke_refresh_family(self, family: str) -> None:
        async with self.db.transaction() as session:
            await self._revoke_family(session, family, utcnow())

    @staticmethod
    async def _revoke_family(session: Any, family: str, now: datetime) -> None:
        await advisory_lock(session, f"refresh-family:{family}")
        await session.execute(
            update(OAuthRefreshToken)
            .where(OAuthRefreshToken.family == family, OAuthRefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def access_token(self, token: str) -> AccessToken | None:
        try:
            claims = decode_access_token(self.keys, token, issuer=self.settings.issuer)
        except InvalidToken:
            return None
        revoked = await self.cache.get("revoked-jti:" + claims["jti"]) is not None
        return AccessToken(claims, revoked)

    async def deny_access_token(self, claims: dict[str, Any]) -> None:
        await deny(self.cache, claims)

    keys: KeyRing  # set by OAuthServer


# --- grants and endpoints -----------------------------------------------------------------------

_SECRET_OR_PUBLIC = ["client_secret_basic", "client_secret_post", "none"]


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _SECRET_OR_PUBLIC

    def authenticate_user(self, username: str, password: str) -> User | None:
        return _on_loop(self.server.store.login, username, password)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _SECRET_OR_PUBLIC

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        _on_loop(self.server.store.save_code, code, request)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found = _on_loop(self.server.store.take_code, code, client.client_id)
        return None if found is None or found.is_expired() else found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Already gone: take_code consumed it atomically."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return _on_loop(self.server.store.user, authorization_code.user_id)


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
    TOKEN_ENDPOINT_AUTH_METHODS = _SECRET_OR_PUBLIC
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh returns a new refresh token

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return _on_loop(
            self.server.store.rotate_refresh_token,
            refresh_token,
            self.request.client.client_id,
            self.request.payload.scope,
        )

    def authenticate_user(self, refresh_token: RefreshToken) -> Any:
        if refresh_token.customer_id is not None and self.server.members is not None:
            # A member: whoever the customer is now (a merge redirects to the survivor).
            return _on_loop(self.server.members.member, refresh_token.customer_id)
        if refresh_token.user_id is None:
            return None
        return _on_loop(self.server.store.user, refresh_token.user_id)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Already rotated in authenticate_refresh_token, atomically."""


def _find_token(
    store: OAuthStore, token: str, hint: str | None
) -> AccessToken | RefreshToken | None:
    if token.count(".") == 2 and hint != "refresh_token":
        return _on_loop(store.access_token, token)
    return _on_loop(store.find_refresh_token, token)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = _SECRET_OR_PUBLIC

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find_token(self.server.store, token_string, token_type_hint)

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        if isinstance(token, AccessToken):
            _on_loop(self.server.store.deny_access_token, token.claims)
        else:
            # A refresh token stands for a login: end it, every rotation included.
            _on_loop(self.server.store.revoke_refresh_family, token.family)


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

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


class AccessTokens(BearerTokenGenerator):
    def __init__(self, keys: KeyRing, settings: Settings) -> None:
        super().__init__(self._access_token, lambda **_: new_secret())
        self.keys = keys
        self.settings = settings

    def generate(
        self,
        grant_type: str,
        client: Client,
        user: User | None = None,
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

    def _access_token(self, client: Client, grant_type: str, user: User | None, scope: str) -> str:
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


# --- authlib's framework hooks, for Starlette ---------------------------------------------------


class _Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    @property
    def data(self) -> dict[str, str]:
        return dict(self._pairs)

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._pairs:
            values[key].append(value)
        return values


class _Request(OAuth2Request):
    def __init__(self, request: Request, form: FormData | None, settings: Settings) -> None:
        uri = str(request.url)
        if not settings.oauth_require_https:
            # TLS ends at the load balancer in most deployments; authlib would refuse http.
            uri = urlunsplit(urlsplit(uri)._replace(scheme="https"))
        super().__init__(request.method, uri, headers=request.headers)  # case-insensitive
        # The caller's address, as _limited sees it: grants limit failures per address.
        self.client_address = request.client.host if request.client else "unknown"
        self._args: QueryParams = request.query_params
        self._form = form
        pairs = list(request.query_params.multi_items())
        if form is not None:
            pairs += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        self.payload = _Payload(pairs)

    @property
    def args(self) -> QueryParams:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return {k: v for k, v in (self._form or {}).items() if isinstance(v, str)}


class OAuthServer(AuthorizationServer):
    def __init__(self, db: Database, cache: Cache, keys: KeyRing, settings: Settings) -> None:
        super().__init__(scopes_supported=sorted(scope_catalog.SCOPES))
        self.store = OAuthStore(db, cache, settings)
        self.store.keys = keys
        self.keys = keys
        self.settings = settings
        self.register_token_generator("default", AccessTokens(keys, settings))
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(PasswordGrant)
        self.register_grant(AuthorizationCodeGrant, [S256Required()])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)
        # Member logins (phone code, WeChat): installed by api.auth.member_login.install.
        self.members: MemberLogins | None = None

    def query_client(self, client_id: str) -> Client | None:
        return _on_loop(self.store.client, client_id)

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
        saved = _on_loop(
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


# --- routes --------------------------------------------------------------------------------------


async def _oauth_request(request: Request) -> _Request:
    """The request as authlib reads it, once its text is known to be text: a NUL in a client
    id or a code reached PostgreSQL (a 500) before. UnreadableText is a 400 (app.py)."""
    form = await request.form() if request.method == "POST" else None
    oauth_request = _Request(request, form, request.app.state.settings)
    given = [(k, v) for k, values in oauth_request.payload.datalist.items() for v in values]
    check_texts([*given, *_basic_credentials(request)])
    return oauth_request


class MalformedCredentials(ValueError):
    """``Authorization: Basic`` credentials that are not base64 of UTF-8 text (a 401)."""


def _basic_credentials(request: Request) -> list[tuple[str, str]]:
    """Client id and secret of an ``Authorization: Basic`` header. Decoded here, before
    authlib does it the same way: it lets the errors of credentials that are not ASCII,
    or not UTF-8, escape as 500s."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return []
    try:
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise MalformedCredentials("Malformed client credentials.") from None
    return [("client_id", unquote(client_id)), ("client_secret", unquote(secret))]


async def _limited(request: Request) -> Response | None:
    """The token endpoints' own, tighter limit per client address."""
    settings: Settings = request.app.state.settings
    address = request.client.host if request.client else "unknown"
    count, reset = await request.app.state.cache.hit(
        f"rate:oauth:{address}", settings.oauth_rate_window
    )
    if count > settings.oauth_rate_limit:
        return JSONResponse(
            {"error": "slow_down", "error_description": "Too many requests."},
            status_code=429,
            headers={"Retry-After": str(max(1, round(reset)))},
        )
    return None


async def _endpoint(request: Request, call: Callable[..., Response], *args: Any) -> Response:
    """Rate-limit, read the body on the loop, then run authlib in a worker thread."""
    if limited := await _limited(request):
        return limited
    oauth_request = await _oauth_request(request)
    return await anyio.to_thread.run_sync(call, *args, oauth_request)


async def token(request: Request) -> Response:
    server: OAuthServer = request.app.state.oauth
    return await _endpoint(request, server.create_token_response)


async def revoke(request: Request) -> Response:
    server: OAuthServer = request.app.state.oauth
    return await _endpoint(request, server.create_endpoint_response, Revocation.ENDPOINT_NAME)


async def introspect(request: Request) -> Response:
    server: OAuthServer = request.app.state.oauth
    return await _endpoint(request, server.create_endpoint_response, Introspection.ENDPOINT_NAME)


_LOGIN_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>Qudao sign in</title>
</head><body><h1>Sign in to Qudao</h1>{error}<form method="post">{hidden}
<label>Email <input name="email" type="email" required></label>
<label>Password <input name="password" type="password" required></label>
<button type="submit">Sign in</button></form></body></html>"""


def _login_page(params: QueryParams, error: str | None = None, status: int = 200) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.multi_items()
    )
    message = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_LOGIN_FORM.format(error=message, hidden=hidden), status_code=status)


async def authorize(request: Request) -> Response:
    """Authorization code flow. First-party clients only, so consent is implicit: the staff
    member signs in and is sent straight back with a code."""
    server: OAuthServer = request.app.state.oauth
    oauth_request = await _oauth_request(request)
    try:
        grant = await anyio.to_thread.run_sync(server.get_consent_grant, oauth_request, None)
    except OAuth2Error as error:
        return JSONResponse(dict(error.get_body()), status_code=error.status_code)
    if not grant.client.first_party:
        return JSONResponse(
            {
                "error": "unauthorized_client",
                "error_description": "Consent is for first-party apps.",
            },
            status_code=400,
        )
    if request.method == "GET":
        return _login_page(request.query_params)
    form = oauth_request.form
    if limited := await _limited(request):
        return limited
    try:
        user = await server.store.login(form.get("email", ""), form.get("password", ""))
    except TooManyAttempts as error:
        return _login_page(request.query_params, error.description, 429)
    if user is None:
        return _login_page(request.query_params, "Wrong email or password.", 401)
    return await anyio.to_thread.run_sync(
        server.create_authorization_response, oauth_request, user, grant
    )


async def jwks(request: Request) -> Response:
    return JSONResponse(
        request.app.state.keys.public_jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


ROUTES = [
    Route("/oauth/token", token, methods=["POST"]),
    Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
    Route("/oauth/revoke", revoke, methods=["POST"]),
    Route("/oauth/introspect", introspect, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
]

__all__ = ["ROUTES", "OAuthServer"]
