"""Every domain's tables on one metadata, for alembic (``migrations/env.py``), the tests and
the benchmarks: importing this module is what puts them all on ``Base.metadata``."""

from __future__ import annotations

from api.analytics import models as analytics
from api.auth import models as auth
from api.catalog import models as catalog
from api.conflicts import models as conflicts
from api.coupons import models as coupons
from api.customers import models as customers
from api.db import Base
from api.growth import models as growth
from api.inventory import models as inventory
from api.loyalty import models as loyalty
from api.orders import models as orders
from api.outbox import models as outbox
from api.partners import models as partners
from api.purchasing import models as purchasing
from api.referrals import models as referrals
from api.segments import models as segments

metadata = Base.metadata

__all__ = [
    "analytics",
    "auth",
    "catalog",
    "conflicts",
    "coupons",
    "customers",
    "growth",
    "inventory",
    "loyalty",
    "metadata",
    "orders",
    "outbox",
    "partners",
    "purchasing",
    "referrals",
    "segments",
]
