"""Products and SKUs through the API: what HQ creates and changes, what is refused (with its
code and field), and what every other caller reads."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from api.auth.principal import Role
from api.catalog.models import PriceBand, Product, Sku, SkuExclusiveChannel
from tests.catalog.conftest import (
    PRODUCT_CREATE,
    PRODUCT_UPDATE,
    SKU_CREATE,
    SKU_UPDATE,
    create_errors,
    create_product,
    pk,
    product_input,
    sku_input,
)


async def count(db, model) -> int:
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(model))


# --- productCreate ----------------------------------------------------------------------------


async def test_hq_creates_a_product_with_skus_bands_and_exclusive_channels(gql):
    product = await create_product(
        gql,
        skus=[
            sku_input("TEA-1"),
            sku_input(
                "TEA-NET",
                suggestedRetailPrice="59.9",
                costPrice="0",
                exclusiveChannels=["WEB", "MINI_PROGRAM"],
                priceBands=[{"channel": "WEB", "floor": "50", "ceiling": "59.90"}],
            ),
        ],
    )
    assert (product["code"], product["name"], product["status"]) == ("TEA", "茶具", "ACTIVE")
    first, online = product["skus"]
    assert first["suggestedRetailPrice"] == {"amount": "100.00", "currency": "CNY"}
    assert first["costPrice"] == {"amount": "40.00", "currency": "CNY"}
    assert first["exclusiveChannels"] == []
    assert first["priceBands"] == [
        {
            "channel": "MINI_PROGRAM",
            "floor": {"amount": "80.00"},
            "ceiling": {"amount": "120.00"},
            "listPrice": {"amount": "99.00"},
        },
        {
            "channel": "STORE_POS",
            "floor": {"amount": "90.00"},
            "ceiling": {"amount": "110.00"},
            "listPrice": None,
        },
    ]
    assert first["product"] == {"code": "TEA"}
    # Channels come back in channel order; amounts in cents.
    assert online["exclusiveChannels"] == ["MINI_PROGRAM", "WEB"]
    assert online["suggestedRetailPrice"]["amount"] == "59.90"
    assert online["priceBands"][0]["ceiling"] == {"amount": "59.90"}


async def test_every_problem_of_an_input_is_reported_at_once(gql, db):
    errors = await create_errors(
        gql,
        code="bad code",
        name=" ",
        skus=[sku_input("TEA-1", costPrice="-1"), sku_input("TEA-1", currency="cny")],
    )
    assert errors == [
        (("input", "code"), "INVALID"),
        (("input", "name"), "REQUIRED"),
        (("input", "skus", "0", "costPrice"), "INVALID_AMOUNT"),
        (("input", "skus", "1", "currency"), "INVALID"),
        (("input", "skus", "1", "code"), "DUPLICATE_CODE"),
    ]
    assert await count(db, Product) == 0


SKU_CASES = [
    ({"code": ""}, ("code",), "INVALID"),
    ({"code": "has space"}, ("code",), "INVALID"),
    ({"code": "x" * 65}, ("code",), "INVALID"),
    ({"name": "  "}, ("name",), "REQUIRED"),
    ({"name": "n" * 201}, ("name",), "INVALID"),
    ({"currency": "RMB1"}, ("currency",), "INVALID"),
    ({"suggestedRetailPrice": "-0.01"}, ("suggestedRetailPrice",), "INVALID_AMOUNT"),
    ({"suggestedRetailPrice": "1.005"}, ("suggestedRetailPrice",), "INVALID_AMOUNT"),
    ({"suggestedRetailPrice": "1e13"}, ("suggestedRetailPrice",), "INVALID_AMOUNT"),
    ({"suggestedRetailPrice": "NaN"}, ("suggestedRetailPrice",), "INVALID_AMOUNT"),
    ({"costPrice": "-5"}, ("costPrice",), "INVALID_AMOUNT"),
    (
        {"exclusiveChannels": ["WEB", "WEB"], "priceBands": []},
        ("exclusiveChannels", "1"),
        "DUPLICATE_CHANNEL",
    ),
    (
        {"priceBands": [{"channel": "WEB", "floor": "120", "ceiling": "80", "listPrice": "100"}]},
        ("priceBands", "0", "floor"),
        "FLOOR_ABOVE_CEILING",
    ),
    (
        {"priceBands": [{"channel": "WEB", "floor": "-1", "ceiling": "120"}]},
        ("priceBands", "0", "floor"),
        "INVALID_AMOUNT",
    ),
    (
        {"priceBands": [{"channel": "WEB", "floor": "80", "ceiling": "120.001"}]},
        ("priceBands", "0", "ceiling"),
        "INVALID_AMOUNT",
    ),
    (
        {"priceBands": [{"channel": "WEB", "floor": "80", "ceiling": "120", "listPrice": "121"}]},
        ("priceBands", "0", "listPrice"),
        "LIST_PRICE_OUTSIDE_BAND",
    ),
    (
        {"priceBands": [{"channel": "WEB", "floor": "80", "ceiling": "120", "listPrice": "79.99"}]},
        ("priceBands", "0", "listPrice"),
        "LIST_PRICE_OUTSIDE_BAND",
    ),
    (  # a group-buy band below the SRP of 100 must say what the group buy charges
        {"priceBands": [{"channel": "GROUP_BUY", "floor": "60", "ceiling": "80"}]},
        ("priceBands", "0", "listPrice"),
        "DEFAULT_PRICE_OUTSIDE_BAND",
    ),
    (
        {
            "priceBands": [
                {"channel": "WEB", "floor": "80", "ceiling": "120"},
                {"channel": "WEB", "floor": "90", "ceiling": "110"},
            ]
        },
        ("priceBands", "1", "channel"),
        "DUPLICATE_CHANNEL",
    ),
    (
        {
            "exclusiveChannels": ["MINI_PROGRAM"],
            "priceBands": [{"channel": "TMALL", "floor": "80", "ceiling": "120"}],
        },
        ("priceBands", "0", "channel"),
        "CHANNEL_NOT_SOLD",
    ),
    (
        {"priceBands": [{"channel": "WEB", "floor": "80", "ceiling": "120"}] * 8},
        ("priceBands",),
        "TOO_MANY",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "code"), SKU_CASES)
async def test_a_sku_input_is_refused_with_its_code_and_field(gql, db, overrides, field, code):
    errors = await create_errors(gql, skus=[{**sku_input("TEA-1"), **overrides}])
    assert errors == [(("input", "skus", "0", *field), code)]
    assert await count(db, Sku) == 0


async def test_a_band_of_the_srp_itself_and_a_zero_price_are_fine(gql):
    product = await create_product(
        gql,
        skus=[
            sku_input(
                "FREE-1",
                suggestedRetailPrice="0",
                costPrice="0",
                priceBands=[{"channel": "WEB", "floor": "0", "ceiling": "0"}],
            ),
            sku_input(
                "EDGE-1",
                priceBands=[{"channel": "WEB", "floor": "100", "ceiling": "100"}],
            ),
        ],
    )
    assert [s["priceBands"][0]["floor"]["amount"] for s in product["skus"]] == ["0.00", "100.00"]


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"skus": []}, ("skus",), "REQUIRED"),
        ({"skus": [sku_input(f"S-{i}") for i in range(101)]}, ("skus",), "TOO_MANY"),
        ({"description": "d" * 2001}, ("description",), "INVALID"),
        ({"code": "-dash", "skus": [sku_input("D-1")]}, ("code",), "INVALID"),
    ],
)
async def test_a_product_input_is_refused_with_its_code_and_field(gql, overrides, field, code):
    assert await create_errors(gql, **overrides) == [(("input", *field), code)]


async def test_taken_codes_are_refused_and_nothing_is_written(gql, db):
    await create_product(gql, "TEA")
    assert await create_errors(gql, code="TEA", skus=[sku_input("OTHER-1")]) == [
        (("input", "code"), "DUPLICATE_CODE")
    ]
    # A SKU code another product holds: refused on that SKU, and the product is not created.
    errors = await create_errors(gql, code="CUP", skus=[sku_input("CUP-1"), sku_input("TEA-2")])
    assert errors == [(("input", "skus", "1", "code"), "DUPLICATE_CODE")]
    assert (await count(db, Product), await count(db, Sku)) == (1, 2)
    assert await count(db, PriceBand) == 2  # TEA-1's two bands, nothing of CUP
    assert await count(db, SkuExclusiveChannel) == 0


async def test_concurrent_creations_of_one_code_make_one_product(gql, db):
    results = await asyncio.gather(
        *(
            gql(PRODUCT_CREATE, {"input": product_input("RACE", skus=[sku_input(f"R-{i}")])})
            for i in range(20)
        )
    )
    outcomes = Counter(
        r["productCreate"]["errors"][0]["code"] if r["productCreate"]["errors"] else "ok"
        for r in results
    )
    assert outcomes == {"ok": 1, "DUPLICATE_CODE": 19}
    assert (await count(db, Product), await count(db, Sku)) == (1, 1)


async def test_concurrent_products_naming_one_sku_code_make_one_sku(gql, db):
    results = await asyncio.gather(
        *(
            gql(PRODUCT_CREATE, {"input": product_input(f"P{i}", skus=[sku_input("SAME")])})
            for i in range(20)
        )
    )
    errors = [r["productCreate"]["errors"] for r in results]
    assert Counter(len(e) for e in errors) == {0: 1, 1: 19}
    assert {(tuple(e[0]["field"]), e[0]["code"]) for e in errors if e} == {
        (("input", "skus", "0", "code"), "DUPLICATE_CODE")
    }
    assert (await count(db, Product), await count(db, Sku)) == (1, 1)


async def test_only_hq_writes_the_catalog(as_principal, gql):
    partner_admin = as_principal(Role.PARTNER_ADMIN, partner_id=1)
    body = await partner_admin.raw(PRODUCT_CREATE, {"input": product_input()})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # A partner's client holding the scope anyway (HQ never grants it) is refused in the
    # payload: the catalog is the brand's.
    client = as_principal(Role.INTEGRATION, partner_id=1, scopes={"catalog:write"})
    result = (await client(PRODUCT_CREATE, {"input": product_input()}))["productCreate"]
    assert result["product"] is None
    assert [(e["field"], e["code"]) for e in result["errors"]] == [(None, "FORBIDDEN")]
    channel_manager = as_principal(Role.CHANNEL_MANAGER)
    created = (await channel_manager(PRODUCT_CREATE, {"input": product_input()}))["productCreate"]
    assert created["errors"] == []


# --- productUpdate, skuCreate, skuUpdate -------------------------------------------------------


async def product_update(gql, **input):
    return (await gql(PRODUCT_UPDATE, {"input": input}))["productUpdate"]


async def sku_update(gql, **input):
    return (await gql(SKU_UPDATE, {"input": input}))["skuUpdate"]


def fields_and_codes(payload) -> list[tuple]:
    return [(tuple(e["field"] or ()), e["code"]) for e in payload["errors"]]


async def test_update_renames_describes_and_archives(gql):
    product = await create_product(gql)
    updated = await product_update(gql, id=product["id"], name=" 新茶具 ", status="ARCHIVED")
    assert updated["product"] == {
        "id": product["id"],
        "name": "新茶具",
        "description": "景德镇",
        "status": "ARCHIVED",
    }
    cleared = await product_update(gql, id=product["id"], description=None, status="ACTIVE")
    assert (cleared["product"]["description"], cleared["product"]["status"]) == (None, "ACTIVE")


async def test_update_refusals(gql):
    product = await create_product(gql)
    assert fields_and_codes(await product_update(gql, id=product["id"], name=None)) == [
        (("input", "name"), "REQUIRED")
    ]
    assert fields_and_codes(await product_update(gql, id=product["id"], name="")) == [
        (("input", "name"), "REQUIRED")
    ]
    assert fields_and_codes(await product_update(gql, id=product["id"], status=None)) == [
        (("input", "status"), "REQUIRED")
    ]
    missing = "UHJvZHVjdDo5OTk"  # Product:999
    assert fields_and_codes(await product_update(gql, id=missing, name="x")) == [
        (("input", "id"), "NOT_FOUND")
    ]
    sku_id = product["skus"][0]["id"]
    assert fields_and_codes(await product_update(gql, id=sku_id, name="x")) == [
        (("input", "id"), "INVALID")
    ]


async def test_sku_create_adds_a_variant(gql, db):
    product = await create_product(gql)
    added = (
        await gql(SKU_CREATE, {"input": {"productId": product["id"], "sku": sku_input("TEA-3")}})
    )["skuCreate"]
    assert added["errors"] == []
    assert (added["sku"]["code"], added["sku"]["product"]) == ("TEA-3", {"code": "TEA"})
    assert len(added["sku"]["priceBands"]) == 2
    taken = (
        await gql(SKU_CREATE, {"input": {"productId": product["id"], "sku": sku_input("TEA-1")}})
    )["skuCreate"]
    assert fields_and_codes(taken) == [(("input", "sku", "code"), "DUPLICATE_CODE")]
    not_a_number = await gql.raw(
        SKU_CREATE,
        {"input": {"productId": product["id"], "sku": sku_input("TEA-4", costPrice="x1")}},
    )
    assert not_a_number["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    invalid = (
        await gql(
            SKU_CREATE,
            {"input": {"productId": product["id"], "sku": sku_input("TEA-4", costPrice="-1")}},
        )
    )["skuCreate"]
    assert fields_and_codes(invalid) == [(("input", "sku", "costPrice"), "INVALID_AMOUNT")]
    missing = (
        await gql(SKU_CREATE, {"input": {"productId": "UHJvZHVjdDo5OTk", "sku": sku_input("X-1")}})
    )["skuCreate"]
    assert fields_and_codes(missing) == [(("input", "productId"), "NOT_FOUND")]
    assert await count(db, Sku) == 3


async def test_sku_update_replaces_prices_bands_and_channels(gql):
    product = await create_product(gql)
    sku = product["skus"][0]
    updated = await sku_update(
        gql,
        id=sku["id"],
        name="大茶杯",
        suggestedRetailPrice="105",
        costPrice="41.5",
        active=False,
        exclusiveChannels=["MINI_PROGRAM"],
        priceBands=[{"channel": "MINI_PROGRAM", "floor": "95", "ceiling": "130"}],
    )
    assert updated["errors"] == []
    got = updated["sku"]
    assert (got["name"], got["active"], got["exclusiveChannels"]) == (
        "大茶杯",
        False,
        ["MINI_PROGRAM"],
    )
    assert (got["suggestedRetailPrice"]["amount"], got["costPrice"]["amount"]) == (
        "105.00",
        "41.50",
    )
    assert [b["channel"] for b in got["priceBands"]] == ["MINI_PROGRAM"]
    cleared = await sku_update(gql, id=sku["id"], exclusiveChannels=[], priceBands=[])
    assert (cleared["sku"]["exclusiveChannels"], cleared["sku"]["priceBands"]) == ([], [])


async def test_sku_update_checks_the_bands_it_keeps(gql):
    product = await create_product(gql)
    sku = product["skus"][0]  # MINI_PROGRAM 80-120 at 99, STORE_POS 90-110 at the SRP
    # The SRP leaves the STORE_POS band, which has no list price of its own.
    moved = await sku_update(gql, id=sku["id"], suggestedRetailPrice="111")
    assert fields_and_codes(moved) == [
        (("input", "suggestedRetailPrice"), "DEFAULT_PRICE_OUTSIDE_BAND")
    ]
    # Exclusive to the web: the kept bands are for other channels.
    narrowed = await sku_update(gql, id=sku["id"], exclusiveChannels=["WEB"])
    assert fields_and_codes(narrowed) == [
        (("input", "exclusiveChannels"), "CHANNEL_NOT_SOLD"),
        (("input", "exclusiveChannels"), "CHANNEL_NOT_SOLD"),
    ]
    # Both at once with new bands are fine.
    fine = await sku_update(
        gql,
        id=sku["id"],
        suggestedRetailPrice="111",
        exclusiveChannels=["WEB"],
        priceBands=[{"channel": "WEB", "floor": "100", "ceiling": "120"}],
    )
    assert fine["errors"] == []


@pytest.mark.parametrize(
    ("input", "expected"),
    [
        ({"name": None}, [(("input", "name"), "REQUIRED")]),
        ({"active": None}, [(("input", "active"), "REQUIRED")]),
        ({"priceBands": None}, [(("input", "priceBands"), "REQUIRED")]),
        ({"exclusiveChannels": None}, [(("input", "exclusiveChannels"), "REQUIRED")]),
        ({"costPrice": "0.001"}, [(("input", "costPrice"), "INVALID_AMOUNT")]),
        ({"suggestedRetailPrice": "-1"}, [(("input", "suggestedRetailPrice"), "INVALID_AMOUNT")]),
        (
            {"exclusiveChannels": ["WEB", "WEB"], "priceBands": []},
            [(("input", "exclusiveChannels", "1"), "DUPLICATE_CHANNEL")],
        ),
        (
            {"priceBands": [{"channel": "JD", "floor": "1", "ceiling": "2", "listPrice": "3"}]},
            [(("input", "priceBands", "0", "listPrice"), "LIST_PRICE_OUTSIDE_BAND")],
        ),
    ],
)
async def test_sku_update_refusals(gql, input, expected):
    sku = (await create_product(gql))["skus"][0]
    assert fields_and_codes(await sku_update(gql, id=sku["id"], **input)) == expected


async def test_sku_update_of_a_missing_sku(gql):
    product = await create_product(gql)
    missing = await sku_update(gql, id="U2t1Ojk5OQ", name="x")  # Sku:999
    assert fields_and_codes(missing) == [(("input", "id"), "NOT_FOUND")]
    wrong_type = await sku_update(gql, id=product["id"], name="x")
    assert fields_and_codes(wrong_type) == [(("input", "id"), "INVALID")]


# --- reading --------------------------------------------------------------------------------


async def test_cost_is_hq_only_and_everyone_signed_in_browses(gql, as_principal, app):
    product = await create_product(gql)
    query = (
        "query($id: ID!) { node(id: $id) { ... on Product { code skus { code "
        "costPrice { amount } suggestedRetailPrice { amount } } } } "
        'products { nodes { code } } sku(code: "TEA-1") { code costPrice { amount } } }'
    )
    hq = await gql(query, {"id": product["id"]})
    assert hq["node"]["skus"][0]["costPrice"] == {"amount": "40.00"}
    assert hq["sku"] == {"code": "TEA-1", "costPrice": {"amount": "40.00"}}
    for role, claims in (
        (Role.MEMBER, {"customer_id": 7}),
        (Role.PARTNER_ADMIN, {"partner_id": 1}),
        (Role.STORE_STAFF, {"partner_id": 1, "store_id": 1}),
        (Role.INTEGRATION, {"partner_id": 1, "scopes": set()}),
    ):
        data = await as_principal(role, **claims)(query, {"id": product["id"]})
        assert data["products"] == {"nodes": [{"code": "TEA"}]}
        assert [s["costPrice"] for s in data["node"]["skus"]] == [None, None]
        assert data["node"]["skus"][0]["suggestedRetailPrice"] == {"amount": "100.00"}
        assert data["sku"] == {"code": "TEA-1", "costPrice": None}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qudao.test"
    ) as http:
        body = (await http.post("/graphql", json={"query": "{ products { nodes { id } } }"})).json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_product_filters(gql):
    await create_product(gql, "TEA", name="青花茶具")
    await create_product(
        gql,
        "NET",
        name="网络专供杯",
        skus=[
            sku_input(
                "NET-1",
                exclusiveChannels=["MINI_PROGRAM"],
                priceBands=[{"channel": "MINI_PROGRAM", "floor": "1", "ceiling": "200"}],
            )
        ],
    )
    old = await create_product(gql, "OLD", name="旧款", skus=[sku_input("OLD-1", priceBands=[])])
    await product_update(gql, id=old["id"], status="ARCHIVED")
    off = await create_product(gql, "OFF", name="下架杯", skus=[sku_input("OFF-1", priceBands=[])])
    await sku_update(gql, id=off["skus"][0]["id"], active=False)

    async def codes(filter: str) -> list[str]:
        data = await gql(f"{{ products(filter: {filter}) {{ totalCount nodes {{ code }} }} }}")
        nodes = [n["code"] for n in data["products"]["nodes"]]
        assert data["products"]["totalCount"] == len(nodes)
        return nodes

    assert await codes("{}") == ["TEA", "NET", "OLD", "OFF"]
    assert await codes('{search: "茶具"}') == ["TEA"]
    assert await codes('{search: "net"}') == ["NET"]  # the code, any case
    assert await codes('{search: "old-1"}') == ["OLD"]  # a SKU's code
    assert await codes('{search: "%"}') == ["TEA", "NET", "OLD", "OFF"]  # no wildcards
    assert await codes("{statuses: [ARCHIVED]}") == ["OLD"]
    assert await codes("{sellableOn: MINI_PROGRAM}") == ["TEA", "NET"]
    assert await codes("{sellableOn: STORE_POS}") == ["TEA"]
    data = await gql("{ products(reverse: true, first: 2) { nodes { code } } }")
    assert [n["code"] for n in data["products"]["nodes"]] == ["OFF", "OLD"]


async def test_default_price_per_channel(gql, as_principal):
    product = await create_product(
        gql,
        skus=[
            sku_input("TEA-1"),
            sku_input("NET-1", exclusiveChannels=["WEB"], priceBands=[]),
        ],
    )
    query = (
        "query($id: ID!) { node(id: $id) { ... on Product { skus { code "
        "mp: defaultPrice(channel: MINI_PROGRAM) { amount currency } "
        "pos: defaultPrice(channel: STORE_POS) { amount } "
        "web: defaultPrice(channel: WEB) { amount } } } } }"
    )
    member = as_principal(Role.MEMBER, customer_id=7)
    skus = (await member(query, {"id": product["id"]}))["node"]["skus"]
    assert skus == [
        {
            "code": "TEA-1",
            "mp": {"amount": "99.00", "currency": "CNY"},  # the band's list price
            "pos": {"amount": "100.00"},  # the SRP, inside the band
            "web": {"amount": "100.00"},  # no band: the SRP
        },
        {"code": "NET-1", "mp": None, "pos": None, "web": {"amount": "100.00"}},
    ]
    await product_update(gql, id=product["id"], status="ARCHIVED")
    skus = (await member(query, {"id": product["id"]}))["node"]["skus"]
    assert {s["web"] is None for s in skus} == {True}


async def test_nodes_and_the_sku_lookup(gql):
    product = await create_product(gql)
    sku = product["skus"][0]
    data = await gql(
        "query($p: ID!, $s: ID!) { nodes(ids: [$p, $s]) { id "
        "... on Sku { code product { id } } ... on Product { code } } "
        'missing: sku(code: "NOPE") { id } padded: sku(code: " TEA-1 ") { id } }',
        {"p": product["id"], "s": sku["id"]},
    )
    assert data["nodes"] == [
        {"id": product["id"], "code": "TEA"},
        {"id": sku["id"], "code": "TEA-1", "product": {"id": product["id"]}},
    ]
    assert (data["missing"], data["padded"]) == (None, {"id": sku["id"]})
    assert pk(sku["id"]) == 1
