"""The domain packages. Importing their models registers every table on Base.metadata."""

from __future__ import annotations

import importlib

DOMAINS = ("partners", "auth", "customers", "loyalty", "coupons")


def load_models() -> None:
    for domain in DOMAINS:
        importlib.import_module(f"api.{domain}.models")
