"""Pickup codes (取货码): six digits the member shows at the store, and a signed QR payload that
carries the order and the code so a scan needs no typing and cannot be forged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from api.auth.keys import KeyRing

CODE_DIGITS = 6
_PREFIX = "qdp1"


def new_pickup_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def is_pickup_code(text: str) -> bool:
    return len(text) == CODE_DIGITS and text.isascii() and text.isdigit()


def pickup_secret(keys: KeyRing) -> bytes:
    """Shared by every process (all sign with the same key), apart from the signing use. A key
    rotation voids QR payloads in flight; the six digits keep working."""
    private = str(keys.signing_key.as_dict(private=True)["d"]).encode()
    return hmac.new(b"qudao/pickup/v1", private, hashlib.sha256).digest()


def request_pickup_secret(ctx: Any) -> bytes:
    """The pickup secret for a GraphQL context: from the app's key ring, loaded once at
    startup (what signs members' QR payloads); a context outside a request (a job) loads
    the settings' own."""
    request = ctx.request
    return pickup_secret(request.app.state.keys if request is not None else ctx.settings.key_ring())


def _mac(secret: bytes, order_id: int, code: str) -> str:
    digest = hmac.new(secret, f"{order_id}.{code}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def qr_payload(secret: bytes, order_id: int, code: str) -> str:
    """``qdp1.<order id>.<code>.<mac>``: what the member's QR code encodes."""
    return f"{_PREFIX}.{order_id}.{code}.{_mac(secret, order_id, code)}"


def parse_qr_payload(secret: bytes, payload: str) -> tuple[int, str] | None:
    """(order id, code) from a genuine payload; None for anything else."""
    parts = payload.strip().split(".")
    if len(parts) != 4 or parts[0] != _PREFIX or not parts[1].isdigit() or len(parts[1]) > 18:
        return None
    order_id, code, mac = int(parts[1]), parts[2], parts[3]
    if not is_pickup_code(code):
        return None
    if not hmac.compare_digest(mac, _mac(secret, order_id, code)):
        return None
    return order_id, code
