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
  the entries of refusals that never reached the change (a missing scope) and of changes
  that failed (the database went away): an attempt that changed nothing.

A change that only previews (``work.preview()``: a dry run) is rolled back and answered; it
changed nothing, so it is audited like a refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types.base import StrawberryList, get_object_definition
from strawberry.types.lazy_type import LazyType

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
        self.entries: list[AuditEntry] = []
        self.previewing = False

    @property
    def principal(self) -> Principal:
        return self.context.principal

    def touched(self, type_name: str, pk: int) -> None:
        """Name the object this mutation changed (its audit entry's object)."""
        self.changed = (type_name, str(pk))

    def audit(self, entry: AuditEntry) -> None:
        """Record more than the mutation's own entry (what a merge moved), in its transaction."""
        self.entries.append(entry)

    def preview(self) -> None:
        """Roll this unit of work back once the change returns: a dry run's answer."""
        self.previewing = True


class _Preview(Exception):
    """Rolls a previewing unit of work back (raised out of its transaction)."""


async def run_mutation(
    info: Info,
    payload: type[P],
    change: Callable[[UnitOfWork], Awaitable[P]],
    *,
    refusal: Callable[[DomainError], list[Any]] | None = None,
) -> P:
    """Run ``change`` as the mutation's one unit of work and answer its payload.

    ``refusal`` makes the payload's errors of a ``DomainError`` where a domain's errors carry
    more than field, message and code (a segment query's line and column)."""
    context = info.context
    try:
        async with context.db.transaction() as session:
            work = UnitOfWork(session, context)
            answer = await change(work)
            if work.previewing:
                raise _Preview
            object_type, object_id = work.changed or (None, None)
            entry = AuditEntry(
                info.field_name,
                object_type,
                object_id,
                {"outcome": "ok", "request_id": context.request_id},
            )
            await insert_entries(session, context.principal, context.ip, [*work.entries, entry])
    except _Preview:
        return answer
    except DomainError as error:
        errors = refusal(error) if refusal else user_errors(_error_type(payload), error)
        return cast(P, cast(type[_Payload], payload)(errors=errors))
    # Only once committed: a commit that failed leaves the entry of a failed attempt to the
    # extension.
    context.audited.add(str(info.path.key))
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
        found = field_type.of_type
        if isinstance(found, LazyType):  # a type of another module, named to avoid a cycle
            found = found.resolve_type()
        _ERROR_TYPES[payload] = found
    return found
