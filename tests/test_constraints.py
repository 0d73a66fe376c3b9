"""The database's own last line: CHECK constraints behind every money-like invariant.

The services keep these invariants with conditional updates and row locks; the constraints
are there for the day one of those is lost, so the change fails loudly instead of writing a
negative balance or an oversold template. Each is violated here with plain SQL, on both
engines, and must be refused; the values at the boundary must still be accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.exc import IntegrityError

from api.coupons.models import CouponChannel, CouponClaimCount, CouponKind, CouponTemplate
from api.customers.models import Customer
from api.db import Base, Database
from api.inventory.models import StockLevel
from api.loyalty.models import PointsAccount, PointsLot
from api.partners.models import PartnerTier, PartnerType
from api.purchasing.models import PartnerCredit
from tests.inventory.conftest import new_skus, new_store
from tests.purchasing.conftest import new_partner

T0 = datetime(2026, 12, 1, tzinfo=UTC)

# (constraint name, a statement that breaks it). Every row below starts valid (see `rows`).
VIOLATIONS = [
    ("ck_points_account_balance_not_negative", "UPDATE points_account SET balance = -1"),
    ("ck_points_account_pending_not_negative", "UPDATE points_account SET pending = pending - 6"),
    ("ck_points_account_debt_not_negative", "UPDATE points_account SET debt = -1"),
    ("ck_points_lot_remaining_not_negative", "UPDATE points_lot SET remaining = -1"),
    ("ck_points_lot_remaining_within_amount", "UPDATE points_lot SET remaining = amount + 1"),
    (
        "ck_points_lot_remaining_within_amount",
        "INSERT INTO points_lot (customer_id, amount, remaining, available_at, released,"
        " source_type, source_id, created_at) SELECT customer_id, 5, 6, created_at, true,"
        " 'test', 'x', created_at FROM points_lot",
    ),
    ("ck_coupon_template_issued_not_negative", "UPDATE coupon_template SET issued = -1"),
    # What a lost ``issued < total_stock`` guard would do: issue one past the stock.
    ("ck_coupon_template_issued_within_stock", "UPDATE coupon_template SET issued = issued + 4"),
    (
        "ck_coupon_template_issued_within_stock",
        "UPDATE coupon_template SET total_stock = issued - 1",
    ),
    ("ck_coupon_claim_count_claimed_not_negative", "UPDATE coupon_claim_count SET claimed = -1"),
    ("ck_stock_level_on_hand_not_negative", "UPDATE stock_level SET on_hand = -1, reserved = 0"),
    ("ck_stock_level_reserved_not_negative", "UPDATE stock_level SET reserved = -1"),
    ("ck_stock_level_reserved_within_on_hand", "UPDATE stock_level SET reserved = on_hand + 1"),
    ("ck_stock_level_safety_not_negative", "UPDATE stock_level SET safety_level = -1"),
    # What a lost credit guard would do: two submissions overdrawing the partner's credit.
    ("ck_partner_credit_used_within_limit", "UPDATE partner_credit SET used_cents = 1001"),
    ("ck_partner_credit_used_not_negative", "UPDATE partner_credit SET used_cents = -1"),
]

# The boundaries are allowed: all spent, all issued, all reserved, nothing left.
BOUNDARIES = [
    "UPDATE points_account SET balance = 0, pending = 0, debt = 0",
    "UPDATE points_lot SET remaining = amount",
    "UPDATE points_lot SET remaining = 0",
    "UPDATE coupon_template SET issued = total_stock",
    "UPDATE coupon_claim_count SET claimed = 0",
    "UPDATE stock_level SET reserved = on_hand",
    "UPDATE stock_level SET on_hand = 0, reserved = 0, safety_level = 0",
    "UPDATE partner_credit SET used_cents = limit_cents",
    "UPDATE partner_credit SET limit_cents = 0, used_cents = 0",
]


@pytest.fixture
async def rows(db: Database) -> None:
    """One valid row in each constrained table."""
    store = await new_store(db, None)
    (sku,) = await new_skus(db, "CK", 1)
    partner = await new_partner(db, "CK-P", PartnerTier.A, PartnerType.DISTRIBUTOR)
    async with db.transaction() as session:
        customer = Customer(name="顾客")
        template = CouponTemplate(
            name="满100减10",
            kind=CouponKind.FIXED_OFF,
            claim_channel=CouponChannel.BOTH,
            use_channel=CouponChannel.BOTH,
            total_stock=5,
            issued=2,
        )
        session.add_all([customer, template])
        await session.flush()
        session.add_all(
            [
                PointsAccount(customer_id=customer.id, balance=10, pending=5, debt=0),
                PointsLot(
                    customer_id=customer.id,
                    amount=10,
                    remaining=10,
                    available_at=T0,
                    released=True,
                    source_type="test",
                    source_id="lot",
                ),
                CouponClaimCount(customer_id=customer.id, template_id=template.id, claimed=1),
                StockLevel(store_id=store, sku_id=sku, on_hand=5, reserved=2, safety_level=1),
                PartnerCredit(partner_id=partner, limit_cents=1000, used_cents=400),
            ]
        )


@pytest.mark.parametrize(
    ("constraint", "statement"), VIOLATIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VIOLATIONS)]
)
async def test_the_database_refuses_a_violation(db, rows, constraint, statement):
    with pytest.raises(IntegrityError) as refused:
        async with db.transaction() as session:
            await session.execute(text(statement))
    assert constraint in str(refused.value.orig)


@pytest.mark.parametrize("statement", BOUNDARIES)
async def test_the_boundary_is_allowed(db, rows, statement):
    async with db.transaction() as session:
        assert (await session.execute(text(statement))).rowcount == 1


async def test_the_migrated_database_has_the_models_check_constraints(database):
    # Autogenerate (tests/test_migrations.py) does not compare CHECK constraints: this does.
    declared = {
        (table.name, constraint.name)
        for table in Base.metadata.sorted_tables
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }

    def reflected(sync) -> set[tuple[str, str]]:
        inspector = inspect(sync)
        return {
            (table.name, check["name"])
            for table in Base.metadata.sorted_tables
            for check in inspector.get_check_constraints(table.name)
        }

    async with database.engine.connect() as conn:
        assert await conn.run_sync(reflected) == declared
    assert {name for name, _ in VIOLATIONS} <= {name for _, name in declared}
