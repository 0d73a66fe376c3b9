"""Delivery of login codes by SMS, behind one small interface.

Which sender runs is a setting (``QUDAO_SMS_SENDER``). Unset means none: phone login is off
(``POST /oauth/otp`` answers 503 saying SMS is not configured) and the rest of the app runs.
``log`` must be chosen explicitly and is for development only: it writes each code to the
log instead of sending it, so anyone who reads the logs could log in as any member. A real
gateway is one more class here and one more name in ``SENDERS``; an unknown name stops the
app at startup rather than failing the first member who asks for a code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from api.auth.pii import mask_phone

if TYPE_CHECKING:
    from api.settings import Settings

log = logging.getLogger("qudao.sms")


class SmsError(Exception):
    """The gateway did not accept the message (the member may ask again at once)."""


class SmsSender(Protocol):
    async def send_code(self, phone: str, code: str, *, expires_in: int) -> None:
        """Deliver ``code`` to ``phone`` (normalized); SmsError when it cannot."""


class LogSender:
    """Development only: the code goes to the log (logger ``qudao.sms``), nothing is sent.

    Built once at startup, where it says so loudly. Each code is logged at INFO inside the
    message text only, never as a structured field a log shipper would index and make
    searchable; the phone is masked."""

    def __init__(self) -> None:
        log.warning("QUDAO_SMS_SENDER=log: login codes are written to the log: development only")

    async def send_code(self, phone: str, code: str, *, expires_in: int) -> None:
        log.info(
            "login code %s for %s (valid %d s; not sent: QUDAO_SMS_SENDER=log)",
            code,
            mask_phone(phone),
            expires_in,
        )


SENDERS: dict[str, Callable[[Settings], SmsSender]] = {
    "log": lambda settings: LogSender(),
}


def build_sender(settings: Settings) -> SmsSender | None:
    """The sender the settings name; None when none is set (phone login is off);
    ValueError (at startup) for an unknown one."""
    if not settings.sms_sender:
        log.info("QUDAO_SMS_SENDER is not set: phone login is off (POST /oauth/otp answers 503)")
        return None
    factory = SENDERS.get(settings.sms_sender)
    if factory is None:
        known = ", ".join(sorted(SENDERS))
        raise ValueError(f"QUDAO_SMS_SENDER={settings.sms_sender!r} is not one of: {known}")
    return factory(settings)
