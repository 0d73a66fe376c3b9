"""WeChat mini-program login: exchange a ``wx.login()`` code for the user's openid/unionid.

``GET {base}/sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code``
(WeChat's ``code2session``). The base URL is a setting, so tests (and a staging mock) point
it at their own server. WeChat answers HTTP 200 with either the session or an ``errcode``.

The answer's ``session_key`` (the key that decrypts the user's data) is dropped at once and
never logged or stored: login needs only who the user is. The app secret travels in the query
string, as WeChat requires, so httpx's request log line is redacted below.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

# The grant that exchanges an appid and a wx.login() code for a member token.
GRANT_TYPE = "urn:qudao:params:oauth:grant-type:wechat"

log = logging.getLogger("qudao.wechat")

_SECRET_PARAMS = ("secret", "js_code")

# WeChat error codes that mean "try again later" rather than "this code is no good".
_TRANSIENT = {-1: "WeChat is busy", 45011: "WeChat rate-limited this user"}
# Ours to fix (a wrong appid or secret in QUDAO_WECHAT_APPS): logged loudly.
_MISCONFIGURED = {40013: "invalid appid", 40125: "invalid app secret", 40164: "IP not allowed"}
_REFUSED = {
    40029: "the code is invalid",
    40163: "the code was already used",
    40226: "WeChat flagged this user as high risk",
}


class _RedactSecrets(logging.Filter):
    """httpx logs every request's URL at INFO; never with the app secret or the user's code."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_redact(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _redact(url: httpx.URL) -> httpx.URL:
    for name in _SECRET_PARAMS:
        if name in url.params:
            url = url.copy_set_param(name, "***")
    return url


_REDACTOR = _RedactSecrets()
logging.getLogger("httpx").addFilter(_REDACTOR)  # addFilter ignores a second add


@dataclass(frozen=True, slots=True)
class WeChatUser:
    """Who a login code belongs to. Deliberately without the session key."""

    appid: str
    openid: str
    unionid: str | None


class WeChatRefused(Exception):
    """WeChat refused the code (invalid, used, risky user): the client must get a new one."""

    def __init__(self, errcode: int, reason: str) -> None:
        super().__init__(f"WeChat refused the login code ({errcode}: {reason}).")
        self.errcode = errcode


class WeChatUnavailable(Exception):
    """WeChat could not be asked (network, timeout, busy, unexpected answer); retry later."""


class WeChatClient:
    def __init__(
        self,
        base_url: str,
        apps: Mapping[str, str],
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._apps = dict(apps)
        self.timeout = timeout
        self._transport = transport

    def knows(self, appid: str) -> bool:
        return appid in self._apps

    async def code2session(self, appid: str, code: str) -> WeChatUser:
        """Who ``code`` (from wx.login() in app ``appid``) belongs to.

        WeChatRefused when WeChat says the code is no good, WeChatUnavailable when it could
        not be asked or answered nonsense. KeyError for an appid without a configured secret.
        """
        params = {
            "appid": appid,
            "secret": self._apps[appid],
            "js_code": code,
            "grant_type": "authorization_code",
        }
        # A client per call: logins are rare next to API calls, and a client bound to no
        # event loop cannot outlive one (tests run many).
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, transport=self._transport
        ) as http:
            try:
                response = await http.get("/sns/jscode2session", params=params)
            except httpx.TimeoutException:
                log.warning("code2session timed out after %.1f s", self.timeout)
                raise WeChatUnavailable("WeChat did not answer in time.") from None
            except httpx.HTTPError as error:
                log.warning("code2session failed: %s", type(error).__name__)
                raise WeChatUnavailable("WeChat could not be reached.") from None
        if response.status_code != 200:
            log.warning("code2session answered HTTP %d", response.status_code)
            raise WeChatUnavailable(f"WeChat answered HTTP {response.status_code}.")
        try:
            # WeChat sends JSON, not always labelled application/json.
            body: Any = response.json()
        except ValueError:
            raise WeChatUnavailable("WeChat answered something that is not JSON.") from None
        if not isinstance(body, dict):
            raise WeChatUnavailable("WeChat answered something unexpected.")
        return self._user(appid, body)

    @staticmethod
    def _user(appid: str, body: dict[str, Any]) -> WeChatUser:
        errcode = body.get("errcode") or 0
        if errcode:
            errcode = int(errcode) if str(errcode).lstrip("-").isdigit() else -1
            # errmsg is WeChat's text (no secrets); session_key is never read, let alone logged.
            errmsg = str(body.get("errmsg") or "")[:200]
            if errcode in _MISCONFIGURED:
                log.error(
                    "code2session: %s (%d %s); check QUDAO_WECHAT_APPS for %s",
                    _MISCONFIGURED[errcode],
                    errcode,
                    errmsg,
                    appid,
                )
                raise WeChatUnavailable("WeChat login is misconfigured on the server.")
            if errcode in _TRANSIENT:
                log.warning("code2session: %s (%d)", _TRANSIENT[errcode], errcode)
                raise WeChatUnavailable(f"{_TRANSIENT[errcode]}; try again shortly.")
            raise WeChatRefused(errcode, _REFUSED.get(errcode) or errmsg or "refused")
        openid, unionid = body.get("openid"), body.get("unionid")
        if not isinstance(openid, str) or not openid:
            raise WeChatUnavailable("WeChat answered without an openid.")
        if unionid is not None and (not isinstance(unionid, str) or not unionid):
            unionid = None
        return WeChatUser(appid=appid, openid=openid, unionid=unionid)


def parse_apps(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"wxappid1:secret1,wxappid2:secret2"`` → pairs; ValueError on a malformed entry."""
    apps: list[tuple[str, str]] = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        appid, sep, secret = entry.partition(":")
        if not sep or not appid.strip() or not secret.strip():
            raise ValueError("QUDAO_WECHAT_APPS is 'appid:secret' pairs separated by commas")
        apps.append((appid.strip(), secret.strip()))
    if len({appid for appid, _ in apps}) != len(apps):
        raise ValueError("QUDAO_WECHAT_APPS names an appid twice")
    return tuple(apps)
