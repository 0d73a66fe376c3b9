"""The domain packages. Importing their models registers every table on Base.metadata;
importing their services registers their hooks (e.g. customer merge steps)."""

from __future__ import annotations

import importlib
import importlib.util

DOMAINS = (
    "partners",
    "auth",
    "customers",
    "loyalty",
    "coupons",
    "catalog",
    "inventory",
    "orders",
    "conflicts",
    "outbox",
    "growth",
    "referrals",
    "analytics",
    "segments",
)


def load_models() -> None:
    for domain in DOMAINS:
        importlib.import_module(f"api.{domain}.models")


def load_services() -> None:
    for domain in DOMAINS:
        module = f"api.{domain}.service"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
