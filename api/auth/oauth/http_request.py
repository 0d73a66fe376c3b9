"""authlib's framework hooks for Starlette: the request as authlib reads it."""

from __future__ import annotations

import base64
from collections import defaultdict
from urllib.parse import unquote, urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request

from api.settings import Settings
from api.text import check_texts


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


class OAuthHttpRequest(OAuth2Request):
    def __init__(self, request: Request, form: FormData | None, settings: Settings) -> None:
        uri = str(request.url)
        if not settings.oauth_require_https:
            # TLS ends at the load balancer in most deployments; authlib would refuse http.
            uri = urlunsplit(urlsplit(uri)._replace(scheme="https"))
        super().__init__(request.method, uri, headers=request.headers)  # case-insensitive
        # The caller's address, as rate_limited sees it: grants limit failures per address.
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


async def read_oauth_request(request: Request) -> OAuthHttpRequest:
    """The request as authlib reads it, once its text is known to be text: a NUL in a client
    id or a code reached PostgreSQL (a 500) before. UnreadableText is a 400 (app.py)."""
    form = await request.form() if request.method == "POST" else None
    oauth_request = OAuthHttpRequest(request, form, request.app.state.settings)
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
