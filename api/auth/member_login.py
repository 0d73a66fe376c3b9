"""Member login for the mini-program: a phone and a one-time code, or a WeChat login code.

Both are OAuth extension grants on the token endpoint, so a member's token comes from the
same server, with the same signing keys, rate limits, refresh-token rotation and revocation
as staff tokens::

    POST /oauth/otp     client_id, phone            → a 6-digit code by SMS
    POST /oauth/token   grant_type=urn:qudao:params:oauth:grant-type:phone-otp
                        client_id, phone, code [, scope]
    POST /oauth/token   grant_type=urn:qudao:params:oauth:grant-type:wechat
                        client_id, appid, code [, scope]

The token's subject is ``customer:<id>`` with role MEMBER and a ``customer_id`` claim; its
scopes are the member role's, narrowed by the request. The customer is found (or created) by
the verified identity through the customers domain, so a phone or unionid seen before — in a
store, a marketplace order, another mini-program — logs in as that same person.

Only first-party clients registered for a grant may use it (a client that can mint member
tokens is trusted with every member's data).

Phone login needs an SMS sender (``QUDAO_SMS_SENDER``); without one it is off: both the code
request and the phone grant answer 503 ``temporarily_unavailable`` saying so, and everything
else (WeChat login, staff logins, the API) works as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import otp, wechat
from api.auth.keys import KeyRing
from api.auth.oauth.http_request import read_oauth_request
from api.auth.oauth.routes import rate_limited
from api.auth.oauth.server import OAuthServer
from api.auth.oauth.snapshots import SECRET_OR_PUBLIC, Client
from api.auth.oauth.store import TooManyAttempts
from api.auth.oauth.threads import on_loop
from api.auth.otp import OtpCodes, OtpLocked, OtpPolicy, OtpThrottled, Verdict
from api.auth.pii import mask_phone
from api.auth.principal import Role
from api.auth.sms import SmsError, SmsSender, build_sender
from api.auth.wechat import WeChatClient, WeChatRefused, WeChatUnavailable
from api.cache import Cache
from api.customers.errors import CustomerErrorCode
from api.customers.identities import IdentityError, normalize_phone
from api.customers.locks import resolve_customer_id
from api.customers.models import IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.upsert import upsert_customer
from api.db import Database
from api.errors import DomainError
from api.settings import Settings

log = logging.getLogger("qudao.auth.members")

PHONE_OTP_GRANT = otp.GRANT_TYPE
WECHAT_GRANT = wechat.GRANT_TYPE
MEMBER_GRANTS = frozenset({PHONE_OTP_GRANT, WECHAT_GRANT})

# What a member's first login records as the customer's first channel.
CHANNEL = "mini_program"

_VERDICTS = {
    Verdict.WRONG: "Wrong code.",
    Verdict.EXHAUSTED: "Too many wrong tries: this code no longer works; request a new one.",
    Verdict.USED: "This code was already used; request a new one.",
    Verdict.MISSING: "No valid code for this phone (expired or never sent); request one.",
}


class Member:
    """A member, as the OAuth server's "user": their role bounds the token's scopes."""

    role = Role.MEMBER
    partner_id: int | None = None
    store_id: int | None = None

    def __init__(self, customer_id: int) -> None:
        self.customer_id = customer_id

    def get_user_id(self) -> str:
        return f"customer:{self.customer_id}"


class TemporarilyUnavailable(OAuth2Error):
    """RFC 6749's ``temporarily_unavailable``, as a 503; with Retry-After when a retry may
    help (without one when only the server's configuration can)."""

    error = "temporarily_unavailable"
    status_code = 503

    def __init__(self, description: str, retry_after: int | None = 5) -> None:
        super().__init__(description=description)
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        headers = super().get_headers()
        if self.retry_after is None:
            return headers
        return [*headers, ("Retry-After", str(self.retry_after))]


SMS_NOT_CONFIGURED = "SMS is not configured on this server (QUDAO_SMS_SENDER): phone login is off."


class SlowDown(OAuth2Error):
    error = "slow_down"
    status_code = 429

    def __init__(self, description: str, retry_after: float) -> None:
        super().__init__(description=description)
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(max(1, round(self.retry_after))))]


class MemberLogins:
    """Everything the member grants do on the event loop: codes, WeChat, customers."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        keys: KeyRing,
        settings: Settings,
        *,
        sms: SmsSender | None,
        wechat_client: WeChatClient,
    ) -> None:
        self.db = db
        self.sms = sms  # None: no sender configured, phone login is off
        self.wechat = wechat_client
        self.codes = OtpCodes(
            cache,
            otp.secret_from_keys(keys),
            OtpPolicy(
                ttl=settings.otp_ttl,
                resend_interval=settings.otp_resend_interval,
                hourly_limit=settings.otp_hourly_limit,
                max_attempts=settings.otp_max_attempts,
                failure_limit=settings.otp_failure_limit,
                failure_window=settings.failed_login_window,
            ),
        )

    async def send_code(self, client_id: str, phone: str) -> otp.IssuedCode:
        """Text a new code to ``phone`` (normalized). SlowDown when asked too often."""
        sms = self._sender()
        try:
            issued = await self.codes.issue(phone, client_id)
        except OtpThrottled as throttled:
            raise SlowDown(str(throttled), throttled.retry_after) from None
        try:
            await sms.send_code(phone, issued.code, expires_in=issued.expires_in)
        except SmsError as error:
            await self.codes.withdraw(phone)
            log.warning("SMS to %s failed: %s", mask_phone(phone), error)
            raise TemporarilyUnavailable("The code could not be sent; try again.") from None
        return issued

    def _sender(self) -> SmsSender:
        if self.sms is None:
            # Not a retry's business: no Retry-After, and no code is issued or counted.
            raise TemporarilyUnavailable(SMS_NOT_CONFIGURED, retry_after=None)
        return self.sms

    async def phone_login(self, client_id: str, phone: str, code: str, address: str) -> Member:
        """Log in with a code texted to ``phone``, from client ``address`` (whose failures
        are limited across all phones)."""
        self._sender()  # no sender, no codes: say why rather than "wrong code"
        try:
            verdict = await self.codes.verify(phone, client_id, code, address=address)
        except OtpLocked as locked:
            raise TooManyAttempts(locked.retry_after) from None
        if verdict is not Verdict.ACCEPTED:
            raise InvalidGrantError(_VERDICTS[verdict])
        member = await self._upsert([(IdentityKind.PHONE, phone)], None, client_id)
        log.info("member login %s by phone code via %s", member.get_user_id(), client_id)
        return member

    async def wechat_login(self, client_id: str, appid: str, code: str) -> Member:
        try:
            user = await self.wechat.code2session(appid, code)
        except WeChatRefused as refused:
            raise InvalidGrantError(str(refused)) from None
        except WeChatUnavailable as unavailable:
            raise TemporarilyUnavailable(str(unavailable)) from None
        openid = (IdentityKind.WECHAT_OPENID, f"{user.appid}:{user.openid}")
        identities = [openid]
        if user.unionid is not None:
            # The unionid is the same person in every app of the brand's WeChat account:
            # found by it, a second mini-program logs in as the customer the first created.
            identities.insert(0, (IdentityKind.WECHAT_UNIONID, user.unionid))
        try:
            member = await self._upsert(identities, user.unionid, client_id)
        except DomainError as error:
            if not _is_conflict(error):
                raise
            # The unionid and this app's openid already belong to two customers (the openid
            # logged in before WeChat reported a unionid). Log in as the app's own customer;
            # the unionid hint on its openid lets duplicate detection propose the merge.
            log.warning("wechat login: unionid and openid of %s name two customers", appid)
            member = await self._upsert([openid], user.unionid, client_id)
        log.info("member login %s by WeChat (%s) via %s", member.get_user_id(), appid, client_id)
        return member

    async def _upsert(
        self,
        identities: Sequence[tuple[IdentityKind, str]],
        unionid_hint: str | None,
        client_id: str,
    ) -> Member:
        draft = CustomerDraft(
            identities=identities, first_channel=CHANNEL, unionid_hint=unionid_hint
        )
        try:
            async with self.db.transaction() as session:
                result = await upsert_customer(session, draft, actor=f"client:{client_id}")
                customer_id = result.customer.id
        except DomainError as error:
            if _is_conflict(error):
                raise
            # Only WeChat's values can be malformed here (the phone was validated): its
            # answer was not what it documents.
            log.warning("member login: identity refused by the customers domain: %s", error)
            raise TemporarilyUnavailable("The login service answered unexpectedly.") from None
        return Member(customer_id)

    async def member(self, customer_id: int) -> Member | None:
        """The member a refresh token names, after any merge; None if the customer is gone."""
        async with self.db.read() as session:
            live = await resolve_customer_id(session, customer_id)
        return Member(live) if live is not None else None


def _is_conflict(error: DomainError) -> bool:
    return any(p.code is CustomerErrorCode.IDENTITY_CONFLICT for p in error.problems)


# --- grants -----------------------------------------------------------------------------------


def _member_client(client: Client, grant_type: str) -> Client:
    if not client.check_grant_type(grant_type) or not client.first_party:
        raise UnauthorizedClientError(f"This client may not use grant_type={grant_type}.")
    return client


def _required(form: dict[str, str], name: str) -> str:
    value = (form.get(name) or "").strip()
    if not value:
        raise InvalidRequestError(f"Missing '{name}' in request.")
    return value


def _phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except IdentityError as error:
        raise InvalidRequestError(f"phone: {error}") from None


class _MemberGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    """An extension grant that logs a member in (RFC 6749 section 4.5)."""

    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_OR_PUBLIC
    server: OAuthServer

    def validate_token_request(self) -> None:
        client = _member_client(self.authenticate_token_endpoint_client(), self.GRANT_TYPE)
        self.request.client = client
        # Before the credential is checked: a request refused for its scope must not spend
        # the member's one-time code.
        self.validate_requested_scope()
        self.request.user = self.authenticate_member(client, self.request.form)

    def authenticate_member(self, client: Client, form: dict[str, str]) -> Member:
        raise NotImplementedError

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(
            user=self.request.user,
            scope=self.request.payload.scope,
            include_refresh_token=self.client.check_grant_type("refresh_token"),
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    @property
    def members(self) -> MemberLogins:
        members = self.server.members
        assert isinstance(members, MemberLogins)  # installed with the grants
        return members


class PhoneOtpGrant(_MemberGrant):
    GRANT_TYPE = PHONE_OTP_GRANT

    def authenticate_member(self, client: Client, form: dict[str, str]) -> Member:
        phone = _phone(_required(form, "phone"))
        code = _required(form, "code")
        # The caller's address, as the OAuth endpoints' rate limit sees it: wrong codes are
        # also limited per address, so one caller cannot spray guesses across many phones.
        address: str = self.request.client_address
        return on_loop(self.members.phone_login, client.client_id, phone, code, address)


class WeChatGrant(_MemberGrant):
    GRANT_TYPE = WECHAT_GRANT

    def authenticate_member(self, client: Client, form: dict[str, str]) -> Member:
        appid = _required(form, "appid")
        code = _required(form, "code")
        if not self.members.wechat.knows(appid):
            raise InvalidRequestError(f"appid: {appid!r} is not a mini-program of this server.")
        return on_loop(self.members.wechat_login, client.client_id, appid, code)


# --- the code request endpoint ------------------------------------------------------------------


async def request_code(request: Request) -> Response:
    """``POST /oauth/otp`` (form: client_id, phone; a confidential client authenticates as
    at the token endpoint): text a login code. 200 ``{"expires_in", "resend_after"}``; 429
    with Retry-After when asked too soon or too often for that phone; 503 when no SMS sender
    is configured."""
    if limited := await rate_limited(request):
        return limited
    server: OAuthServer = request.app.state.oauth
    oauth_request = await read_oauth_request(request)
    try:
        client = await anyio.to_thread.run_sync(
            server.authenticate_client, oauth_request, SECRET_OR_PUBLIC
        )
        _member_client(client, PHONE_OTP_GRANT)
        phone = _phone(_required(oauth_request.form, "phone"))
        members = server.members
        assert isinstance(members, MemberLogins)  # installed with the route
        issued = await members.send_code(client.client_id, phone)
    except OAuth2Error as error:
        return server.handle_error_response(oauth_request, error)
    return JSONResponse(
        {"expires_in": issued.expires_in, "resend_after": issued.resend_after},
        headers={"Cache-Control": "no-store"},
    )


def install(server: OAuthServer, settings: Settings) -> None:
    """Add the member grants to the OAuth server. ValueError for an unknown SMS sender, so
    a misconfigured process stops at startup; no sender at all turns phone login off."""
    server.members = MemberLogins(
        server.store.db,
        server.store.cache,
        server.keys,
        settings,
        sms=build_sender(settings),
        wechat_client=WeChatClient(
            settings.wechat_api_base, dict(settings.wechat_apps), timeout=settings.wechat_timeout
        ),
    )
    server.register_grant(PhoneOtpGrant)
    server.register_grant(WeChatGrant)


ROUTES = [Route("/oauth/otp", request_code, methods=["POST"])]

__all__ = ["MEMBER_GRANTS", "ROUTES", "Member", "MemberLogins", "install"]
