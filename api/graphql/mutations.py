"""How every mutation runs, written once (Saleor's ``BaseMutation.mutate`` is the model).

A mutation resolver checks its permission (declared on the field), then hands
``run_mutation`` its change: an async function of one ``UnitOfWork`` that calls the domain's
services and returns the payload. ``run_mutation``:

* runs the change in one transaction (``Database.transaction()``);
* writes the mutation's audit entry in that same transaction, so a change and its record
  commit together or not at all (a saved change is never missing from the audit log);
* has the payload built inside it, so nothing read after the commit can turn a saved change
  into an error;
* answers a ``DomainError`` (expected refusals: bad input, out of stock, limit reached) with
  the payload's ``errors``, each coded by the payload's error type, everything rolled back.
  That attempt's audit entry is written after the request (``api/graphql/audit.py``), as are
  the entries of refusals that never reached the change (a missing scope).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types.base import StrawberryList, get_object_definition

from api.audit.service import AuditEntry, insert_entries
from api.auth.principal import Principal
from api.errors import DomainError
from api.graphql.context import Context, Info
from api.graphql.errors import user_errors


class _Payload(Protocol):
    def __init__(self, *, errors: list[Any]) -> None: ...


P = TypeVar("P")


class UnitOfWork:
    """What a mutation's change is handed: its session (one transaction), the request's
    context, and where to name the object it changed (for the audit entry)."""

    def __init__(self, session: AsyncSession, context: Context) -> None:
        self.session = session
        self.context = context
        self.changed: tuple[str, str] | None = None

    @property
    def principal(self) -> Principal:
        return self.context.principal

    def touched(self, type_name: str, pk: int) -> None:
        """Name the object this mutation changed (its audit entry's object)."""
        self.changed = (type_name, str(pk))


async def run_mutation(
    info: Info, payload: type[P], change: Callable[[UnitOfWork], Awaitable[P]]
) -> P:
    """Run ``change`` as the mutation's one unit of work and answer its payload."""
    context = info.context
    try:
        async with context.db.transaction() as session:
            work = UnitOfWork(session, context)
            answer = await change(work)
            if work.changed is not None:
                object_type, object_id = work.changed
                entry = AuditEntry(
                    info.field_name,
                    object_type,
                    object_id,
                    {"outcome": "ok", "request_id": context.request_id},
                )
                await insert_entries(session, context.principal, context.ip, [entry])
                context.audited.add(str(info.path.key))
    except DomainError as error:
        refused = cast(type[_Payload], payload)(errors=user_errors(_error_type(payload), error))
        return cast(P, refused)
    return answer


_ERROR_TYPES: dict[type, Any] = {}


def _error_type(payload: type) -> Any:
    """The error type of a payload's ``errors: [XError!]!`` field (e.g. CouponError)."""
    found = _ERROR_TYPES.get(payload)
    if found is None:
        definition = get_object_definition(payload, strict=True)
        errors = next(f for f in definition.fields if f.python_name == "errors")
        field_type = errors.type
        assert isinstance(field_type, StrawberryList), f"{payload.__name__}.errors is no list"
        found = _ERROR_TYPES[payload] = field_type.of_type
    return found
