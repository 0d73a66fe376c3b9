"""Every mutation leaves an audit entry, whatever its outcome, with no resolver having to
remember. A change's own entry is written in its transaction (``api/graphql/mutations.py``),
so a saved change always has it; this extension writes the rest after the operation: the
entries of mutations that changed nothing (refused before or by the domain, or failed), and
those a request collected on the way (unmasked PII reads), in one INSERT. An entry carries
an outcome, an error code and the request id, never an exception's text (which may hold SQL,
parameters or personal data)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from graphql import FieldNode, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from api.audit.service import AuditEntry, record
from api.db import unavailable
from api.graphql.context import Context
from api.graphql.errors import ErrorCode, classify

log = logging.getLogger("qudao.audit")


class AuditTrail(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        yield
        execution = self.execution_context
        context = execution.context
        if not isinstance(context, Context):
            return
        reads = list(context.audit_entries)
        attempts: list[AuditEntry] = []
        result = execution.result
        executed = result is not None and (result.data is not None or _has_path_errors(result))
        if executed and execution.operation_type is OperationType.MUTATION:
            attempts = _mutation_entries(
                execution.graphql_document, execution.operation_name, result, context
            )
        try:
            await record(context.db, context.principal, context.ip, reads + attempts)
        except Exception as error:
            # Unmasked reads that cannot be recorded are not answered: the error replaces
            # the result (SERVICE_UNAVAILABLE when the database is down). Attempts that
            # changed nothing (what changed was recorded with its change) never turn an
            # answer into an error: while the database is down they are counted in its
            # outage log (one line per outage, not one per request), else logged as a bug.
            if reads:
                raise
            if not unavailable(error):
                log.exception("could not record %d audit entries", len(attempts))
            elif not _failed_unavailable(result):
                context.db.outage.failed(error)


def _failed_unavailable(result: Any) -> bool:
    """Whether the outage log counted this request already (a field failed the same way)."""
    return any(
        classify(e) is ErrorCode.SERVICE_UNAVAILABLE for e in (result and result.errors) or ()
    )


def _has_path_errors(result: Any) -> bool:
    return any(error.path for error in result.errors or ())


def _mutation_entries(
    document: Any, operation_name: str | None, result: Any, context: Context
) -> list[AuditEntry]:
    operation = next(
        (
            d
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
            and (operation_name is None or (d.name and d.name.value == operation_name))
        ),
        None,
    )
    if operation is None:
        return []
    failed = {str(e.path[0]): classify(e).value for e in result.errors or () if e.path}
    entries = []
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.name.value.startswith("__"):
            continue
        key = selection.alias.value if selection.alias else selection.name.value
        if key in context.audited:
            continue
        # What changed something was audited with its change (context.audited); the rest
        # changed nothing: failed with an error (its code), or answered with the payload's
        # errors. The outcome never depends on what the client selected.
        if key in failed:
            detail: dict[str, Any] = {"outcome": "refused", "code": failed[key]}
        else:
            detail = {"outcome": "rejected"}
        detail["request_id"] = context.request_id
        entries.append(AuditEntry(selection.name.value, None, None, detail))
    return entries
