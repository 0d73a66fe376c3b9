"""Coupon codes: how one is drawn, and how one typed or scanned is read back."""

from __future__ import annotations

import re
import secrets

# Codes: no 0/O, 1/I/L look-alikes, so one read aloud or typed from a receipt is unambiguous.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 16  # 31**16 ≈ 2**79: not guessable, and a collision is retried anyway
_CODE_INPUT = re.compile(rf"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """A code as typed or scanned (any case, spaces or dashes between groups) → canonical;
    None when it cannot be a code at all."""
    code = re.sub(r"[\s-]", "", raw).upper()
    return code if _CODE_INPUT.fullmatch(code) else None
