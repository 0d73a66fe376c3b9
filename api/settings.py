"""One Settings object, read from the environment once at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

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
    # DEV ONLY, until the identity issue lands: requests without a token act as an HQ admin.
    # Never set in production; `qudao serve` prints a warning when it is on.
    dev_open_access: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("DATABASE_URL") or defaults.database_url,
            redis_url=env.get("REDIS_URL") or None,
            cache_prefix=env.get("QUDAO_CACHE_PREFIX", defaults.cache_prefix),
            log_level=env.get("LOG_LEVEL", defaults.log_level).upper(),
            log_json=not _flag(env.get("QUDAO_LOG_PLAIN")),
            max_cost=int(env.get("QUDAO_MAX_COST", defaults.max_cost)),
            dev_open_access=_flag(env.get("QUDAO_DEV_OPEN_ACCESS")),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_local_dirs(self) -> None:
        """Create the directory of an embedded SQLite file (./var by default)."""
        if self.is_sqlite and ":memory:" not in self.database_url:
            path = self.database_url.split("///", 1)[-1].split("?", 1)[0]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
