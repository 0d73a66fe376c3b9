"""Hashing of what clients and users hand us."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_passwords = PasswordHasher()
# Verified against when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = _passwords.hash("qudao-timing-equalizer")


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        # True or raises. Without a hash the dummy one is checked, so that an unknown email
        # takes as long as a wrong password, and still fails.
        _passwords.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return bool(password_hash)


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """SHA-256 of a high-entropy random value (client secret, refresh token, code).

    Argon2 is for low-entropy passwords; a 256-bit random secret cannot be brute-forced, and
    the token endpoint should not spend 50 ms per call on it.
    """
    return hashlib.sha256(value.encode()).hexdigest()


def digest_matches(stored: str | None, given: str) -> bool:
    return stored is not None and hmac.compare_digest(stored, digest(given))
