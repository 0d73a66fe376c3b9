"""money check constraints

The database's own last line behind the conditional updates and row locks: a points balance,
pending or debt below zero, a lot spent beyond its amount, a template issued beyond its stock
or a negative claim count is refused, so a lost lock fails loudly instead of corrupting a
ledger. (Stock levels have had theirs since 0004.)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 23:55:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, constraint name as the models give it, condition)
CHECKS = (
    ("points_account", "balance_not_negative", "balance >= 0"),
    ("points_account", "pending_not_negative", "pending >= 0"),
    ("points_account", "debt_not_negative", "debt >= 0"),
    ("points_lot", "remaining_not_negative", "remaining >= 0"),
    ("points_lot", "remaining_within_amount", "remaining <= amount"),
    ("coupon_template", "issued_not_negative", "issued >= 0"),
    ("coupon_template", "issued_within_stock", "issued <= total_stock"),
    ("coupon_claim_count", "claimed_not_negative", "claimed >= 0"),
)


def _check_foreign_keys() -> None:
    # SQLite rebuilds each table (copy, drop, rename) with foreign keys off (migrations/env.py):
    # the step SQLite's own recipe ends with, before the rebuild commits.
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the table rebuild: {broken}")


def upgrade() -> None:
    for table in dict.fromkeys(table for table, _, _ in CHECKS):
        # Batch mode: SQLite adds a constraint by rebuilding the table.
        with op.batch_alter_table(table, schema=None) as batch_op:
            for owner, name, condition in CHECKS:
                if owner == table:
                    batch_op.create_check_constraint(op.f(f"ck_{table}_{name}"), condition)
    _check_foreign_keys()


def downgrade() -> None:
    for table in reversed(dict.fromkeys(table for table, _, _ in CHECKS)):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for owner, name, _ in CHECKS:
                if owner == table:
                    batch_op.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
    _check_foreign_keys()
