"""The referral domain's refusals."""

from __future__ import annotations

import enum


class ReferralErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    REQUIRED = "required"
    FORBIDDEN = "forbidden"
    UNKNOWN_TEMPLATE = "unknown_template"
    TEMPLATE_UNUSABLE = "template_unusable"
    CAMPAIGN_NOT_RUNNING = "campaign_not_running"
    UNKNOWN_CODE = "unknown_code"  # no such code, or its campaign is not running
    SELF_INVITE = "self_invite"
    ALREADY_REFERRED = "already_referred"
    NOT_NEW = "not_new"
    DEVICE_USED = "device_used"
    PHONE_USED = "phone_used"
    DAILY_LIMIT = "daily_limit"
