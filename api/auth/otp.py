"""One-time login codes for members' phones, kept in the cache.

A code is six digits: cheap to guess offline, so what the cache holds is an HMAC keyed by a
server secret (derived from the token signing key), never the code, and cache keys name a
keyed hash of the phone, never the number. Guessing online is bounded five ways: a code
expires (5 min), it survives at most ``max_attempts`` verifications, a phone gets a new code
at most every ``resend_interval`` and ``hourly_limit`` times an hour, a phone with too many
failed verifications of its codes in a window is locked for a while (like staff logins),
and a client address with too many failed verifications (of any phones) is refused for a
while.

The phone's lockout counts only attempts against a code that was issued to that phone and
is live (not expired, burned or used): a stranger guessing at a phone that asked for no code
gets ``MISSING`` and moves no counter of that phone, so they cannot lock its owner out. The
address limit is what stops one caller spraying guesses across many phones.

Every step uses the cache's atomic counter (``hit``), which is atomic on both backends and
across processes sharing a Redis: a resend within the interval, the n-th attempt, and the
single use of a code ("taken" exactly once, so two concurrent logins with one code cannot
both win) are all decided by the count a caller gets back.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

from api.auth.keys import KeyRing
from api.cache import Cache

# The grant that exchanges a phone and a code for a member token (an extension grant, RFC
# 6749 section 4.5, so it is named by a URI).
GRANT_TYPE = "urn:qudao:params:oauth:grant-type:phone-otp"

CODE_DIGITS = 6
_CODE = re.compile(rf"\d{{{CODE_DIGITS}}}")
_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class OtpPolicy:
    ttl: float = 300.0  # a code is valid this long
    resend_interval: float = 60.0  # a phone gets a new code at most this often
    hourly_limit: int = 10  # codes per phone per hour
    max_attempts: int = 5  # verifications of one code; the last wrong one burns it
    failure_limit: int = 10  # verifications of live codes per phone per window (success resets)
    failure_window: float = 900.0
    # Failed verifications per client address per failure window, whatever the phones. A
    # member mistypes a few times; a carrier NAT shares an address among many members, so
    # this sits well above one person's mistakes and far below what guessing needs.
    address_failure_limit: int = 20


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"  # not the code; attempts remain
    EXHAUSTED = "exhausted"  # too many wrong attempts: the code is burned
    USED = "used"  # the right code, but already used for a login
    MISSING = "missing"  # no code for that phone: never requested, or expired


class OtpThrottled(Exception):
    """Too soon for another code for this phone (or its hourly budget is spent)."""

    def __init__(self, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OtpLocked(Exception):
    """Too many failed verifications for this phone, or from this client address; try again
    after ``retry_after``."""

    def __init__(self, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def secret_from_keys(keys: KeyRing) -> bytes:
    """A secret every process shares (they all sign with the same key), kept apart from the
    signing use by hashing it under its own label. A key rotation voids codes in flight:
    they live 5 minutes, and the member asks for a new one."""
    private = str(keys.signing_key.as_dict(private=True)["d"]).encode()
    return hmac.new(b"qudao/otp/v1", private, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    expires_in: int
    resend_after: int


class OtpCodes:
    def __init__(self, cache: Cache, secret: bytes, policy: OtpPolicy | None = None) -> None:
        self.cache = cache
        self._secret = secret
        self.policy = policy or OtpPolicy()

    def _mac(self, message: str) -> str:
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def _phone_key(self, phone: str) -> str:
        return self._mac(f"phone|{phone}")[:32]

    def _code_mac(self, nonce: str, phone: str, client_id: str, code: str) -> str:
        # Bound to the phone and the client that asked for it: a code sent for one app
        # does not log in through another.
        return self._mac(f"code|{nonce}|{phone}|{client_id}|{code}")

    async def issue(self, phone: str, client_id: str) -> IssuedCode:
        """A new code for ``phone`` (normalized), replacing any earlier one.

        OtpThrottled within the resend interval or over the hourly limit.
        """
        policy = self.policy
        key = self._phone_key(phone)
        count, reset = await self.cache.hit(f"otp:resend:{key}", policy.resend_interval)
        if count > 1:
            raise OtpThrottled(reset, "A code was sent to this phone just now; wait to resend.")
        count, reset = await self.cache.hit(f"otp:hourly:{key}", _HOUR)
        if count > policy.hourly_limit:
            raise OtpThrottled(reset, "Too many codes for this phone; try again later.")
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        # A fresh nonce per code: its attempt and use counters start from zero.
        nonce = secrets.token_hex(16)
        record = {"n": nonce, "h": self._code_mac(nonce, phone, client_id, code)}
        await self.cache.set(f"otp:code:{key}", json.dumps(record), ttl=policy.ttl)
        return IssuedCode(code, round(policy.ttl), round(policy.resend_interval))

    async def withdraw(self, phone: str) -> None:
        """Forget the code just issued (it could not be delivered) so the member may ask
        again at once. The hourly count stays spent: a failing gateway is not a free retry."""
        key = self._phone_key(phone)
        await self.cache.delete(f"otp:code:{key}")
        await self.cache.delete(f"otp:resend:{key}")

    async def verify(self, phone: str, client_id: str, code: str, *, address: str) -> Verdict:
        """Check ``code`` for ``phone`` and use it up when right. OtpLocked when the client
        ``address`` has failed too often, or the phone's live codes were guessed at too often.

        Every answer but ACCEPTED, a phone's lockout included, is one failure of the address.
        The address is checked before and charged after, so members' successful logins from
        a shared address cost nothing; concurrent guesses can overshoot the limit only by the
        requests in flight, which the OAuth endpoints' per-address request limit bounds.
        """
        policy = self.policy
        address_key = f"otp:address-failures:{self._mac(f'address|{address}')[:32]}"
        failed = await self.cache.get(address_key)
        if failed is not None and int(failed) >= policy.address_failure_limit:
            # Over the limit already: one more count changes nothing but tells the window.
            _, reset = await self.cache.hit(address_key, policy.failure_window)
            raise OtpLocked(reset, "Too many wrong codes from this address; try again later.")
        try:
            verdict = await self._check(phone, client_id, code)
        except OtpLocked:
            await self.cache.hit(address_key, policy.failure_window)
            raise
        if verdict is not Verdict.ACCEPTED:
            await self.cache.hit(address_key, policy.failure_window)
        return verdict

    async def _check(self, phone: str, client_id: str, code: str) -> Verdict:
        """The verdict on ``code``; OtpLocked after too many attempts on the phone's codes.

        Each attempt on a live code is counted *before* the comparison, so concurrent
        guesses cannot slip past the limits; of concurrent attempts with the right code
        exactly one gets ACCEPTED, the others USED.
        """
        policy = self.policy
        key = self._phone_key(phone)
        raw = await self.cache.get(f"otp:code:{key}")
        if raw is None:
            # Nothing was sent (or it expired): a guess, not a failure of the phone's owner.
            return Verdict.MISSING
        record = json.loads(raw)
        nonce: str = record["n"]
        if await self.cache.get(f"otp:taken:{nonce}") is not None:
            return Verdict.USED  # no longer live: guessing at it is not the owner's failure
        tries, _ = await self.cache.hit(f"otp:tries:{nonce}", policy.ttl)
        if tries > policy.max_attempts:
            return Verdict.EXHAUSTED  # burned, so no longer live either
        # An attempt on the phone's live code: this is what may lock the phone.
        failures, reset = await self.cache.hit(f"otp:failures:{key}", policy.failure_window)
        if failures > policy.failure_limit:
            raise OtpLocked(reset, "Too many wrong codes for this phone; try again later.")
        given = code.strip()
        # Compare MACs in constant time; a malformed code still goes through the same path.
        expected = self._code_mac(nonce, phone, client_id, given if _CODE.fullmatch(given) else "")
        if not hmac.compare_digest(record["h"], expected) or not _CODE.fullmatch(given):
            return Verdict.EXHAUSTED if tries >= policy.max_attempts else Verdict.WRONG
        taken, _ = await self.cache.hit(f"otp:taken:{nonce}", policy.ttl)
        if taken > 1:
            return Verdict.USED
        await self.cache.delete(f"otp:failures:{key}")
        return Verdict.ACCEPTED
