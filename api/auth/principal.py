from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(enum.Enum):
    HQ_ADMIN = "hq_admin"
    CHANNEL_MANAGER = "channel_manager"
    MARKETER = "marketer"
    PARTNER_ADMIN = "partner_admin"
    STORE_STAFF = "store_staff"
    INTEGRATION = "integration"  # a partner system over OAuth client credentials
    MEMBER = "member"


HQ_ROLES = frozenset({Role.HQ_ADMIN, Role.CHANNEL_MANAGER, Role.MARKETER})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request, as carried by its access token.

    ``partner_id`` / ``store_id`` bound what a partner- or store-level caller may see;
    HQ roles carry neither and see every partner.
    """

    subject: str
    role: Role | None
    partner_id: int | None = None
    store_id: int | None = None
    # A member's own customer id: a member token sees that customer's data and nothing else.
    customer_id: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    client_id: str | None = None  # the OAuth client the token was issued to
    token_id: str | None = None  # the access token's jti, for audit and revocation

    @property
    def is_authenticated(self) -> bool:
        return self.role is not None

    @property
    def is_hq(self) -> bool:
        return self.role in HQ_ROLES

    @property
    def is_member(self) -> bool:
        return self.role is Role.MEMBER

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal(subject="anonymous", role=None)
