"""The four lifecycle mutations over HTTP: who may call them, what the payloads carry, the
field paths of their errors, the member's QR payload accepted at the counter, and what each
costs in SQL statements."""

from __future__ import annotations

from typing import Any

from api.auth.principal import Principal, Role
from api.db import count_statements
from api.graphql.ids import encode_id
from api.orders.models import OrderStatus
from tests.orders.conftest import (
    HQ,
    caller,
    gid,
    grant_coupon,
    lines_of,
    member,
    partner_admin,
    store_staff,
    token_of,
)
from tests.orders.test_lifecycle import order_row, pickup_order
from tests.orders.test_lifecycle_refund import two_lines

ORDER = "order { id status refundedAmount { amount currency } pointsEarned }"
MARK_READY = f"""mutation($input: OrderMarkReadyInput!) {{
  orderMarkReady(input: $input) {{ {ORDER} errors {{ field message code }} }} }}"""
PICKUP = f"""mutation($input: OrderPickupInput!) {{
  orderPickup(input: $input) {{ {ORDER} errors {{ field message code }} }} }}"""
CANCEL = f"""mutation($input: OrderCancelInput!) {{
  orderCancel(input: $input) {{ {ORDER} errors {{ field message code }} }} }}"""
REFUND = f"""mutation($input: OrderRefundInput!) {{
  orderRefund(input: $input) {{
    {ORDER} created
    refund {{ id amount {{ amount currency }} pointsReversed pointsReturned reason
      lines {{ lineId quantity amount {{ amount }} restocked }} }}
    errors {{ field message code }}
  }} }}"""
MY_ORDER = """query($id: ID!) { node(id: $id) { ... on Order { pickupCode pickupQr } } }"""
LINES = """query($id: ID!) { node(id: $id) { ... on Order { lines { id quantity } } } }"""


def as_(app: Any, issue_token: Any, principal: Principal) -> Any:
    return caller(app, token_of(issue_token, principal))


def payload(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body["errors"]
    (result,) = body["data"].values()
    return result


def errors(body: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload(body)["errors"]]


async def test_the_flow_over_http_with_the_members_qr_payload(db, shop, app, issue_token):
    order = await pickup_order(db, shop)
    order_id = gid("Order", order.id)
    ann = as_(app, issue_token, member(shop.ann))
    staff = as_(app, issue_token, store_staff(shop.partner_a, shop.a1))
    ready = payload(await staff(MARK_READY, {"input": {"orderId": order_id}}))
    assert (ready["order"]["status"], ready["errors"]) == ("READY_FOR_PICKUP", [])
    mine = (await ann(MY_ORDER, {"id": order_id}))["data"]["node"]
    assert mine["pickupCode"] == order.pickup_code
    picked = payload(await staff(PICKUP, {"input": {"qrPayload": mine["pickupQr"]}}))
    assert picked["errors"] == []
    assert (picked["order"]["status"], picked["order"]["pointsEarned"]) == ("COMPLETED", 178)
    lines = (await staff(LINES, {"id": order_id}))["data"]["node"]["lines"]
    line_id = lines[0]["id"]
    (tea,) = await lines_of(db, order.id)
    assert line_id == encode_id("OrderLine", tea.id)
    refund_input = {
        "orderId": order_id,
        "reason": "one cup was chipped",
        "idempotencyKey": "ticket-7",
        "lines": [{"lineId": line_id, "quantity": 1}],
    }
    refunded = payload(await staff(REFUND, {"input": refund_input}))
    assert refunded["errors"] == [] and refunded["created"] is True
    assert refunded["order"]["status"] == "PARTIALLY_REFUNDED"
    assert refunded["order"]["refundedAmount"] == {"amount": "89.00", "currency": "CNY"}
    refund = refunded["refund"]
    assert (refund["amount"]["amount"], refund["reason"]) == ("89.00", "one cup was chipped")
    assert (refund["pointsReversed"], refund["pointsReturned"]) == (89, 500)
    assert refund["lines"] == [
        {"lineId": line_id, "quantity": 1, "amount": {"amount": "89.00"}, "restocked": True}
    ]
    retried = payload(await staff(REFUND, {"input": refund_input}))
    assert (retried["created"], retried["refund"]["id"]) == (False, refund["id"])


async def test_a_member_cancels_over_http_but_runs_nothing_else(db, shop, app, issue_token):
    order = await pickup_order(db, shop)
    order_id = gid("Order", order.id)
    ann = as_(app, issue_token, member(shop.ann))
    for document, values in (
        (MARK_READY, {"orderId": order_id}),
        (PICKUP, {"code": order.pickup_code, "storeId": gid("Store", shop.a1)}),
        (REFUND, {"orderId": order_id, "reason": "x", "idempotencyKey": "k"}),
    ):
        assert [code for code, _ in errors(await ann(document, {"input": values}))] == ["FORBIDDEN"]
    cancelled = payload(await ann(CANCEL, {"input": {"orderId": order_id, "reason": "oops"}}))
    assert (cancelled["order"]["status"], cancelled["errors"]) == ("CANCELLED", [])


async def test_callers_without_orders_write_are_turned_away(db, shop, app, issue_token):
    order = await pickup_order(db, shop)
    marketer = caller(app, issue_token(Role.MARKETER, subject="user:m"))
    order_id = gid("Order", order.id)
    for document, values in (
        (MARK_READY, {"orderId": order_id}),
        (PICKUP, {"code": "123456", "storeId": gid("Store", shop.a1)}),
        (CANCEL, {"orderId": order_id, "reason": "x"}),
        (REFUND, {"orderId": order_id, "reason": "x", "idempotencyKey": "k"}),
    ):
        body = await marketer(document, {"input": values})
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert body["data"] is None
    assert (await order_row(db, order.id)).status is OrderStatus.PLACED


async def test_another_partners_order_is_not_found_whichever_mutation(db, shop, app, issue_token):
    order = await pickup_order(db, shop)
    order_id = gid("Order", order.id)
    for principal in (partner_admin(shop.partner_b), store_staff(shop.partner_b, shop.b1)):
        other = as_(app, issue_token, principal)
        for document, values in (
            (MARK_READY, {"orderId": order_id}),
            (CANCEL, {"orderId": order_id, "reason": "x"}),
            (REFUND, {"orderId": order_id, "reason": "x", "idempotencyKey": "k"}),
        ):
            found = errors(await other(document, {"input": values}))
            assert found == [("NOT_FOUND", ["input", "orderId"])], (principal, document)
        # At their own store, another store's code is just a wrong code.
        wrong = await other(
            PICKUP, {"input": {"code": order.pickup_code, "storeId": gid("Store", shop.b1)}}
        )
        assert errors(wrong) == [("WRONG_PICKUP_CODE", ["input", "code"])]
        foreign_store = await other(
            PICKUP, {"input": {"code": order.pickup_code, "storeId": gid("Store", shop.a1)}}
        )
        assert errors(foreign_store) == [("NOT_FOUND", ["input", "storeId"])]
    assert (await order_row(db, order.id)).status is OrderStatus.PLACED


async def test_ids_of_the_wrong_kind_are_payload_errors_on_their_field(db, shop, app, issue_token):
    order = await pickup_order(db, shop)
    hq = as_(app, issue_token, HQ)
    store_id = gid("Store", shop.a1)
    assert errors(await hq(MARK_READY, {"input": {"orderId": store_id}})) == [
        ("INVALID", ["input", "orderId"])
    ]
    refund = {
        "orderId": gid("Order", order.id),
        "reason": "x",
        "idempotencyKey": "k",
        "lines": [{"lineId": store_id, "quantity": 1}],
    }
    assert errors(await hq(REFUND, {"input": refund})) == [
        ("INVALID", ["input", "lines", "0", "lineId"])
    ]
    pickup = {"code": order.pickup_code, "storeId": gid("Order", order.id)}
    assert errors(await hq(PICKUP, {"input": pickup})) == [("INVALID", ["input", "storeId"])]


async def test_statement_counts_of_the_mutations(db, shop, app, issue_token):
    """Measured, and pinned where they are this module's alone. Each SKU of a pickup costs
    its stock UPDATE; each refunded line its guarded UPDATE and its SKU's restock, the rest
    of a refund (the points' ledger, spend, history, outbox) is the same for any number of
    lines. Every change but "ready" first reads the order's customer and locks it (two
    statements) before the order row: the lock order customer merges use too."""
    staff = as_(app, issue_token, store_staff(shop.partner_a, shop.a1))
    first = await pickup_order(db, shop, **two_lines(shop))
    more = await grant_coupon(db, shop.ann)
    second = await pickup_order(db, shop, coupon_codes=[more], **two_lines(shop))
    with count_statements(db) as ready:
        payload(await staff(MARK_READY, {"input": {"orderId": gid("Order", first.id)}}))
    with count_statements(db) as pickup:
        payload(await staff(PICKUP, {"input": {"code": first.pickup_code}}))
    await staff(PICKUP, {"input": {"code": second.pickup_code}})

    def refund_of(order_id: int, lines: list[Any]) -> dict[str, Any]:
        return {
            "input": {
                "orderId": gid("Order", order_id),
                "reason": "x",
                "idempotencyKey": "k",
                "lines": [{"lineId": encode_id("OrderLine", x.id), "quantity": 1} for x in lines],
            }
        }

    tea, _ = await lines_of(db, first.id)
    with count_statements(db) as one_line:
        assert payload(await staff(REFUND, refund_of(first.id, [tea])))["errors"] == []
    with count_statements(db) as two:
        both = await lines_of(db, second.id)
        assert payload(await staff(REFUND, refund_of(second.id, both)))["errors"] == []
    other = await pickup_order(db, shop, coupon_codes=[await grant_coupon(db, shop.ann)])
    with count_statements(db) as cancel:
        cancelled = {"input": {"orderId": gid("Order", other.id), "reason": "x"}}
        assert payload(await staff(CANCEL, cancelled))["errors"] == []
    measured = {
        "ready": ready.count,
        "pickup of 2 SKUs": pickup.count,
        "refund of 1 line": one_line.count,
        "refund of 2 lines": two.count - 1,  # less the test's own read of the lines
        "cancel with coupon and points": cancel.count,
    }
    # cancel: 20 of its own, then the order hooks (api/orders/hooks.py): the customer's
    # metrics (2), the referral first-order check (1), the funnel touchpoint (2)
    assert (measured["ready"], measured["cancel with coupon and points"]) == (5, 25), measured
    assert measured["refund of 2 lines"] - measured["refund of 1 line"] == 2, measured
