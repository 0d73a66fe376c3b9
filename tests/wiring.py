"""The composition root as tests use it: the real reactions (``api/wiring.py``), with the
settings a test chooses."""

from __future__ import annotations

from dataclasses import replace

from api.analytics.attribution import AttributionPolicy
from api.customers.reactions import CustomersWiring
from api.orders.reactions import OrderSettings, OrdersWiring
from api.settings import Settings
from api.wiring import Wiring, build

WIRING: Wiring = build(Settings())
CUSTOMERS: CustomersWiring = WIRING.customers
POINTS_POLICY = WIRING.settings.points_policy


def orders_wiring(
    settings: OrderSettings | None = None, attribution: AttributionPolicy | None = None
) -> OrdersWiring:
    """What the orders domain is handed: every reaction, under ``settings`` (default: the
    defaults) and the attribution ``policy`` (default: first touch, for life)."""
    if attribution is not None:
        base = build(
            Settings(
                attribution_rule=attribution.rule,
                attribution_window_days=attribution.window_days,
            )
        ).orders
    else:
        base = WIRING.orders
    return base if settings is None else replace(base, settings=settings)
