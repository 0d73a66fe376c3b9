"""purchasing: price lists, partner credit, purchase orders

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:31:41.326099
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partner_credit",
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("limit_cents", sa.BigInteger(), nullable=False),
        sa.Column("used_cents", sa.BigInteger(), nullable=False),
        sa.Column("payment_terms_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("limit_cents >= 0", name=op.f("ck_partner_credit_limit_not_negative")),
        sa.CheckConstraint(
            "used_cents <= limit_cents", name=op.f("ck_partner_credit_used_within_limit")
        ),
        sa.CheckConstraint("used_cents >= 0", name=op.f("ck_partner_credit_used_not_negative")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_partner_credit_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_partner_credit")),
    )
    op.create_table(
        "price_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column(
            "tier",
            sa.Enum("a", "b", "c", name="partnertier", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column(
            "partner_type",
            sa.Enum(
                "distributor",
                "agent",
                "franchise_store",
                "direct_store",
                "marketplace_shop",
                "group_leader",
                name="partnertype",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("valid_from", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "partner_id IS NOT NULL OR tier IS NOT NULL OR partner_type IS NOT NULL",
            name=op.f("ck_price_list_applies_to_someone"),
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until > valid_from",
            name=op.f("ck_price_list_valid_window"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_price_list_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_list")),
    )
    with op.batch_alter_table("price_list", schema=None) as batch_op:
        batch_op.create_index("ix_price_list_partner_id", ["partner_id"], unique=False)

    op.create_table(
        "price_list_item",
        sa.Column("price_list_id", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("min_quantity", sa.Integer(), nullable=False),
        sa.Column("pack_size", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "min_quantity >= 1", name=op.f("ck_price_list_item_min_quantity_positive")
        ),
        sa.CheckConstraint("pack_size >= 1", name=op.f("ck_price_list_item_pack_size_positive")),
        sa.CheckConstraint(
            "unit_price_cents >= 0", name=op.f("ck_price_list_item_price_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["price_list_id"],
            ["price_list.id"],
            name=op.f("fk_price_list_item_price_list_id_price_list"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["sku_id"], ["sku.id"], name=op.f("fk_price_list_item_sku_id_sku")),
        sa.PrimaryKeyConstraint("price_list_id", "sku_id", name=op.f("pk_price_list_item")),
    )
    with op.batch_alter_table("price_list_item", schema=None) as batch_op:
        batch_op.create_index("ix_price_list_item_sku_id", ["sku_id"], unique=False)

    op.create_table(
        "purchase_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "submitted",
                "approved",
                "allocated",
                "rejected",
                "shipped",
                "received",
                "closed",
                "cancelled",
                name="purchaseorderstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("rejection_reason", sa.String(length=500), nullable=True),
        sa.Column("shipped_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ship_from_store_id", sa.Integer(), nullable=True),
        sa.Column("tracking_number", sa.String(length=64), nullable=True),
        sa.Column("received_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("total_cents >= 0", name=op.f("ck_purchase_order_total_not_negative")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_purchase_order_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["ship_from_store_id"],
            ["store.id"],
            name=op.f("fk_purchase_order_ship_from_store_id_store"),
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_purchase_order_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_order")),
        sa.UniqueConstraint(
            "partner_id",
            "idempotency_key",
            name=op.f("uq_purchase_order_partner_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("purchase_order", schema=None) as batch_op:
        batch_op.create_index("ix_purchase_order_partner_id_id", ["partner_id", "id"], unique=False)
        batch_op.create_index("ix_purchase_order_status_id", ["status", "id"], unique=False)

    op.create_table(
        "price_break",
        sa.Column("price_list_id", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column("min_quantity", sa.Integer(), nullable=False),
        sa.Column("discount_bp", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "discount_bp > 0 AND discount_bp < 10000", name=op.f("ck_price_break_discount_in_range")
        ),
        sa.CheckConstraint("min_quantity >= 2", name=op.f("ck_price_break_break_min_quantity")),
        sa.ForeignKeyConstraint(
            ["price_list_id", "sku_id"],
            ["price_list_item.price_list_id", "price_list_item.sku_id"],
            name=op.f("fk_price_break_price_list_id_price_list_item"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "price_list_id", "sku_id", "min_quantity", name=op.f("pk_price_break")
        ),
    )
    op.create_table(
        "purchase_order_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purchase_order_id", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("price_list_id", sa.Integer(), nullable=False),
        sa.Column("list_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("discount_bp", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("line_total_cents", sa.BigInteger(), nullable=False),
        sa.Column("allocated", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "allocated >= 0 AND allocated <= quantity",
            name=op.f("ck_purchase_order_line_allocated_in_range"),
        ),
        sa.CheckConstraint(
            "line_total_cents = unit_price_cents * quantity",
            name=op.f("ck_purchase_order_line_line_total"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_purchase_order_line_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["price_list_id"],
            ["price_list.id"],
            name=op.f("fk_purchase_order_line_price_list_id_price_list"),
        ),
        sa.ForeignKeyConstraint(
            ["purchase_order_id"],
            ["purchase_order.id"],
            name=op.f("fk_purchase_order_line_purchase_order_id_purchase_order"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sku_id"], ["sku.id"], name=op.f("fk_purchase_order_line_sku_id_sku")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_order_line")),
        sa.UniqueConstraint(
            "purchase_order_id",
            "sku_id",
            name=op.f("uq_purchase_order_line_purchase_order_id_sku_id"),
        ),
    )
    with op.batch_alter_table("purchase_order_line", schema=None) as batch_op:
        batch_op.create_index("ix_purchase_order_line_sku_id", ["sku_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("purchase_order_line", schema=None) as batch_op:
        batch_op.drop_index("ix_purchase_order_line_sku_id")

    op.drop_table("purchase_order_line")
    op.drop_table("price_break")
    with op.batch_alter_table("purchase_order", schema=None) as batch_op:
        batch_op.drop_index("ix_purchase_order_status_id")
        batch_op.drop_index("ix_purchase_order_partner_id_id")

    op.drop_table("purchase_order")
    with op.batch_alter_table("price_list_item", schema=None) as batch_op:
        batch_op.drop_index("ix_price_list_item_sku_id")

    op.drop_table("price_list_item")
    with op.batch_alter_table("price_list", schema=None) as batch_op:
        batch_op.drop_index("ix_price_list_partner_id")

    op.drop_table("price_list")
    op.drop_table("partner_credit")
