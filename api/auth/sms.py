"""Delivery of login codes by SMS, behind one small interface.

Which sender runs is a setting (``QUDAO_SMS_SENDER``). ``log`` (the default, for development)
writes the code to the log instead of sending it. A real gateway is one more class here and
one more name in ``SENDERS``; an unknown name stops the app at startup rather than failing
the first member who asks for a code.
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
    """Development: the code goes to the log (logger ``qudao.sms``), nothing is sent."""

    async def send_code(self, phone: str, code: str, *, expires_in: int) -> None:
        log.warning(
            "SMS not sent (QUDAO_SMS_SENDER=log): login code %s for %s, valid %d s",
            code,
            mask_phone(phone),
            expires_in,
            extra={"sms_phone": mask_phone(phone), "sms_code": code},
        )


SENDERS: dict[str, Callable[[Settings], SmsSender]] = {
    "log": lambda settings: LogSender(),
}


def build_sender(settings: Settings) -> SmsSender:
    """The sender the settings name; ValueError (at startup) for an unknown one."""
    factory = SENDERS.get(settings.sms_sender)
    if factory is None:
        known = ", ".join(sorted(SENDERS))
        raise ValueError(f"QUDAO_SMS_SENDER={settings.sms_sender!r} is not one of: {known}")
    return factory(settings)
