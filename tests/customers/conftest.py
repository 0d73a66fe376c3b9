"""Fixtures of the customers tests: callers acting as other principals, two partners."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from api.auth.principal import Role
from tests.conftest import GraphQLClient
from tests.factories import create_partner, create_store


def pk(global_id: str) -> int:
    return int(base64.urlsafe_b64decode(global_id + "==").decode().split(":")[1])


def gid(type_name: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


@pytest_asyncio.fixture
async def as_principal(app: Any, issue_token: Any) -> AsyncIterator[Callable[..., GraphQLClient]]:
    """``as_principal(Role.PARTNER_ADMIN, partner_id=1)`` → a GraphQL client acting as it."""
    clients: list[httpx.AsyncClient] = []

    def make(role: Role, **claims: Any) -> GraphQLClient:
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://qudao.test",
            headers={"Authorization": f"Bearer {issue_token(role, **claims)}"},
        )
        clients.append(http)
        return GraphQLClient(http)

    yield make
    for http in clients:
        await http.aclose()


@pytest.fixture
async def network(gql: GraphQLClient) -> dict[str, dict[str, Any]]:
    """Partner A with stores SA and SA2, partner B with store SB, and an HQ-run store SH."""
    a = await create_partner(gql, "PA")
    b = await create_partner(gql, "PB")
    return {
        "A": a,
        "B": b,
        "SA": await create_store(gql, "SA", a["id"]),
        "SA2": await create_store(gql, "SA2", a["id"]),
        "SB": await create_store(gql, "SB", b["id"]),
        "SH": await create_store(gql, "SH", None),
    }


MEMBER_JOIN = """
mutation($input: MemberJoinInput!) {
  memberJoin(input: $input) {
    customer {
      id
      membership {
        since recruitedGuideId periodEndsAt graceEndsAt
        level { code } manualLevel { code } recruitedStore { code } recruitedPartner { code }
      }
    }
    errors { field message code }
  }
}"""

LEVEL_CREATE = """
mutation($input: MemberLevelCreateInput!) {
  memberLevelCreate(input: $input) {
    memberLevel { id code rank }
    errors { field message code }
  }
}"""


async def join(client: Any, **payload: Any) -> dict[str, Any]:
    """memberJoin that must succeed; returns the customer."""
    result = (await client(MEMBER_JOIN, {"input": payload}))["memberJoin"]
    assert result["errors"] == [], result["errors"]
    return result["customer"]


async def create_level(gql: Any, code: str, rank: int, threshold: str, **fields: Any) -> str:
    payload = {
        "code": code,
        "name": fields.pop("name", code.title()),
        "rank": rank,
        "metric": fields.pop("metric", "SPEND"),
        "threshold": threshold,
        **fields,
    }
    result = (await gql(LEVEL_CREATE, {"input": payload}))["memberLevelCreate"]
    assert result["errors"] == [], result["errors"]
    return result["memberLevel"]["id"]


async def add_staff(
    db: Any, email: str, role: Role, partner_pk: int | None, store_pk: int | None
) -> int:
    """A staff user row (no password: these tests never log in with it)."""
    from api.auth.models import StaffUser

    async with db.transaction() as session:
        user = StaffUser(
            email=email,
            password_hash="!",
            role=role,
            partner_id=partner_pk,
            store_id=store_pk,
        )
        session.add(user)
        await session.flush()
        return user.id
