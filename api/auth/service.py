"""Staff users and OAuth clients: creation and the lookups the OAuth server needs."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import otp, wechat
from api.auth import scopes as scope_catalog
from api.auth.models import OAuthClient, StaffUser
from api.auth.principal import Role
from api.auth.secrets import digest, hash_password, new_secret
from api.errors import DomainError, Problem
from api.partners.models import Partner, Store

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MIN_PASSWORD_LENGTH = 10


class AuthErrorCode(enum.Enum):
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class NewClient:
    client: OAuthClient
    secret: str | None  # shown once, never stored


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    role: Role,
    partner_id: int | None = None,
    store_id: int | None = None,
) -> StaffUser:
    email = email.strip().lower()
    problems: list[Problem] = []
    if not _EMAIL.fullmatch(email):
        problems.append(Problem(AuthErrorCode.INVALID, f"Not an email: {email!r}.", ("email",)))
    elif await session.scalar(select(StaffUser.id).where(StaffUser.email == email)):
        problems.append(Problem(AuthErrorCode.DUPLICATE, "That email has a user.", ("email",)))
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(
            Problem(
                AuthErrorCode.INVALID,
                f"Passwords are at least {MIN_PASSWORD_LENGTH} characters.",
                ("password",),
            )
        )
    if role in (Role.INTEGRATION, Role.MEMBER):
        problems.append(
            Problem(AuthErrorCode.INVALID, f"{role.name} is not a staff role.", ("role",))
        )
    if role is Role.PARTNER_ADMIN and partner_id is None:
        problems.append(
            Problem(AuthErrorCode.INVALID, "A partner admin needs a partner.", ("partner",))
        )
    if role is Role.STORE_STAFF and store_id is None:
        problems.append(Problem(AuthErrorCode.INVALID, "Store staff need a store.", ("store",)))
    if role in (Role.HQ_ADMIN, Role.CHANNEL_MANAGER, Role.MARKETER) and (partner_id or store_id):
        problems.append(Problem(AuthErrorCode.INVALID, "HQ roles belong to no partner.", ("role",)))
    if store_id is not None:
        store = await session.get(Store, store_id)
        if store is None:
            problems.append(Problem(AuthErrorCode.NOT_FOUND, "No such store.", ("store",)))
        elif partner_id is None:
            partner_id = store.partner_id  # store staff belong to the store's partner
        elif store.partner_id != partner_id:
            problems.append(
                Problem(AuthErrorCode.INVALID, "That store is not the partner's.", ("store",))
            )
    if partner_id is not None and await session.get(Partner, partner_id) is None:
        problems.append(Problem(AuthErrorCode.NOT_FOUND, "No such partner.", ("partner",)))
    if problems:
        raise DomainError(problems)
    user = StaffUser(
        email=email,
        password_hash=hash_password(password),
        role=role,
        partner_id=partner_id,
        store_id=store_id,
    )
    session.add(user)
    await session.flush()
    return user


async def create_client(
    session: AsyncSession,
    *,
    name: str,
    grant_types: set[str],
    scopes: set[str] | None = None,
    partner_id: int | None = None,
    redirect_uris: list[str] | None = None,
    first_party: bool = False,
    public: bool = False,
) -> NewClient:
    """Register an OAuth client. Integration clients (client_credentials) belong to a partner
    and may only hold the scopes given here; the secret is returned once, stored hashed."""
    problems: list[Problem] = []
    scopes = scopes or set()
    if bad := scope_catalog.unknown(scopes):
        problems.append(
            Problem(AuthErrorCode.INVALID, f"Unknown scopes: {' '.join(sorted(bad))}.", ("scopes",))
        )
    allowed_grants = {"client_credentials", "authorization_code", "refresh_token", "password"}
    member_grants = {otp.GRANT_TYPE, wechat.GRANT_TYPE}
    if not grant_types or grant_types - allowed_grants - member_grants:
        problems.append(Problem(AuthErrorCode.INVALID, "Unsupported grant types.", ("grants",)))
    if grant_types & member_grants and not first_party:
        # Such a client mints tokens for any member who proves a phone or a WeChat login.
        problems.append(
            Problem(AuthErrorCode.INVALID, "Only first-party apps may log members in.", ("grants",))
        )
    if partner_id is not None and (hq_only := scopes & scope_catalog.HQ_ONLY_SCOPES):
        problems.append(
            Problem(
                AuthErrorCode.INVALID,
                f"A partner's client cannot hold {' '.join(sorted(hq_only))}.",
                ("scopes",),
            )
        )
    if "client_credentials" in grant_types and first_party:
        problems.append(
            Problem(
                AuthErrorCode.INVALID,
                "Client credentials are for partner integrations, not first-party apps.",
                ("grants",),
            )
        )
    if "client_credentials" in grant_types and partner_id is None:
        problems.append(
            Problem(
                AuthErrorCode.INVALID, "An integration client acts for a partner.", ("partner",)
            )
        )
    if "password" in grant_types and not first_party:
        problems.append(
            Problem(AuthErrorCode.INVALID, "Only first-party apps may use passwords.", ("grants",))
        )
    if "authorization_code" in grant_types and not redirect_uris:
        problems.append(Problem(AuthErrorCode.INVALID, "Give a redirect URI.", ("redirectUris",)))
    if public and "password" in grant_types:
        # A password login must come from a backend that authenticates itself as a client.
        problems.append(
            Problem(AuthErrorCode.INVALID, "Public clients cannot use passwords.", ("public",))
        )
    if public and "client_credentials" in grant_types:
        problems.append(
            Problem(AuthErrorCode.INVALID, "Public clients have no secret.", ("public",))
        )
    if partner_id is not None and await session.get(Partner, partner_id) is None:
        problems.append(Problem(AuthErrorCode.NOT_FOUND, "No such partner.", ("partner",)))
    if problems:
        raise DomainError(problems)
    secret = None if public else new_secret()
    client = OAuthClient(
        client_id=new_secret(12),
        secret_hash=digest(secret) if secret else None,
        name=name,
        partner_id=partner_id,
        scopes=scope_catalog.render(scopes),
        grant_types=" ".join(sorted(grant_types)),
        redirect_uris=" ".join(redirect_uris or []),
        first_party=first_party,
    )
    session.add(client)
    await session.flush()
    return NewClient(client, secret)


async def user_by_email(session: AsyncSession, email: str) -> StaffUser | None:
    return await session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))


async def client_by_client_id(session: AsyncSession, client_id: str) -> OAuthClient | None:
    return await session.scalar(
        select(OAuthClient).where(
            OAuthClient.client_id == client_id, OAuthClient.revoked_at.is_(None)
        )
    )
