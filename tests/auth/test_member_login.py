"""Member login for the mini-program: a phone and a one-time code, or a WeChat login code.

Everything goes over HTTP to a real app: the code request endpoint, the token endpoint's
extension grants, then /graphql with the member token. WeChat is a fake code2session server
on a real socket. Every test runs on SQLite and (when configured) PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from api.app import create_app
from api.auth import service as auth
from api.auth.keys import KeyRing
from api.auth.member_login import PHONE_OTP_GRANT, WECHAT_GRANT
from api.auth.otp import OtpCodes, OtpLocked, OtpPolicy, Verdict
from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.sms import LogSender, SmsError
from api.cache import Cache, InProcessCache, RedisCache
from api.customers.models import Customer, CustomerIdentity, IdentityKind
from api.customers.profile import CustomerDraft
from api.customers.upsert import upsert_customer
from api.errors import DomainError
from api.graphql.ids import encode_id
from api.logs import JsonFormatter
from api.partners import service as partners
from api.partners.models import PartnerType
from api.seed import SEEDER
from api.settings import Settings
from tests.auth.fake_wechat import Answer, FakeWeChat
from tests.conftest import REDIS_URL, GraphQLClient, service_missing
from tests.wiring import CUSTOMERS, WIRING

BASE = "http://qudao.test"
PHONE = "13800138000"
OTHER_PHONE = "13911112222"
MEMBER_SCOPES = ROLE_SCOPES[Role.MEMBER]
APPS = {"wxapp1": "secret-one", "wxapp2": "secret-two"}
OWNER_ADDRESS = "198.51.100.7"  # where the shop's own requests come from
STRANGER_ADDRESS = "203.0.113.66"


class RecordingSender:
    """An SMS sender that delivers into a list the test reads."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send_code(self, phone: str, code: str, *, expires_in: int) -> None:
        self.sent.append((phone, code))

    def last(self, phone: str) -> str:
        return next(code for to, code in reversed(self.sent) if to == phone)


class BrokenSender:
    async def send_code(self, phone: str, code: str, *, expires_in: int) -> None:
        raise SmsError("gateway said no")


@dataclass
class Shop:
    """The app, its clients, and what a member's phone and WeChat would receive."""

    app: Any
    http: httpx.AsyncClient
    sms: RecordingSender
    wechat: FakeWeChat
    mini: str  # the mini-program: a public first-party client with the member grants
    mini2: str  # a second mini-program
    console: str  # first party, staff password logins only
    console_secret: str
    partner_a: int
    store_a: int
    others: dict[str, int] = field(default_factory=dict)
    extra_http: list[httpx.AsyncClient] = field(default_factory=list)

    def from_address(self, address: str) -> httpx.AsyncClient:
        """An HTTP client whose requests come from another address (closed with the shop)."""
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(address, 40000)), base_url=BASE
        )
        self.extra_http.append(http)
        return http

    async def close(self) -> None:
        for http in (self.http, *self.extra_http):
            await http.aclose()

    def tune_codes(self, **changes: Any) -> None:
        """Change the code policy of the running app (e.g. the per-address limit)."""
        codes = self.app.state.oauth.members.codes
        codes.policy = replace(codes.policy, **changes)

    async def request_code(
        self,
        phone: str = PHONE,
        client_id: str | None = None,
        *,
        via: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        return await (via or self.http).post(
            "/oauth/otp", data={"client_id": client_id or self.mini, "phone": phone}
        )

    async def exchange(
        self,
        phone: str = PHONE,
        code: str | None = None,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        via: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        data = {
            "grant_type": PHONE_OTP_GRANT,
            "client_id": client_id or self.mini,
            "phone": phone,
            "code": code if code is not None else self.sms.last(phone),
        }
        if scope is not None:
            data["scope"] = scope
        return await (via or self.http).post("/oauth/token", data=data)

    async def login(self, phone: str = PHONE, **kwargs: Any) -> dict[str, Any]:
        sent = await self.request_code(phone)
        assert sent.status_code == 200, sent.text
        response = await self.exchange(phone, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    async def wechat_login(
        self, appid: str, code: str, client_id: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            "/oauth/token",
            data={
                "grant_type": WECHAT_GRANT,
                "client_id": client_id or self.mini,
                "appid": appid,
                "code": code,
            },
        )

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.http.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "client_id": self.mini,
                "refresh_token": refresh_token,
            },
        )

    def claims(self, token: dict[str, Any]) -> dict[str, Any]:
        public = KeySet.import_key_set(self.app.state.keys.public_jwks())
        return jwt.decode(token["access_token"], public, algorithms=["ES256"]).claims

    def as_member(self, token: dict[str, Any]) -> GraphQLClient:
        return GraphQLClient(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app),
                base_url=BASE,
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )
        )


@pytest.fixture
def wechat() -> Any:
    fake = FakeWeChat(dict(APPS)).start()
    yield fake
    fake.stop()


def shop_settings(settings: Settings, wechat: FakeWeChat, **changes: Any) -> Settings:
    return replace(
        settings,
        wechat_api_base=wechat.base_url,
        wechat_apps=tuple(APPS.items()),
        wechat_timeout=0.5,
        **changes,
    )


async def open_shop(
    db, settings: Settings, wechat: FakeWeChat, *, record_sms: bool = True, **changes: Any
) -> Shop:
    """The shop's app; its SMS go to a RecordingSender unless ``record_sms`` is False (then
    the sender is whatever the settings say)."""
    async with db.transaction() as session:
        a = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PA", "Partner A", PartnerType.DISTRIBUTOR)
        )
        store = await partners.create_store(
            session, SEEDER, partners.StoreDraft("SA", "Store A", "310115", "addr", a.id)
        )
        member_grants = {PHONE_OTP_GRANT, WECHAT_GRANT, "refresh_token"}
        mini = await auth.create_client(
            session, name="Mini", grant_types=member_grants, first_party=True, public=True
        )
        mini2 = await auth.create_client(
            session, name="Mini 2", grant_types=member_grants, first_party=True, public=True
        )
        console = await auth.create_client(
            session, name="Console", grant_types={"password", "refresh_token"}, first_party=True
        )
        # Someone else, already a customer (recruited by partner A's store).
        other = await upsert_customer(
            session,
            CustomerDraft(identities=[(IdentityKind.PHONE, OTHER_PHONE)], name="Someone Else"),
            actor="test",
        )
        other.customer.recruited_partner_id = a.id
        other.customer.recruited_store_id = store.id
    app = create_app(shop_settings(settings, wechat, **changes), db=db, cache=InProcessCache())
    sms = RecordingSender()
    if record_sms:
        app.state.oauth.members.sms = sms
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(OWNER_ADDRESS, 40000)), base_url=BASE
    )
    return Shop(
        app,
        http,
        sms,
        wechat,
        mini.client.client_id,
        mini2.client.client_id,
        console.client.client_id,
        console.secret or "",
        a.id,
        store.id,
        {"other": other.customer.id},
    )


@pytest_asyncio.fixture
async def shop(db, settings, wechat) -> AsyncIterator[Shop]:
    opened = await open_shop(db, settings, wechat)
    yield opened
    await opened.close()


async def customer_of_phone(db, phone: str) -> int | None:
    async with db.read() as session:
        return await session.scalar(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == IdentityKind.PHONE, CustomerIdentity.value == phone
            )
        )


async def identities(db, customer_id: int) -> dict[tuple[str, str], str | None]:
    async with db.read() as session:
        rows = await session.scalars(
            select(CustomerIdentity).where(CustomerIdentity.customer_id == customer_id)
        )
        return {(r.kind.value, r.value): r.unionid_hint for r in rows}


def error_of(response: httpx.Response) -> str:
    return response.json()["error"]


# --- phone and one-time code ------------------------------------------------------------------


async def test_a_new_phone_logs_in_as_a_new_member(shop, db):
    sent = await shop.request_code("+86 138-0013-8000")  # normalized like the customers domain
    assert sent.status_code == 200
    assert sent.json() == {"expires_in": 300, "resend_after": 60}
    assert sent.headers["cache-control"] == "no-store"
    ((phone, code),) = shop.sms.sent
    assert phone == PHONE and len(code) == 6 and code.isdigit()

    response = await shop.exchange(PHONE, code)
    assert response.status_code == 200, response.text
    token = response.json()
    customer_id = await customer_of_phone(db, PHONE)
    assert customer_id is not None and customer_id != shop.others["other"]
    claims = shop.claims(token)
    assert claims["role"] == "member"
    assert claims["sub"] == f"customer:{customer_id}"
    assert claims["customer_id"] == customer_id
    assert claims["client_id"] == shop.mini
    assert "partner_id" not in claims and "store_id" not in claims
    assert set(token["scope"].split()) == MEMBER_SCOPES
    assert "refresh_token" in token
    async with db.read() as session:
        customer = await session.get(Customer, customer_id)
        assert customer is not None and customer.first_channel == "mini_program"


async def test_a_known_phone_logs_in_as_that_customer(shop):
    token = await shop.login(OTHER_PHONE)
    assert shop.claims(token)["customer_id"] == shop.others["other"]


VIEWER = """{ viewer { kind role subject scopes partner { id }
  customer { id firstChannel identities { kind value } } } }"""


async def test_the_member_token_sees_the_member_and_nothing_else(shop):
    token = await shop.login()
    customer_id = shop.claims(token)["customer_id"]
    member = shop.as_member(token)
    try:
        viewer = (await member(VIEWER))["viewer"]
        assert viewer == {
            "kind": "MEMBER",
            "role": "MEMBER",
            "subject": f"customer:{customer_id}",
            "scopes": sorted(MEMBER_SCOPES),
            "partner": None,
            "customer": {
                "id": encode_id("Customer", customer_id),
                "firstChannel": "mini_program",
                # Their own phone, masked all the same: members hold no pii:read.
                "identities": [{"kind": "PHONE", "value": "138****8000"}],
            },
        }
        # Another customer answers exactly like a missing one, by `customer` and by `node`.
        other = encode_id("Customer", shop.others["other"])
        missing = encode_id("Customer", 999_999)
        for some_id in (other, missing):
            data = await member(
                "query($id: ID!) { customer(id: $id) { id } node(id: $id) { id } }",
                {"id": some_id},
            )
            assert data == {"customer": None, "node": None}
        mine = await member(
            "query($id: ID!) { customer(id: $id) { id } }", {"id": viewer["customer"]["id"]}
        )
        assert mine == {"customer": {"id": viewer["customer"]["id"]}}
        # Partners are not a member's business: a partner's id is like a missing one, and
        # listing partners needs a scope no member has.
        partner_id = encode_id("Partner", shop.partner_a)
        data = await member("query($id: ID!) { node(id: $id) { id } }", {"id": partner_id})
        assert data == {"node": None}
        listing = await member.raw("{ partners(first: 5) { nodes { id } } }")
        assert listing["data"] is None
        assert listing["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    finally:
        await member.http.aclose()


async def test_staff_have_no_viewer_customer(shop, issue_token):
    staff = GraphQLClient(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=shop.app),
            base_url=BASE,
            headers={"Authorization": f"Bearer {issue_token(Role.HQ_ADMIN, customer_id=1)}"},
        )
    )
    try:
        assert (await staff("{ viewer { customer { id } } }")) == {"viewer": {"customer": None}}
    finally:
        await staff.http.aclose()


async def test_scopes_are_the_member_role_narrowed_by_the_request(shop):
    token = await shop.login(scope="customers:read pii:read audit:read")
    assert token["scope"] == "customers:read"


async def test_a_member_token_without_customers_read_does_not_show_the_profile(shop):
    token = await shop.login(scope="coupons:claim")
    assert token["scope"] == "coupons:claim"
    member = shop.as_member(token)
    try:
        body = await member.raw("{ viewer { kind customer { id } } }")
    finally:
        await member.http.aclose()
    assert body["data"] == {"viewer": {"kind": "MEMBER", "customer": None}}
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_an_unknown_scope_is_refused_without_spending_the_code(shop):
    await shop.request_code()
    refused = await shop.exchange(scope="customers:read no-such:scope")
    assert refused.status_code == 400 and error_of(refused) == "invalid_scope"
    assert (await shop.exchange()).status_code == 200


async def test_a_wrong_code_is_refused(shop):
    await shop.request_code()
    right = shop.sms.last(PHONE)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = await shop.exchange(code=wrong)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "Wrong code."}
    for malformed in ("12345", "abcdef", "1234567"):
        assert error_of(await shop.exchange(code=malformed)) == "invalid_grant"
    # Four wrong tries so far: the right code still works.
    assert (await shop.exchange(code=right)).status_code == 200


async def test_a_code_without_a_request_or_for_another_phone_is_refused(shop):
    never = await shop.exchange(PHONE, "123456")
    assert error_of(never) == "invalid_grant" and "request one" in never.json()["error_description"]
    await shop.request_code(PHONE)
    elsewhere = await shop.exchange("13700001111", shop.sms.last(PHONE))
    assert error_of(elsewhere) == "invalid_grant"


async def test_a_code_only_logs_in_through_the_client_that_asked(shop):
    await shop.request_code(PHONE, client_id=shop.mini)
    other_app = await shop.exchange(client_id=shop.mini2)
    assert error_of(other_app) == "invalid_grant"
    assert (await shop.exchange(client_id=shop.mini)).status_code == 200


async def test_an_expired_code_is_refused(db, settings, wechat):
    shop = await open_shop(db, settings, wechat, otp_ttl=0.3)
    try:
        await shop.request_code()
        await asyncio.sleep(0.45)
        response = await shop.exchange()
        assert response.status_code == 400 and error_of(response) == "invalid_grant"
        assert "expired" in response.json()["error_description"]
    finally:
        await shop.http.aclose()


async def test_five_wrong_tries_burn_the_code(shop):
    await shop.request_code()
    right = shop.sms.last(PHONE)
    wrong = f"{(int(right) + 7) % 1_000_000:06d}"
    answers = [(await shop.exchange(code=wrong)).json()["error_description"] for _ in range(5)]
    assert answers[:4] == ["Wrong code."] * 4
    assert "no longer works" in answers[4]
    burned = await shop.exchange(code=right)
    assert burned.status_code == 400 and "no longer works" in burned.json()["error_description"]


async def test_too_many_failures_lock_the_phone(db, settings, wechat):
    shop = await open_shop(db, settings, wechat, otp_failure_limit=3, otp_resend_interval=0.05)
    try:
        await shop.request_code()
        for _ in range(3):
            assert error_of(await shop.exchange(code="000000")) == "invalid_grant"
        # A fresh code does not reset the count: guessing continues to be locked out.
        await asyncio.sleep(0.06)
        assert (await shop.request_code()).status_code == 200
        locked = await shop.exchange()
        assert locked.status_code == 429 and error_of(locked) == "too_many_attempts"
        assert 0 < int(locked.headers["retry-after"]) <= settings.failed_login_window
    finally:
        await shop.http.aclose()


async def test_guessing_at_a_phone_without_a_live_code_never_locks_it(db, settings, wechat):
    shop = await open_shop(db, settings, wechat, otp_failure_limit=6, otp_resend_interval=0.05)
    shop.tune_codes(address_failure_limit=100)  # this test is about the phone's own limit
    try:
        stranger = shop.from_address(STRANGER_ADDRESS)
        # The owner asked for no code: more guesses than the phone's limit, all just
        # invalid_grant, none a lockout.
        for guess in range(8):
            wrong = await shop.exchange(code=f"{guess:06d}", via=stranger)
            assert wrong.status_code == 400 and error_of(wrong) == "invalid_grant"
            assert "request one" in wrong.json()["error_description"]
        # The owner asks for a code and logs in with it.
        customer_id = shop.claims(await shop.login())["customer_id"]
        # Guessing at a code already used is no failure of the owner's either ...
        for guess in range(5):
            used = await shop.exchange(code=f"{guess:06d}", via=stranger)
            assert used.status_code == 400 and "already used" in used.json()["error_description"]
        # ... nor at a code burned by wrong tries: only its 5 tries count for the phone.
        await asyncio.sleep(0.06)
        assert (await shop.request_code()).status_code == 200
        burned = f"{(int(shop.sms.last(PHONE)) + 1) % 1_000_000:06d}"
        answers = [
            (await shop.exchange(code=burned, via=stranger)).json()["error_description"]
            for _ in range(10)
        ]
        assert answers[:4] == ["Wrong code."] * 4
        assert all("no longer works" in answer for answer in answers[4:])
        # 5 failures against the phone's real codes, under its limit of 6: the owner is in.
        await asyncio.sleep(0.06)
        token = await shop.login()
        assert shop.claims(token)["customer_id"] == customer_id
    finally:
        await shop.close()


async def test_the_owner_logs_in_while_a_stranger_sprays_guesses_at_their_phone(shop):
    stranger = shop.from_address(STRANGER_ADDRESS)
    other_phones = [f"1360000{n:04d}" for n in range(8)]
    for phone in [PHONE, *other_phones]:
        assert error_of(await shop.exchange(phone, "000000", via=stranger)) == "invalid_grant"
    token = await shop.login()
    assert shop.claims(token)["role"] == "member"


async def test_an_address_spraying_guesses_across_many_phones_is_throttled(shop, db):
    shop.tune_codes(address_failure_limit=4)
    stranger = shop.from_address(STRANGER_ADDRESS)
    # The owner has a live code; the stranger has none for any of these phones.
    assert (await shop.request_code(PHONE)).status_code == 200
    sprayed = [f"1370000{n:04d}" for n in range(4)]
    for phone in sprayed:
        answer = await shop.exchange(phone, "123456", via=stranger)
        assert answer.status_code == 400 and error_of(answer) == "invalid_grant"
    # Four failures from that address: it is refused, whatever the phone, before any code
    # is looked at, so the owner's live code loses none of its tries.
    for phone in (PHONE, "13700009999"):
        refused = await shop.exchange(phone, "123456", via=stranger)
        assert refused.status_code == 429 and error_of(refused) == "too_many_attempts"
        assert 0 < int(refused.headers["retry-after"]) <= 900
    # Other addresses are not held back: the owner logs in with their code.
    assert (await shop.exchange(PHONE)).status_code == 200
    assert await customer_of_phone(db, PHONE) is not None


async def test_logins_from_a_shared_address_do_not_count_as_failures(shop):
    """Members behind one carrier NAT: only wrong codes count against their address."""
    shop.tune_codes(address_failure_limit=2)
    phones = ["13600000001", "13600000002", "13600000003"]
    assert error_of(await shop.exchange(PHONE, "000000")) == "invalid_grant"  # 1 failure
    for phone in phones:
        await shop.login(phone)  # three successes: still 1 failure
    assert error_of(await shop.exchange(PHONE, "000000")) == "invalid_grant"  # 2 failures
    refused = await shop.exchange(PHONE, "000000")
    assert refused.status_code == 429 and error_of(refused) == "too_many_attempts"


async def test_resending_too_soon_is_429_with_retry_after(shop):
    assert (await shop.request_code()).status_code == 200
    again = await shop.request_code("+8613800138000")  # the same phone, written differently
    assert again.status_code == 429 and error_of(again) == "slow_down"
    assert 1 <= int(again.headers["retry-after"]) <= 60
    assert len(shop.sms.sent) == 1
    # Another phone is not held back.
    assert (await shop.request_code(OTHER_PHONE)).status_code == 200


async def test_a_phone_gets_a_limited_number_of_codes_an_hour(db, settings, wechat):
    shop = await open_shop(db, settings, wechat, otp_hourly_limit=2, otp_resend_interval=0.05)
    try:
        for _ in range(2):
            assert (await shop.request_code()).status_code == 200
            await asyncio.sleep(0.06)
        capped = await shop.request_code()
        assert capped.status_code == 429
        assert 60 < int(capped.headers["retry-after"]) <= 3600
        assert len(shop.sms.sent) == 2
    finally:
        await shop.http.aclose()


async def test_a_code_is_single_use(shop):
    first = await shop.login()
    again = await shop.exchange()
    assert again.status_code == 400 and error_of(again) == "invalid_grant"
    assert "already used" in again.json()["error_description"]
    assert first["access_token"]


async def test_concurrent_logins_with_one_code_issue_one_token(shop):
    await shop.request_code()
    code = shop.sms.last(PHONE)
    responses = await asyncio.gather(*(shop.exchange(code=code) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [400] * 9
    assert {error_of(r) for r in responses if r.status_code == 400} == {"invalid_grant"}


async def test_concurrent_first_logins_of_three_phones_make_one_customer_each(shop, db):
    phones = ["13600000001", "13600000002", "13600000003"]
    for phone in phones:
        await shop.request_code(phone)
    responses = await asyncio.gather(*(shop.exchange(phone) for phone in phones))
    assert [r.status_code for r in responses] == [200, 200, 200]
    ids = [shop.claims(r.json())["customer_id"] for r in responses]
    assert ids == [await customer_of_phone(db, phone) for phone in phones]
    assert len(set(ids)) == 3


async def test_unknown_client_and_client_without_the_grant_are_refused(shop):
    # 400, not 401: the client sent no Authorization header (RFC 6749 section 5.2).
    unknown = await shop.request_code(client_id="no-such-client")
    assert unknown.status_code == 400 and error_of(unknown) == "invalid_client"
    unknown = await shop.exchange(client_id="no-such-client", code="123456")
    assert unknown.status_code == 400 and error_of(unknown) == "invalid_client"
    # The console logs staff in with passwords; it may not log members in.
    for response in (
        await shop.http.post(
            "/oauth/otp",
            data={"phone": PHONE},
            auth=(shop.console, shop.console_secret),
        ),
        await shop.http.post(
            "/oauth/token",
            data={"grant_type": PHONE_OTP_GRANT, "phone": PHONE, "code": "123456"},
            auth=(shop.console, shop.console_secret),
        ),
        await shop.http.post(
            "/oauth/token",
            data={"grant_type": WECHAT_GRANT, "appid": "wxapp1", "code": "c"},
            auth=(shop.console, shop.console_secret),
        ),
    ):
        assert response.status_code == 400 and error_of(response) == "unauthorized_client"
    assert shop.sms.sent == []


async def test_only_first_party_clients_may_be_registered_for_member_grants(db):
    async with db.transaction() as session:
        partner = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PX", "X", PartnerType.AGENT)
        )
        with pytest.raises(DomainError, match="first-party"):
            await auth.create_client(
                session, name="3rd", grant_types={PHONE_OTP_GRANT}, partner_id=partner.id
            )


async def test_bad_phone_and_missing_parameters(shop):
    bad = await shop.request_code("12345")
    assert bad.status_code == 400 and error_of(bad) == "invalid_request"
    assert "phone" in bad.json()["error_description"]
    missing = await shop.http.post("/oauth/otp", data={"client_id": shop.mini})
    assert missing.status_code == 400 and "phone" in missing.json()["error_description"]
    bad_login = await shop.exchange("99999", "123456")
    assert bad_login.status_code == 400 and error_of(bad_login) == "invalid_request"
    no_code = await shop.http.post(
        "/oauth/token",
        data={"grant_type": PHONE_OTP_GRANT, "client_id": shop.mini, "phone": PHONE},
    )
    assert no_code.status_code == 400 and "code" in no_code.json()["error_description"]
    assert shop.sms.sent == []


async def test_the_code_endpoint_shares_the_oauth_rate_limit(db, settings, wechat):
    shop = await open_shop(db, settings, wechat, oauth_rate_limit=3)
    try:
        phones = ["13600000001", "13600000002", "13600000003", "13600000004"]
        statuses = [(await shop.request_code(phone)).status_code for phone in phones]
        assert statuses == [200, 200, 200, 429]
        # The token endpoint counts against the same budget (failed logins included).
        limited = await shop.exchange(phones[0])
        assert limited.status_code == 429 and "retry-after" in limited.headers
    finally:
        await shop.http.aclose()


async def test_a_failed_sms_can_be_retried_at_once(shop):
    shop.app.state.oauth.members.sms = BrokenSender()
    failed = await shop.request_code()
    assert failed.status_code == 503 and error_of(failed) == "temporarily_unavailable"
    shop.app.state.oauth.members.sms = shop.sms
    assert (await shop.request_code()).status_code == 200
    assert (await shop.exchange()).status_code == 200


# --- which SMS sender ---------------------------------------------------------------------------


def test_there_is_no_sms_sender_unless_one_is_chosen():
    assert Settings().sms_sender == ""
    assert Settings.from_env({}).sms_sender == ""
    assert Settings.from_env({"QUDAO_SMS_SENDER": " Log "}).sms_sender == "log"


async def test_without_an_sms_sender_phone_login_is_off_and_the_rest_works(
    db, settings, wechat, issue_token
):
    assert settings.sms_sender == ""  # the tests' settings, like production's, name none
    shop = await open_shop(db, settings, wechat, record_sms=False)
    try:
        assert shop.app.state.oauth.members.sms is None
        # Asking for a code: 503 with the reason, and no Retry-After (retrying won't help).
        asked = await shop.request_code()
        assert asked.status_code == 503 and error_of(asked) == "temporarily_unavailable"
        assert "SMS is not configured" in asked.json()["error_description"]
        assert "retry-after" not in asked.headers
        # The phone grant says the same rather than "wrong code", and counts nothing.
        tried = await shop.exchange(code="123456")
        assert tried.status_code == 503 and "SMS is not configured" in tried.text
        # WeChat login, the member's API, staff tokens and health all work.
        wechat.login("code-1", openid="o-app1", unionid="u-person")
        token = await shop.wechat_login("wxapp1", "code-1")
        assert token.status_code == 200, token.text
        member = shop.as_member(token.json())
        try:
            assert (await member("{ viewer { kind } }")) == {"viewer": {"kind": "MEMBER"}}
        finally:
            await member.http.aclose()
        staff = await shop.http.post(
            "/graphql",
            json={"query": "{ partners(first: 5) { nodes { id } } }"},
            headers={"Authorization": f"Bearer {issue_token(Role.HQ_ADMIN)}"},
        )
        assert staff.status_code == 200 and staff.json()["data"]["partners"]["nodes"]
        assert (await shop.http.get("/healthz")).status_code == 200
    finally:
        await shop.close()


def log_sender_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "qudao.sms"]


async def test_the_log_sender_is_chosen_explicitly_and_warns_at_startup(
    db, settings, wechat, caplog
):
    with caplog.at_level(logging.INFO, logger="qudao.sms"):
        shop = await open_shop(db, settings, wechat, record_sms=False, sms_sender="log")
    try:
        assert isinstance(shop.app.state.oauth.members.sms, LogSender)
        (warning,) = [r for r in log_sender_records(caplog) if r.levelno >= logging.WARNING]
        assert "login codes are written to the log: development only" in warning.getMessage()
        assert "\n" not in warning.getMessage()  # one line, for whoever reads the startup log
    finally:
        await shop.close()


async def test_the_log_sender_writes_a_readable_line_without_an_indexed_code(
    db, settings, wechat, caplog
):
    shop = await open_shop(db, settings, wechat, record_sms=False, sms_sender="log")
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="qudao.sms"):
            assert (await shop.request_code()).status_code == 200
        (record,) = log_sender_records(caplog)
        assert record.levelno == logging.INFO
        message = record.getMessage()
        assert "138****8000" in message and PHONE not in message
        found = re.search(r"login code (\d{6}) ", message)
        assert found is not None, message
        code = found.group(1)
        # Only in the text: as a JSON line it has no field of its own (nor the phone).
        entry = json.loads(JsonFormatter().format(record))
        assert set(entry) <= {"ts", "level", "logger", "msg", "request_id"}
        assert (await shop.exchange(code=code)).status_code == 200
    finally:
        await shop.close()


# --- refresh tokens ---------------------------------------------------------------------------


async def test_member_refresh_rotates_and_reuse_revokes_the_login(shop):
    first = await shop.login()
    second = await shop.refresh(first["refresh_token"])
    assert second.status_code == 200, second.text
    second_token = second.json()
    assert second_token["refresh_token"] != first["refresh_token"]
    assert shop.claims(second_token)["sub"] == shop.claims(first)["sub"]
    assert shop.claims(second_token)["role"] == "member"
    assert set(second_token["scope"].split()) == MEMBER_SCOPES
    reused = await shop.refresh(first["refresh_token"])
    assert reused.status_code == 400 and error_of(reused) == "invalid_grant"
    # The whole login is gone: the successor too.
    assert (await shop.refresh(second_token["refresh_token"])).status_code == 400


async def test_member_refresh_follows_a_merge(db, settings, wechat):
    from api.customers.merge import merge_customers

    shop = await open_shop(db, settings, wechat, otp_resend_interval=0.05)
    try:
        token = await shop.login()
        merged_away = shop.claims(token)["customer_id"]
        survivor = shop.others["other"]
        async with db.transaction() as session:
            hq = Principal(subject="user:1", role=Role.HQ_ADMIN)
            await merge_customers(
                session, hq, survivor, [merged_away], dry_run=False, wiring=CUSTOMERS
            )
        refreshed = await shop.refresh(token["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert shop.claims(refreshed.json())["customer_id"] == survivor
        # And the phone, now the survivor's, logs in as the survivor.
        await asyncio.sleep(0.06)
        assert shop.claims(await shop.login())["customer_id"] == survivor
    finally:
        await shop.http.aclose()


async def test_revoking_a_member_refresh_token_ends_the_login(shop):
    token = await shop.login()
    revoked = await shop.http.post(
        "/oauth/revoke",
        data={
            "client_id": shop.mini,
            "token": token["refresh_token"],
            "token_type_hint": "refresh_token",
        },
    )
    assert revoked.status_code == 200
    assert (await shop.refresh(token["refresh_token"])).status_code == 400


# --- WeChat -----------------------------------------------------------------------------------


async def test_wechat_login_with_a_unionid(shop, db, wechat):
    wechat.login("code-1", openid="o-app1", unionid="u-person")
    response = await shop.wechat_login("wxapp1", "code-1")
    assert response.status_code == 200, response.text
    token = response.json()
    claims = shop.claims(token)
    assert claims["role"] == "member" and claims["sub"] == f"customer:{claims['customer_id']}"
    assert set(token["scope"].split()) == MEMBER_SCOPES and "refresh_token" in token
    assert await identities(db, claims["customer_id"]) == {
        ("wechat_unionid", "u-person"): None,
        ("wechat_openid", "wxapp1:o-app1"): "u-person",
    }
    (sent,) = wechat.requests
    assert sent == {
        "path": "/sns/jscode2session",
        "appid": "wxapp1",
        "secret": "secret-one",
        "js_code": "code-1",
        "grant_type": "authorization_code",
    }


async def test_wechat_login_without_a_unionid(shop, db, wechat):
    wechat.login("code-1", openid="o-app1")
    response = await shop.wechat_login("wxapp1", "code-1")
    assert response.status_code == 200, response.text
    customer_id = shop.claims(response.json())["customer_id"]
    assert await identities(db, customer_id) == {("wechat_openid", "wxapp1:o-app1"): None}
    # The same openid again: the same customer.
    wechat.login("code-2", openid="o-app1")
    again = await shop.wechat_login("wxapp1", "code-2")
    assert shop.claims(again.json())["customer_id"] == customer_id


async def test_one_unionid_from_two_apps_is_one_customer(shop, db, wechat):
    wechat.login("in-app-1", openid="o-app1", unionid="u-person")
    wechat.login("in-app-2", openid="o-app2", unionid="u-person")
    first = await shop.wechat_login("wxapp1", "in-app-1")
    second = await shop.wechat_login("wxapp2", "in-app-2")
    customer_id = shop.claims(first.json())["customer_id"]
    assert shop.claims(second.json())["customer_id"] == customer_id
    assert await identities(db, customer_id) == {
        ("wechat_unionid", "u-person"): None,
        ("wechat_openid", "wxapp1:o-app1"): "u-person",
        ("wechat_openid", "wxapp2:o-app2"): "u-person",
    }


async def test_concurrent_first_logins_from_two_apps_with_one_unionid_make_one_customer(
    shop, db, wechat
):
    wechat.login("in-app-1", openid="o-app1", unionid="u-person")
    wechat.login("in-app-2", openid="o-app2", unionid="u-person")
    responses = await asyncio.gather(
        shop.wechat_login("wxapp1", "in-app-1"), shop.wechat_login("wxapp2", "in-app-2")
    )
    assert [r.status_code for r in responses] == [200, 200]
    ids = {shop.claims(r.json())["customer_id"] for r in responses}
    assert len(ids) == 1
    assert len(await identities(db, ids.pop())) == 3


async def test_a_unionid_and_openid_of_two_customers_log_in_as_the_apps_customer(shop, db, wechat):
    wechat.login("early", openid="o-app1")  # before the app was linked to the open platform
    wechat.login("other-app", openid="o-app2", unionid="u-person")
    wechat.login("later", openid="o-app1", unionid="u-person")
    app1_customer = shop.claims((await shop.wechat_login("wxapp1", "early")).json())["customer_id"]
    app2_customer = shop.claims((await shop.wechat_login("wxapp2", "other-app")).json())[
        "customer_id"
    ]
    assert app1_customer != app2_customer
    later = await shop.wechat_login("wxapp1", "later")
    assert later.status_code == 200, later.text
    assert shop.claims(later.json())["customer_id"] == app1_customer
    # The hint on the openid lets duplicate detection propose merging the two.
    assert (await identities(db, app1_customer))[("wechat_openid", "wxapp1:o-app1")] == "u-person"


async def test_an_invalid_wechat_code_is_invalid_grant(shop, wechat):
    response = await shop.wechat_login("wxapp1", "not-a-code")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "WeChat refused the login code (40029: the code is invalid).",
    }
    wechat.answers["used"] = Answer({"errcode": 40163, "errmsg": "code been used"})
    used = await shop.wechat_login("wxapp1", "used")
    assert error_of(used) == "invalid_grant" and "40163" in used.json()["error_description"]


@pytest.mark.parametrize(
    ("answer", "description"),
    [
        (Answer({"errcode": -1, "errmsg": "system error"}), "busy"),
        (Answer("<html>bad gateway</html>", status=502), "HTTP 502"),
        (Answer("not json at all"), "not JSON"),
        (Answer({"session_key": "k"}), "without an openid"),
        (Answer({"openid": "o"}, delay=5.0), "in time"),
    ],
    ids=["busy", "http-502", "not-json", "no-openid", "slow"],
)
async def test_wechat_trouble_is_temporarily_unavailable(shop, wechat, answer, description):
    wechat.answers["c"] = answer
    started = time.monotonic()
    response = await shop.wechat_login("wxapp1", "c")
    assert time.monotonic() - started < 3.0  # the 0.5 s timeout, not the 5 s server
    assert response.status_code == 503
    assert error_of(response) == "temporarily_unavailable"
    assert description in response.json()["error_description"]
    assert int(response.headers["retry-after"]) > 0


async def test_wechat_down_is_temporarily_unavailable(db, settings, wechat):
    shop = await open_shop(db, settings, wechat)
    wechat.stop()  # nothing listens on that port any more
    try:
        response = await shop.wechat_login("wxapp1", "c")
        assert response.status_code == 503
        assert response.json()["error_description"] == "WeChat could not be reached."
    finally:
        await shop.http.aclose()


async def test_a_wrong_app_secret_is_a_server_problem_not_the_members(db, settings, wechat, caplog):
    wechat.apps["wxapp1"] = "rotated-secret"  # WeChat now wants another secret than ours
    wechat.login("c", openid="o")
    response = await (shop := await open_shop(db, settings, wechat)).wechat_login("wxapp1", "c")
    await shop.http.aclose()
    assert response.status_code == 503
    assert "misconfigured" in response.json()["error_description"]
    assert any("QUDAO_WECHAT_APPS" in r.getMessage() for r in caplog.records)


async def test_an_unknown_appid_is_refused_without_asking_wechat(shop, wechat):
    response = await shop.wechat_login("wx-unknown", "c")
    assert response.status_code == 400 and error_of(response) == "invalid_request"
    assert wechat.requests == []


async def test_neither_the_app_secret_nor_the_session_key_is_logged(shop, wechat, caplog):
    wechat.login("code-1", openid="o-app1", unionid="u-person")
    with caplog.at_level(logging.DEBUG):
        assert (await shop.wechat_login("wxapp1", "code-1")).status_code == 200
        await shop.wechat_login("wxapp1", "bad-code")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in logged  # httpx's line is there, redacted
    for secret in ("secret-one", "SESSION-KEY", "code-1"):
        assert secret not in logged


async def test_the_seeded_mini_program_logs_members_in(db, settings, wechat):
    from api.seed import MINIPROGRAM_CLIENT_ID, seed_demo

    seeded = await seed_demo(db, WIRING)
    assert seeded is not None and seeded.miniprogram_client_id == MINIPROGRAM_CLIENT_ID
    app = create_app(shop_settings(settings, wechat), db=db, cache=InProcessCache())
    sms = RecordingSender()
    app.state.oauth.members.sms = sms
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        sent = await http.post(
            "/oauth/otp", data={"client_id": MINIPROGRAM_CLIENT_ID, "phone": PHONE}
        )
        assert sent.status_code == 200
        token = await http.post(
            "/oauth/token",
            data={
                "grant_type": PHONE_OTP_GRANT,
                "client_id": MINIPROGRAM_CLIENT_ID,
                "phone": PHONE,
                "code": sms.last(PHONE),
            },
        )
        assert token.status_code == 200, token.text
        assert "refresh_token" in token.json()


# --- the pieces on their own ------------------------------------------------------------------


@pytest_asyncio.fixture(
    params=[pytest.param("memory", id="in-process"), pytest.param("redis", id="redis")]
)
async def otp_cache(request) -> AsyncIterator[tuple[Cache, Cache]]:
    """Two handles on one cache: two API processes sharing a Redis (or one process)."""
    if request.param == "memory":
        cache = InProcessCache()
        yield cache, cache
        return
    if not REDIS_URL:
        service_missing("Redis", "set QUDAO_TEST_REDIS_URL")
    import uuid

    prefix = f"qudao-test:{uuid.uuid4().hex}:"
    caches = (RedisCache(REDIS_URL, prefix), RedisCache(REDIS_URL, prefix))
    yield caches
    for cache in caches:
        await cache.close()


async def test_one_code_is_taken_once_across_processes(otp_cache):
    secret = b"k" * 32
    policy = OtpPolicy(max_attempts=20, failure_limit=100)  # only the single use decides
    one, two = (OtpCodes(cache, secret, policy) for cache in otp_cache)
    issued = await one.issue(PHONE, "mini")
    verdicts = await asyncio.gather(
        *(codes.verify(PHONE, "mini", issued.code, address="a") for codes in [one, two] * 10)
    )
    assert sorted(v.value for v in verdicts) == ["accepted"] + ["used"] * 19


async def test_concurrent_guesses_get_at_most_the_allowed_attempts(otp_cache):
    secret = b"k" * 32
    policy = OtpPolicy(failure_limit=100, address_failure_limit=100)
    one, two = (OtpCodes(cache, secret, policy) for cache in otp_cache)
    issued = await one.issue(PHONE, "mini")
    guesses = [f"{n:06d}" for n in range(30) if f"{n:06d}" != issued.code][:20]
    verdicts = await asyncio.gather(
        *(
            codes.verify(PHONE, "mini", g, address="a")
            for codes, g in zip([one, two] * 10, guesses, strict=True)
        )
    )
    assert sum(v is Verdict.WRONG for v in verdicts) == 4
    assert sum(v is Verdict.EXHAUSTED for v in verdicts) == 16
    assert await one.verify(PHONE, "mini", issued.code, address="a") is Verdict.EXHAUSTED


async def test_only_attempts_on_a_live_code_count_toward_the_phones_lockout(otp_cache):
    one, two = (
        OtpCodes(
            cache,
            b"k" * 32,
            OtpPolicy(failure_limit=2, address_failure_limit=1000, resend_interval=0.01),
        )
        for cache in otp_cache
    )
    # No code: any number of guesses, from both processes, moves nothing for the phone.
    for codes in [one, two] * 10:
        assert await codes.verify(PHONE, "mini", "123456", address="a") is Verdict.MISSING
    issued = await one.issue(PHONE, "mini")
    assert await two.verify(PHONE, "mini", issued.code, address="b") is Verdict.ACCEPTED
    # A used code is not live: guessing at it neither locks the phone ...
    for codes in [one, two] * 5:
        assert await codes.verify(PHONE, "mini", "123456", address="a") is Verdict.USED
    # ... nor stops its next code; wrong tries on a live code are what count.
    await asyncio.sleep(0.02)
    issued = await two.issue(PHONE, "mini")
    wrong = f"{(int(issued.code) + 1) % 1_000_000:06d}"
    assert await one.verify(PHONE, "mini", wrong, address="a") is Verdict.WRONG
    assert await two.verify(PHONE, "mini", issued.code, address="b") is Verdict.ACCEPTED


async def test_an_address_limit_is_shared_by_processes(otp_cache):
    one, two = (
        OtpCodes(cache, b"k" * 32, OtpPolicy(address_failure_limit=3)) for cache in otp_cache
    )
    phones = ["13600000001", "13600000002", "13600000003"]
    for codes, phone in zip([one, two, one], phones, strict=True):
        assert await codes.verify(phone, "mini", "123456", address="a") is Verdict.MISSING
    with pytest.raises(OtpLocked) as locked:
        await two.verify("13600000004", "mini", "123456", address="a")
    assert 0 < locked.value.retry_after <= OtpPolicy().failure_window
    # Another address is not affected, and the refused address's guess spent no try.
    issued = await one.issue(PHONE, "mini")
    with pytest.raises(OtpLocked):
        await one.verify(PHONE, "mini", issued.code, address="a")
    assert await two.verify(PHONE, "mini", issued.code, address="b") is Verdict.ACCEPTED


async def test_the_cache_holds_neither_the_code_nor_the_phone():
    cache = InProcessCache()
    issued = await OtpCodes(cache, b"k" * 32).issue(PHONE, "mini")
    stored = {key: entry.value for key, entry in cache._data.items()}
    text = repr(stored)
    assert issued.code not in text and PHONE not in text


def test_an_unknown_sms_sender_stops_the_app_at_startup():
    settings = Settings.from_env(
        {"QUDAO_SMS_SENDER": "carrier-pigeon", "QUDAO_JWT_KEYS": KeyRing.generate().to_json()}
    )
    with pytest.raises(ValueError, match="carrier-pigeon"):
        create_app(settings, cache=InProcessCache())


def test_wechat_apps_come_from_the_environment_and_stay_out_of_repr():
    settings = Settings.from_env(
        {
            "QUDAO_WECHAT_APPS": "wxa:secret-a, wxb:secret-b",
            "QUDAO_WECHAT_API_BASE": "http://wechat.internal",
        }
    )
    assert settings.wechat_apps == (("wxa", "secret-a"), ("wxb", "secret-b"))
    assert settings.wechat_api_base == "http://wechat.internal"
    assert "secret-a" not in repr(settings)
    for bad in ("wxa", "wxa:", "wxa:s,wxa:t"):
        with pytest.raises(ValueError, match="QUDAO_WECHAT_APPS"):
            Settings.from_env({"QUDAO_WECHAT_APPS": bad})
