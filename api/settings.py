"""One Settings object, read from the environment once at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from api.auth.keys import KeyRing
from api.auth.wechat import parse_apps as parse_wechat_apps
from api.graphql.guard import DocumentLimits
from api.http_limits import BodyLimits
from api.loyalty.rules import PointsPolicy

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/qudao.db"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    # Prefix of every cache key and channel, so several deployments can share one Redis.
    cache_prefix: str = "qudao:"
    log_level: str = "INFO"
    log_json: bool = True
    # GraphQL limits. The page cap bounds every connection; the cost limit multiplies nested
    # connection sizes, so one request cannot ask for 100 x 100 x 100 rows.
    page_cap: int = 100
    default_page_size: int = 20
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_cost: int = 25_000
    parser_cache_size: int = 512
    # What validation may face, checked in one linear pass before it runs (api/graphql/
    # guard.py): fields and fragments once fragments are expanded, fields selected at one
    # place of the response and times one name is (graphql-core's overlap rule compares those
    # pairwise); and every input value: list lengths, text lengths.
    max_fields: int = 2000
    max_fragments: int = 200
    max_selection_fields: int = 200
    max_repeats: int = 10
    max_list_input: int = 1000
    max_string_input: int = 10_000
    max_input_depth: int = 32  # nesting of one variable's value (a JSON attribute, say)
    max_input_values: int = 10_000  # values in all of a request's inputs, however nested
    # HTTP requests (api/http_limits.py): a body over the cap is 413, one that stops arriving
    # is 408 after body_timeout seconds; headers over their caps are 431.
    max_body_bytes: int = 1_000_000
    body_timeout: float = 10.0
    max_header_bytes: int = 16_384
    max_headers: int = 100
    # Identity. The key file is a JWKS of private keys (first signs, all verify); when absent
    # it is created, so `make serve` needs no setup. QUDAO_JWT_KEYS (the JSON) overrides it.
    issuer: str = "http://127.0.0.1:8000"
    jwt_keys_file: str = "./var/jwks.json"
    jwt_keys_json: str | None = None
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    auth_code_ttl: int = 300
    oauth_require_https: bool = False
    # The database (api/db.py): opening a connection (or waiting for a pooled one) and one
    # statement are bounded, so a database that hangs fails requests in seconds (with
    # SERVICE_UNAVAILABLE) instead of holding them, the pool and the event loop.
    db_connect_timeout: float = 5.0
    db_statement_timeout: float = 30.0
    # Redis outages (api/cache.py): Redis is tried again every cache_retry_interval seconds,
    # and access tokens are accepted without the deny-list check for the first
    # revocation_grace seconds of an outage (then 503 until Redis answers).
    cache_retry_interval: float = 1.0
    revocation_grace: float = 60.0
    # Rate limits (fixed windows in the cache, so N processes on one Redis share them).
    rate_limit: int = 600  # GraphQL requests per principal (or address) per window
    rate_window: float = 60.0
    oauth_rate_limit: int = 30  # token/revoke/introspect/login calls per address per window
    oauth_rate_window: float = 60.0
    failed_login_limit: int = 5
    failed_login_window: float = 900.0
    # Member login (mini-program). SMS: which sender delivers login codes; none by default,
    # which turns phone login off ("log" writes codes to the log: development only, chosen
    # explicitly, as `make serve` does). Codes live otp_ttl seconds, a phone gets one at most
    # every otp_resend_interval and otp_hourly_limit an hour; a code survives
    # otp_max_attempts wrong tries; otp_failure_limit failures per phone lock it for
    # failed_login_window.
    sms_sender: str = ""
    otp_ttl: float = 300.0
    otp_resend_interval: float = 60.0
    otp_hourly_limit: int = 10
    otp_max_attempts: int = 5
    otp_failure_limit: int = 10
    # WeChat code2session: the API base URL, and each mini-program's appid and app secret
    # (QUDAO_WECHAT_APPS="appid:secret,appid2:secret2"). Kept out of repr: they are secrets.
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_apps: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    wechat_timeout: float = 5.0
    # Points (积分): earned points are pending for the return window, then spendable until
    # they expire: "rolling:N" days after earning, "annual:MM-DD" (the end of that day, in
    # points_timezone, a year after the first such day following the earning) or "never".
    points_pending_days: int = 7
    points_expiry: str = "rolling:365"
    points_timezone: str = "Asia/Shanghai"
    # Orders: how long a pickup order waits at the store before it expires; how many points
    # pay one yuan (积分抵现), and at most what share of an order's subtotal points may pay.
    pickup_window_hours: int = 72
    points_per_yuan: int = 100
    points_max_share_percent: int = 50
    # Lifetime attribution (终身归属): which recruiter an order counts for. first_touch = the
    # store and guide that recruited the member; last_touch = the latest touchpoint with a
    # store before the order (falling back to the recruiter). 0 days = for life.
    attribution_rule: str = "first_touch"
    attribution_window_days: int = 0
    referral_link_base: str = "https://m.qudao.example/invite/"

    def __post_init__(self) -> None:
        # Validated at startup: a typo in the points policy must stop the process, not
        # surface as wrong expiry dates months later.
        self.points_policy  # noqa: B018
        if not (0 < self.db_connect_timeout <= 600 and 0 < self.db_statement_timeout <= 86_400):
            raise ValueError(
                "QUDAO_DB_CONNECT_TIMEOUT (up to 600) and QUDAO_DB_STATEMENT_TIMEOUT (up to "
                "86400) must be positive seconds"
            )
        if not 1 <= self.pickup_window_hours <= 24 * 90:
            raise ValueError("QUDAO_PICKUP_WINDOW_HOURS must be between 1 and 2160")
        if not 1 <= self.points_per_yuan <= 10_000:
            raise ValueError("QUDAO_POINTS_PER_YUAN must be between 1 and 10000")
        if not 0 <= self.points_max_share_percent <= 100:
            raise ValueError("QUDAO_POINTS_MAX_SHARE_PERCENT must be between 0 and 100")
        if self.attribution_rule not in ("first_touch", "last_touch"):
            raise ValueError("QUDAO_ATTRIBUTION_RULE must be first_touch or last_touch")
        if not 0 <= self.attribution_window_days <= 36_500:
            raise ValueError("QUDAO_ATTRIBUTION_WINDOW_DAYS must be between 0 (for life) and 36500")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("DATABASE_URL") or defaults.database_url,
            redis_url=env.get("REDIS_URL") or None,
            db_connect_timeout=float(
                env.get("QUDAO_DB_CONNECT_TIMEOUT", defaults.db_connect_timeout)
            ),
            db_statement_timeout=float(
                env.get("QUDAO_DB_STATEMENT_TIMEOUT", defaults.db_statement_timeout)
            ),
            cache_prefix=env.get("QUDAO_CACHE_PREFIX", defaults.cache_prefix),
            log_level=env.get("LOG_LEVEL", defaults.log_level).upper(),
            log_json=not _flag(env.get("QUDAO_LOG_PLAIN")),
            max_cost=int(env.get("QUDAO_MAX_COST", defaults.max_cost)),
            max_body_bytes=int(env.get("QUDAO_MAX_BODY_BYTES", defaults.max_body_bytes)),
            body_timeout=float(env.get("QUDAO_BODY_TIMEOUT", defaults.body_timeout)),
            issuer=env.get("QUDAO_ISSUER", defaults.issuer),
            jwt_keys_file=env.get("QUDAO_JWT_KEYS_FILE", defaults.jwt_keys_file),
            jwt_keys_json=env.get("QUDAO_JWT_KEYS") or None,
            oauth_require_https=_flag(env.get("QUDAO_OAUTH_REQUIRE_HTTPS")),
            revocation_grace=float(env.get("QUDAO_REVOCATION_GRACE", defaults.revocation_grace)),
            rate_limit=int(env.get("QUDAO_RATE_LIMIT", defaults.rate_limit)),
            oauth_rate_limit=int(env.get("QUDAO_OAUTH_RATE_LIMIT", defaults.oauth_rate_limit)),
            sms_sender=env.get("QUDAO_SMS_SENDER", defaults.sms_sender).strip().lower(),
            otp_hourly_limit=int(env.get("QUDAO_OTP_HOURLY_LIMIT", defaults.otp_hourly_limit)),
            wechat_api_base=env.get("QUDAO_WECHAT_API_BASE", defaults.wechat_api_base),
            wechat_apps=parse_wechat_apps(env.get("QUDAO_WECHAT_APPS")),
            wechat_timeout=float(env.get("QUDAO_WECHAT_TIMEOUT", defaults.wechat_timeout)),
            points_pending_days=int(
                env.get("QUDAO_POINTS_PENDING_DAYS", defaults.points_pending_days)
            ),
            points_expiry=env.get("QUDAO_POINTS_EXPIRY", defaults.points_expiry).strip(),
            points_timezone=env.get("QUDAO_POINTS_TIMEZONE", defaults.points_timezone),
            pickup_window_hours=int(
                env.get("QUDAO_PICKUP_WINDOW_HOURS", defaults.pickup_window_hours)
            ),
            points_per_yuan=int(env.get("QUDAO_POINTS_PER_YUAN", defaults.points_per_yuan)),
            points_max_share_percent=int(
                env.get("QUDAO_POINTS_MAX_SHARE_PERCENT", defaults.points_max_share_percent)
            ),
            attribution_rule=env.get("QUDAO_ATTRIBUTION_RULE", defaults.attribution_rule)
            .strip()
            .lower(),
            attribution_window_days=int(
                env.get("QUDAO_ATTRIBUTION_WINDOW_DAYS", defaults.attribution_window_days)
            ),
            referral_link_base=env.get("QUDAO_REFERRAL_LINK_BASE", defaults.referral_link_base),
        )

    @property
    def document_limits(self) -> DocumentLimits:
        return DocumentLimits(
            max_depth=self.max_depth,
            max_aliases=self.max_aliases,
            max_fields=self.max_fields,
            max_fragments=self.max_fragments,
            max_selection_fields=self.max_selection_fields,
            max_repeats=self.max_repeats,
            max_list_length=self.max_list_input,
            max_string_length=self.max_string_input,
            max_input_depth=self.max_input_depth,
            max_input_values=self.max_input_values,
        )

    @property
    def body_limits(self) -> BodyLimits:
        return BodyLimits(
            max_body_bytes=self.max_body_bytes,
            body_timeout=self.body_timeout,
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
        )

    @property
    def points_policy(self) -> PointsPolicy:
        return PointsPolicy(
            pending_days=self.points_pending_days,
            expiry=self.points_expiry,
            timezone=self.points_timezone,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def key_ring(self) -> KeyRing:
        if self.jwt_keys_json:
            return KeyRing.from_json(self.jwt_keys_json)
        return KeyRing.load_or_create(Path(self.jwt_keys_file))

    def ensure_local_dirs(self) -> None:
        """Create the directory of an embedded SQLite file (./var by default)."""
        if self.is_sqlite and ":memory:" not in self.database_url:
            path = self.database_url.split("///", 1)[-1].split("?", 1)[0]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
