"""Identity values (phone, email, WeChat, WeCom, marketplace buyer ids): their canonical form,
the one stored and compared."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

from api.customers.errors import CustomerErrorCode
from api.customers.models import IdentityKind
from api.errors import DomainError, Problem


class Marketplace(enum.Enum):
    TMALL = "tmall"
    JD = "jd"
    DOUYIN = "douyin"
    PDD = "pdd"
    OTHER = "other"


# Mainland mobile numbers: 11 digits, 1 then 3-9 (13x ... 19x).
_MOBILE = re.compile(r"1[3-9]\d{9}")
_PHONE_NOISE = re.compile(r"[\s\-()（）.]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# WeChat/WeCom/marketplace ids are opaque ASCII tokens.
_TOKEN = re.compile(r"[A-Za-z0-9_\-=.]{1,64}")
_APPID = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_BUYER_ID = re.compile(r"[^\s:]{1,150}")


MAX_IDENTITIES_PER_CALL = 20


class IdentityError(ValueError):
    """A value that is not a valid identity of its kind (the message says why)."""


def normalize_phone(raw: str) -> str:
    """``+86 138-0013-8000`` → ``13800138000``; IdentityError unless a mainland mobile."""
    digits = _PHONE_NOISE.sub("", raw.strip())
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
            break
    else:
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
    if not _MOBILE.fullmatch(digits):
        raise IdentityError(
            f"Not a mainland mobile number: {raw!r} (11 digits starting with 1, optional +86)."
        )
    return digits


def normalize_email(raw: str) -> str:
    value = raw.strip().lower()
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise IdentityError(f"Not an email address: {raw!r}.")
    return value


def _blank(raw: object) -> bool:
    """Not a string with something in it (callers outside the type checker pass anything)."""
    return not isinstance(raw, str) or not raw.strip()


def normalize_identity(kind: IdentityKind, raw: str) -> str:
    """The canonical form of an identity value, the one stored and compared."""
    if _blank(raw):
        raise IdentityError("An identity value must not be blank.")
    value = raw.strip()
    if kind is IdentityKind.PHONE:
        return normalize_phone(value)
    if kind is IdentityKind.EMAIL:
        return normalize_email(value)
    if kind in (IdentityKind.WECHAT_UNIONID, IdentityKind.WECOM_EXTERNAL_USERID):
        if not _TOKEN.fullmatch(value):
            raise IdentityError(f"Not a {kind.value}: {raw!r} (up to 64 letters and digits).")
        return value
    if kind is IdentityKind.WECHAT_OPENID:
        appid, sep, openid = value.partition(":")
        if not sep or not _APPID.fullmatch(appid) or not _TOKEN.fullmatch(openid):
            raise IdentityError(
                f"A WeChat openid is written '<appid>:<openid>' (per app); got {raw!r}."
            )
        return f"{appid}:{openid}"
    if kind is IdentityKind.MARKETPLACE_BUYER:
        market, sep, buyer = value.partition(":")
        names = ", ".join(m.value for m in Marketplace)
        try:
            marketplace = Marketplace(market.strip().lower())
        except ValueError:
            raise IdentityError(
                f"A marketplace buyer id is written '<marketplace>:<buyer id>' with the "
                f"marketplace one of {names}; got {raw!r}."
            ) from None
        buyer = buyer.strip()
        if not sep or not _BUYER_ID.fullmatch(buyer):
            raise IdentityError(
                f"A marketplace buyer id is written '<marketplace>:<buyer id>'; got {raw!r}."
            )
        return f"{marketplace.value}:{buyer}"
    raise IdentityError(f"Unknown identity kind {kind!r}.")  # pragma: no cover


def normalize_identities(
    identities: Sequence[tuple[IdentityKind, str]], path: str = "identities"
) -> list[tuple[IdentityKind, str]]:
    """Normalized, deduplicated (first occurrence kept); DomainError listing every bad one."""
    problems: list[Problem] = []
    result: list[tuple[IdentityKind, str]] = []
    if len(identities) > MAX_IDENTITIES_PER_CALL:
        raise DomainError.one(
            CustomerErrorCode.INVALID,
            f"At most {MAX_IDENTITIES_PER_CALL} identities at once.",
            path,
        )
    for index, (kind, raw) in enumerate(identities):
        try:
            value = normalize_identity(kind, raw)
        except IdentityError as error:
            problems.append(
                Problem(CustomerErrorCode.INVALID_IDENTITY, str(error), (path, str(index), "value"))
            )
            continue
        if (kind, value) not in result:
            result.append((kind, value))
    if problems:
        raise DomainError(problems)
    return result
