"""Permission classes, declared next to the field they guard.

Every permission is a scope (see api/auth/scopes.py), whoever the caller is. What a caller
may *see* is a separate matter, enforced where rows are read (api/auth/scope.py).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from strawberry.permission import BasePermission

from api.graphql.context import Info
from api.graphql.errors import PermissionDenied, Unauthenticated


class Authenticated(BasePermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if not info.context.principal.is_authenticated:
            raise Unauthenticated("Sign in first: this needs an access token.")
        return True


@cache
def requires(*scopes: str) -> type[BasePermission]:
    """A permission class that needs every one of ``scopes``: ``requires("partners:write")``."""

    class Requires(BasePermission):
        required = scopes

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            principal = info.context.principal
            if not principal.is_authenticated:
                raise Unauthenticated("Sign in first: this needs an access token.")
            missing = [s for s in scopes if not principal.has_scope(s)]
            if missing:
                raise PermissionDenied(f"This needs the {' '.join(missing)} scope.")
            return True

    Requires.__name__ = Requires.__qualname__ = "Requires_" + "_".join(scopes)
    return Requires
