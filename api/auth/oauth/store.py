"""Every database and cache access of the OAuth server."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import anyio
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Request
from sqlalchemy import delete, select, update

from api.auth import scopes as scope_catalog
from api.auth import service
from api.auth.keys import KeyRing
from api.auth.models import OAuthAuthorizationCode, OAuthRefreshToken, StaffUser
from api.auth.oauth.snapshots import AccessToken, AuthorizationCode, Client, RefreshToken, User
from api.auth.secrets import digest, verify_password
from api.auth.tokens import (
    InvalidToken,
    decode_access_token,
    deny,
)
from api.cache import Cache, CacheUnavailable
from api.db import Database, advisory_lock, utcnow
from api.settings import Settings


class TooManyAttempts(OAuth2Error):
    error = "too_many_attempts"
    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(description="Too many failed logins; try again later.")
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(max(1, round(self.retry_after))))]


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
        verified = await anyio.to_thread.run_sync(verify_password, hashed, password)
        if not verified or row is None:  # no row, no hash: never verified
            return None
        # Redis down: the count stays until its window ends; the login stands.
        with contextlib.suppress(CacheUnavailable):
            await self.cache.delete(key)
        return User(row)

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
