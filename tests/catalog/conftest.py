"""Catalog test helpers: the mutations as documents, a valid product input, and callers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest_asyncio

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from tests.conftest import GraphQLClient

HQ = Principal("user:1", Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])

SKU_FIELDS = """id code name active
  suggestedRetailPrice { amount currency } costPrice { amount currency }
  exclusiveChannels priceBands { channel floor { amount } ceiling { amount } listPrice { amount } }
  product { code }"""

PRODUCT_CREATE = f"""
mutation($input: ProductCreateInput!) {{
  productCreate(input: $input) {{
    product {{ id code name description status skus {{ {SKU_FIELDS} }} }}
    errors {{ field message code }}
  }}
}}"""

PRODUCT_UPDATE = """
mutation($input: ProductUpdateInput!) {
  productUpdate(input: $input) {
    product { id name description status }
    errors { field message code }
  }
}"""

SKU_CREATE = f"""
mutation($input: SkuCreateInput!) {{
  skuCreate(input: $input) {{ sku {{ {SKU_FIELDS} }} errors {{ field message code }} }}
}}"""

SKU_UPDATE = f"""
mutation($input: SkuUpdateInput!) {{
  skuUpdate(input: $input) {{ sku {{ {SKU_FIELDS} }} errors {{ field message code }} }}
}}"""


def sku_input(code: str = "TEA-1", **overrides: Any) -> dict[str, Any]:
    """A valid SKU: SRP 100, cost 40; MINI_PROGRAM 80-120 listed at 99, STORE_POS 90-110."""
    values: dict[str, Any] = {
        "code": code,
        "name": f"茶杯 {code}",
        "suggestedRetailPrice": "100.00",
        "costPrice": "40.00",
        "priceBands": [
            {"channel": "MINI_PROGRAM", "floor": "80", "ceiling": "120", "listPrice": "99"},
            {"channel": "STORE_POS", "floor": "90", "ceiling": "110"},
        ],
    }
    values.update(overrides)
    return values


def product_input(code: str = "TEA", **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "code": code,
        "name": "茶具",
        "description": "景德镇",
        "skus": [sku_input(f"{code}-1"), sku_input(f"{code}-2", priceBands=[])],
    }
    values.update(overrides)
    return values


async def create_product(gql: GraphQLClient, code: str = "TEA", **overrides: Any) -> dict:
    result = (await gql(PRODUCT_CREATE, {"input": product_input(code, **overrides)}))[
        "productCreate"
    ]
    assert result["errors"] == [], result["errors"]
    return result["product"]


async def create_errors(gql: GraphQLClient, **overrides: Any) -> list[tuple]:
    """The (field, code) of each error productCreate answers for a product input."""
    result = (await gql(PRODUCT_CREATE, {"input": product_input(**overrides)}))["productCreate"]
    assert result["product"] is None
    return [(tuple(e["field"] or ()), e["code"]) for e in result["errors"]]


def pk(global_id: str) -> int:
    return int(base64.urlsafe_b64decode(global_id + "==").decode().split(":")[1])


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
