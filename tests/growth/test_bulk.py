"""Recording a batch (``record_touchpoints``, ``touchpointsRecord``): each item on its own,
and a fixed number of statements for items that name known customers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from api.customers.models import Customer, IdentityKind
from api.errors import DomainError
from api.growth.models import TouchpointStep
from api.growth.recording import MAX_BATCH, CustomerRef, RecordOutcome, TouchpointDraft
from tests.growth.conftest import HOUR, all_touches, draft, record, record_many
from tests.growth.test_record import ANN_PHONE, by_phone, partner
from tests.orders.conftest import HQ, NOW, caller, gid, partner_admin, token_of


def outcome(result: RecordOutcome) -> tuple:
    if result.problems:
        return tuple((p.code.name, p.field) for p in result.problems)
    assert result.touchpoint is not None
    return ("created" if result.created else "existing", result.touchpoint.event_id)


async def test_each_item_is_recorded_found_or_refused_on_its_own(db, shop):
    a = partner(shop.partner_a)
    await record(db, a, event_id="before")
    results = await record_many(
        db,
        a,
        [
            draft(event_id="new"),
            draft(event_id="late", occurred_at=NOW + timedelta(days=1)),
            draft(event_id="before"),  # a retry of an earlier request
            draft(event_id="new"),  # the same event twice in the batch
            draft(event_id="new", campaign_id="card-2"),  # ... or not the same
            draft(event_id="bob", customer=CustomerRef(id=shop.bob)),
            draft(event_id="ann", customer=CustomerRef(id=shop.ann), store_id=shop.a1),
        ],
    )
    assert [outcome(r) for r in results] == [
        ("created", "new"),
        (("INVALID", ("touchpoints", "1", "occurredAt")),),
        ("existing", "before"),
        ("existing", "new"),
        (("EVENT_ID_REUSED", ("touchpoints", "4", "eventId")),),
        (("NOT_FOUND", ("touchpoints", "5", "customer", "id")),),
        ("created", "ann"),
    ]
    assert results[3].touchpoint is results[0].touchpoint
    assert sorted(t.event_id for t in await all_touches(db)) == ["ann", "before", "new"]


async def test_an_event_on_file_sent_twice_with_another_payload_is_refused_twice(db, shop):
    await record(db, HQ, event_id="before")
    results = await record_many(
        db, HQ, [draft(event_id="before", campaign_id="card-9") for _ in range(2)]
    )
    assert [outcome(r) for r in results] == [
        (("EVENT_ID_REUSED", ("touchpoints", "0", "eventId")),),
        (("EVENT_ID_REUSED", ("touchpoints", "1", "eventId")),),
    ]


async def test_a_batch_over_the_limit_records_nothing(db, shop):
    drafts = [draft(event_id=f"e{i}") for i in range(MAX_BATCH + 1)]
    try:
        await record_many(db, HQ, drafts)
    except DomainError as error:
        assert [(p.code.name, p.field) for p in error.problems] == [
            ("LIMIT_EXCEEDED", ("touchpoints",))
        ]
    else:
        raise AssertionError("a batch over the limit was accepted")
    assert await all_touches(db) == []


async def test_an_empty_batch_records_nothing(db, shop):
    assert await record_many(db, HQ, []) == []


def known(count: int, shop, guides, offset: int = 0) -> list[TouchpointDraft]:
    """Touches of customers on file: ann by phone and by id, at store a1 with its guide."""
    return [
        draft(
            event_id=f"k{offset + i}",
            customer=by_phone(ANN_PHONE) if i % 2 else CustomerRef(id=shop.ann),
            store_id=shop.a1,
            guide_id=guides.a1,
            occurred_at=NOW - i * HOUR,
        )
        for i in range(count)
    ]


async def test_a_batch_of_known_customers_costs_six_statements_whatever_its_size(
    db, shop, guides, count_queries
):
    """The events on file, the stores, the guides, the customers by id and by identity, and
    one INSERT: 5 items or 100 alike."""
    a = partner(shop.partner_a)
    with count_queries() as few:
        await record_many(db, a, known(5, shop, guides))
    with count_queries() as many:
        await record_many(db, a, known(100, shop, guides, offset=5))
    assert few.count == many.count == 6, many.statements
    assert len(await all_touches(db)) == 105


async def test_only_new_customers_cost_statements_of_their_own(db, shop, guides, count_queries):
    """Two new persons among 10 or among 60 known ones: the same statements."""

    def batch(known_count: int, offset: int) -> list[TouchpointDraft]:
        new = [
            draft(event_id=f"n{offset + i}", customer=by_phone(f"1390000{offset + i:04d}"))
            for i in range(2)
        ]
        return new + known(known_count, shop, guides, offset=offset)

    a = partner(shop.partner_a)
    with count_queries() as few:
        results = await record_many(db, a, batch(10, 0))
    with count_queries() as many:
        await record_many(db, a, batch(60, 100))
    # PostgreSQL adds an advisory lock per new person (SQLite serializes writers anyway).
    assert few.count == many.count == (12 if db.is_sqlite else 14), many.statements
    assert all(r.created for r in results)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 3 + 4


async def test_the_same_new_person_twice_in_a_batch_is_one_customer(db, shop):
    results = await record_many(
        db, HQ, [draft(event_id="a"), draft(event_id="b", step=TouchpointStep.WECOM_ADDED)]
    )
    assert results[0].touchpoint.customer_id == results[1].touchpoint.customer_id


BULK = """mutation($input: TouchpointsRecordInput!) { touchpointsRecord(input: $input) {
  results { index status touchpoint { eventId } }
  errors { code field }
} }"""


def item(event_id: str, **fields) -> dict:
    return {
        "eventId": event_id,
        "step": "WECOM_ADDED",
        "customer": {"identities": [{"kind": "WECOM_EXTERNAL_USERID", "value": f"wm_{event_id}"}]},
        "occurredAt": (NOW - HOUR).isoformat(),
        "sourceChannel": "wecom",
        **fields,
    }


async def test_touchpoints_record_over_graphql(app, shop, issue_token):
    call = caller(app, token_of(issue_token, partner_admin(shop.partner_a)))
    items = [
        item("w1", storeId=gid("Store", shop.a1)),
        item("w2", storeId="not-an-id"),
        item("w3", storeId=gid("Store", shop.b1)),
        item("w4"),
    ]
    payload = (await call(BULK, {"input": {"touchpoints": items}}))["data"]["touchpointsRecord"]
    assert [(r["index"], r["status"], r["touchpoint"]) for r in payload["results"]] == [
        (0, "CREATED", {"eventId": "w1"}),
        (1, "FAILED", None),
        (2, "FAILED", None),
        (3, "CREATED", {"eventId": "w4"}),
    ]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID", ["input", "touchpoints", "1", "storeId"]),
        ("NOT_FOUND", ["input", "touchpoints", "2", "storeId"]),
    ]
    again = (await call(BULK, {"input": {"touchpoints": items[:1]}}))["data"]["touchpointsRecord"]
    assert again["results"][0]["status"] == "EXISTING"


async def test_touchpoints_record_refuses_a_batch_over_the_limit(gql, shop):
    items = [item(f"w{i}") for i in range(MAX_BATCH + 1)]
    payload = (await gql(BULK, {"input": {"touchpoints": items}}))["touchpointsRecord"]
    assert payload["results"] == []
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("LIMIT_EXCEEDED", ["input", "touchpoints"])
    ]


async def test_identities_in_a_batch_are_normalized_before_they_are_looked_up(db, shop):
    spaced = CustomerRef(identities=[(IdentityKind.PHONE, "+86 138-1234-1234")])
    (result,) = await record_many(db, HQ, [draft(customer=spaced)])
    assert result.touchpoint.customer_id == shop.ann
