"""The one place partner-owned rows are limited to what a principal may see.

Every read of a partner-scoped table goes through ``restrict`` (services, loaders, ``node``),
so no resolver has to remember a check. A row outside the scope is simply not found, which
makes another partner's id indistinguishable from an id that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, false
from sqlalchemy.orm import InstrumentedAttribute

from api.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which columns tie a row to a partner, (optionally) to a store, and to a customer.

    A row with a ``customer`` column is visible to that customer's member token; a row
    without one is invisible to every member.
    """

    partner: InstrumentedAttribute[Any]
    store: InstrumentedAttribute[Any] | None = None
    customer: InstrumentedAttribute[Any] | None = None


_OWNERSHIP: dict[type, Ownership] = {}

S = TypeVar("S", bound=Select[Any])


def partner_owned(model: type, partner: Any, store: Any = None, customer: Any = None) -> None:
    """Declare a model partner-scoped (called next to the model's service)."""
    _OWNERSHIP[model] = Ownership(partner=partner, store=store, customer=customer)


def restrict(stmt: S, model: type, principal: Principal) -> S:
    ownership = _OWNERSHIP.get(model)
    if ownership is None:
        raise LookupError(f"{model.__name__} has no declared ownership; call partner_owned()")
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
