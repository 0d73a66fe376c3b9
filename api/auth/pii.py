"""Masking of personal data for callers without the ``pii:read`` scope."""

from __future__ import annotations

PII_SCOPE = "pii:read"


def mask_phone(phone: str | None) -> str | None:
    """13812341234 → 138****1234 (the form people recognise from Chinese apps)."""
    if not phone:
        return phone
    digits = phone.replace(" ", "").replace("-", "")
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * max(0, len(digits) - 2) + digits[-2:]


def mask_email(email: str | None) -> str | None:
    """wang.li@example.com → w***@example.com"""
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"
