"""The one place partner-owned rows are limited to what a principal may see.

Every read of a partner-scoped table (the table of owners is ``api/ownership.py``) goes
through ``restrict`` (services, loaders, ``node``), so no resolver has to remember a check. A
row outside the scope is simply not found, which makes another partner's id
indistinguishable from an id that does not exist.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, false

from api.auth.principal import Principal
from api.ownership import OWNERSHIP

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def restrict(stmt: S, model: type, principal: Principal) -> S:
    ownership = OWNERSHIP.get(model)
    if ownership is None:
        raise LookupError(f"{model.__name__} has no line in api/ownership.py")
    if principal.is_hq:
        return stmt
    if principal.is_member:
        if ownership.customer is None or principal.customer_id is None:
            return stmt.where(false())
        return stmt.where(ownership.customer == principal.customer_id)
    if principal.partner_id is None:
        if principal.store_id is not None and ownership.store is not None:
            # Staff of an HQ-run store: that store's rows, which belong to no partner.
            return stmt.where(ownership.partner.is_(None), ownership.store == principal.store_id)
        return stmt.where(false())
    stmt = stmt.where(ownership.partner == principal.partner_id)
    if principal.store_id is not None and ownership.store is not None:
        stmt = stmt.where(ownership.store == principal.store_id)
    return stmt
