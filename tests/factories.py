"""Small builders for tests: create partners and stores through the API, as clients do."""

from __future__ import annotations

from typing import Any

PARTNER_CREATE = """
mutation($input: PartnerCreateInput!) {
  partnerCreate(input: $input) {
    partner { id code name type status tier territories parent { id } }
    errors { field message code }
  }
}"""

STORE_CREATE = """
mutation($input: StoreCreateInput!) {
  storeCreate(input: $input) {
    store { id code name regionCode offersPickup partner { id } }
    errors { field message code }
  }
}"""


async def create_partner(gql: Any, code: str, **fields: Any) -> dict[str, Any]:
    payload = {"code": code, "name": fields.pop("name", f"Partner {code}"), "type": "AGENT"}
    payload.update(fields)
    result = (await gql(PARTNER_CREATE, {"input": payload}))["partnerCreate"]
    assert result["errors"] == [], result["errors"]
    return result["partner"]


async def create_store(
    gql: Any, code: str, partner_id: str | None, **fields: Any
) -> dict[str, Any]:
    payload = {
        "code": code,
        "name": fields.pop("name", f"Store {code}"),
        "regionCode": fields.pop("regionCode", "310115"),
        "address": fields.pop("address", "上海市浦东新区世纪大道100号"),
        "partnerId": partner_id,
    }
    payload.update(fields)
    result = (await gql(STORE_CREATE, {"input": payload}))["storeCreate"]
    assert result["errors"] == [], result["errors"]
    return result["store"]


CUSTOMER_UPSERT = """
mutation($input: CustomerUpsertInput!) {
  customerUpsert(input: $input) {
    customer { id name status tags identities { kind value } }
    created
    errors { field message code }
  }
}"""


async def create_customer(gql: Any, phone: str | None = None, **fields: Any) -> dict[str, Any]:
    """A customer through ``customerUpsert`` (as an HQ caller): ``phone`` becomes a PHONE
    identity; ``identities=[{"kind": ..., "value": ...}]`` adds others; any other input field
    (name, tags, attributes, consents ...) passes through. Returns the customer."""
    identities = list(fields.pop("identities", []))
    if phone is not None:
        identities.insert(0, {"kind": "PHONE", "value": phone})
    payload = {"identities": identities, **fields}
    result = (await gql(CUSTOMER_UPSERT, {"input": payload}))["customerUpsert"]
    assert result["errors"] == [], result["errors"]
    return result["customer"]
