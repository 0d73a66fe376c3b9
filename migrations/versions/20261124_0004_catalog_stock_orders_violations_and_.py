"""catalog stock orders violations and outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 18:46:35.367986
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
    )
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_message_delivered_at_id", ["delivered_at", "id"], unique=False
        )

    op.create_table(
        "product",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column(
            "status",
            sa.Enum("active", "archived", name="productstatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product")),
        sa.UniqueConstraint("code", name=op.f("uq_product_code")),
    )
    with op.batch_alter_table("product", schema=None) as batch_op:
        batch_op.create_index("ix_product_status_id", ["status", "id"], unique=False)

    op.create_table(
        "sku",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("suggested_retail_price", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("cost_price", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("cost_price >= 0", name=op.f("ck_sku_cost_not_negative")),
        sa.CheckConstraint("suggested_retail_price >= 0", name=op.f("ck_sku_srp_not_negative")),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_sku_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sku")),
        sa.UniqueConstraint("code", name=op.f("uq_sku_code")),
    )
    with op.batch_alter_table("sku", schema=None) as batch_op:
        batch_op.create_index("ix_sku_product_id_id", ["product_id", "id"], unique=False)

    op.create_table(
        "price_band",
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "mini_program",
                "web",
                "store_pos",
                "tmall",
                "jd",
                "douyin",
                "group_buy",
                name="saleschannel",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("floor", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("ceiling", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("list_price", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.CheckConstraint("floor <= ceiling", name=op.f("ck_price_band_floor_below_ceiling")),
        sa.CheckConstraint("floor >= 0", name=op.f("ck_price_band_floor_not_negative")),
        sa.ForeignKeyConstraint(
            ["sku_id"], ["sku.id"], name=op.f("fk_price_band_sku_id_sku"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sku_id", "channel", name=op.f("pk_price_band")),
    )
    op.create_table(
        "sku_exclusive_channel",
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "mini_program",
                "web",
                "store_pos",
                "tmall",
                "jd",
                "douyin",
                "group_buy",
                name="saleschannel",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["sku_id"],
            ["sku.id"],
            name=op.f("fk_sku_exclusive_channel_sku_id_sku"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sku_id", "channel", name=op.f("pk_sku_exclusive_channel")),
    )
    op.create_table(
        "stock_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("safety_level", sa.BigInteger(), nullable=False),
        sa.Column("raised_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["sku_id"], ["sku.id"], name=op.f("fk_stock_alert_sku_id_sku")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_stock_alert_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_alert")),
    )
    with op.batch_alter_table("stock_alert", schema=None) as batch_op:
        batch_op.create_index("ix_stock_alert_store_id_id", ["store_id", "id"], unique=False)
        batch_op.create_index(
            "uq_stock_alert_open",
            ["store_id", "sku_id"],
            unique=True,
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        )

    op.create_table(
        "stock_level",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column("on_hand", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("safety_level", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name=op.f("ck_stock_level_on_hand_not_negative")),
        sa.CheckConstraint(
            "reserved <= on_hand", name=op.f("ck_stock_level_reserved_within_on_hand")
        ),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_stock_level_reserved_not_negative")),
        sa.CheckConstraint("safety_level >= 0", name=op.f("ck_stock_level_safety_not_negative")),
        sa.ForeignKeyConstraint(["sku_id"], ["sku.id"], name=op.f("fk_stock_level_sku_id_sku")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_stock_level_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_level")),
        sa.UniqueConstraint("store_id", "sku_id", name=op.f("uq_stock_level_store_id_sku_id")),
    )
    with op.batch_alter_table("stock_level", schema=None) as batch_op:
        batch_op.create_index("ix_stock_level_sku_id", ["sku_id"], unique=False)

    op.create_table(
        "stock_movement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "adjust",
                "reserve",
                "release",
                "sale",
                "restock",
                name="movementkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("on_hand_delta", sa.BigInteger(), nullable=False),
        sa.Column("reserved_delta", sa.BigInteger(), nullable=False),
        sa.Column("on_hand_after", sa.BigInteger(), nullable=False),
        sa.Column("reserved_after", sa.BigInteger(), nullable=False),
        sa.Column("safety_level_set", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=160), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sku_id"], ["sku.id"], name=op.f("fk_stock_movement_sku_id_sku")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_stock_movement_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movement")),
        sa.UniqueConstraint(
            "source_type",
            "source_id",
            "kind",
            "store_id",
            "sku_id",
            name=op.f("uq_stock_movement_source_type_source_id_kind_store_id_sku_id"),
        ),
    )
    with op.batch_alter_table("stock_movement", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stock_movement_store_id_sku_id_id", ["store_id", "sku_id", "id"], unique=False
        )

    op.create_table(
        "customer_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "mini_program",
                "web",
                "store_pos",
                "tmall",
                "jd",
                "douyin",
                "group_buy",
                name="saleschannel",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "fulfillment",
            sa.Enum(
                "delivery", "pickup", "in_store", name="fulfillment", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "placed",
                "ready_for_pickup",
                "completed",
                "cancelled",
                "expired",
                "partially_refunded",
                "refunded",
                name="orderstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("reported_by_partner", sa.Boolean(), nullable=False),
        sa.Column("taken_by", sa.String(length=100), nullable=True),
        sa.Column("delivery_region_code", sa.String(length=6), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("coupon_discount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("points_used", sa.BigInteger(), nullable=False),
        sa.Column("points_discount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("total", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("cost_total", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("refunded_amount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("points_earned", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=100), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("pickup_code", sa.String(length=6), nullable=True),
        sa.Column("pickup_expires_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("placed_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ready_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "refunded_amount <= total", name=op.f("ck_customer_order_refund_within_total")
        ),
        sa.CheckConstraint("total >= 0", name=op.f("ck_customer_order_total_not_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_customer_order_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_customer_order_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_customer_order_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_order")),
        sa.UniqueConstraint(
            "channel", "external_id", name=op.f("uq_customer_order_channel_external_id")
        ),
        sa.UniqueConstraint(
            "idempotency_scope",
            "idempotency_key",
            name=op.f("uq_customer_order_idempotency_scope_idempotency_key"),
        ),
    )
    with op.batch_alter_table("customer_order", schema=None) as batch_op:
        batch_op.create_index("ix_order_customer_id_id", ["customer_id", "id"], unique=False)
        batch_op.create_index("ix_order_partner_id_id", ["partner_id", "id"], unique=False)
        batch_op.create_index(
            "ix_order_status_pickup_expires_at", ["status", "pickup_expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_order_store_id_status_id", ["store_id", "status", "id"], unique=False
        )
        batch_op.create_index(
            "uq_order_open_pickup_code",
            ["store_id", "pickup_code"],
            unique=True,
            sqlite_where=sa.text("status IN ('placed', 'ready_for_pickup')"),
            postgresql_where=sa.text("status IN ('placed', 'ready_for_pickup')"),
        )

    op.create_table(
        "channel_violation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "price_below_floor",
                "price_above_ceiling",
                "cross_region_sale",
                "cross_region_redemption",
                "exclusive_sku",
                name="violationkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("source_key", sa.String(length=120), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column(
            "channel",
            sa.Enum(
                "mini_program",
                "web",
                "store_pos",
                "tmall",
                "jd",
                "douyin",
                "group_buy",
                name="saleschannel",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("coupon_id", sa.Integer(), nullable=True),
        sa.Column("sku_id", sa.Integer(), nullable=True),
        sa.Column("region_code", sa.String(length=6), nullable=True),
        sa.Column("expected_amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("actual_amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=False),
        sa.Column("detected_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupon.id"], name=op.f("fk_channel_violation_coupon_id_coupon")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_channel_violation_order_id_customer_order"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_channel_violation_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["sku_id"], ["sku.id"], name=op.f("fk_channel_violation_sku_id_sku")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_channel_violation_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_violation")),
        sa.UniqueConstraint("source_key", name=op.f("uq_channel_violation_source_key")),
    )
    with op.batch_alter_table("channel_violation", schema=None) as batch_op:
        batch_op.create_index("ix_channel_violation_kind_id", ["kind", "id"], unique=False)
        batch_op.create_index(
            "ix_channel_violation_partner_id_id", ["partner_id", "id"], unique=False
        )

    op.create_table(
        "order_coupon",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("coupon_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("discount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupon.id"], name=op.f("fk_order_coupon_coupon_id_coupon")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_order_coupon_order_id_customer_order"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_template.id"],
            name=op.f("fk_order_coupon_template_id_coupon_template"),
        ),
        sa.PrimaryKeyConstraint("order_id", "coupon_id", name=op.f("pk_order_coupon")),
    )
    with op.batch_alter_table("order_coupon", schema=None) as batch_op:
        batch_op.create_index("ix_order_coupon_coupon_id", ["coupon_id"], unique=False)

    op.create_table(
        "order_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "placed",
                "ready_for_pickup",
                "completed",
                "cancelled",
                "expired",
                "partially_refunded",
                "refunded",
                name="orderstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_order_event_order_id_customer_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_event")),
    )
    with op.batch_alter_table("order_event", schema=None) as batch_op:
        batch_op.create_index("ix_order_event_order_id_id", ["order_id", "id"], unique=False)

    op.create_table(
        "order_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.Integer(), nullable=False),
        sa.Column("sku_code", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("unit_cost", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("subtotal", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("discount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("total", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("refunded_quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_line_quantity_positive")),
        sa.CheckConstraint(
            "refunded_quantity >= 0 AND refunded_quantity <= quantity",
            name=op.f("ck_order_line_refund_within_line"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_order_line_order_id_customer_order"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_order_line_product_id_product")
        ),
        sa.ForeignKeyConstraint(["sku_id"], ["sku.id"], name=op.f("fk_order_line_sku_id_sku")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_line")),
        sa.UniqueConstraint("order_id", "line_no", name=op.f("uq_order_line_order_id_line_no")),
    )
    with op.batch_alter_table("order_line", schema=None) as batch_op:
        batch_op.create_index("ix_order_line_sku_id", ["sku_id"], unique=False)

    op.create_table(
        "order_refund",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("points_returned", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_order_refund_order_id_customer_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_refund")),
        sa.UniqueConstraint(
            "order_id", "idempotency_key", name=op.f("uq_order_refund_order_id_idempotency_key")
        ),
    )
    op.create_table(
        "order_refund_line",
        sa.Column("refund_id", sa.Integer(), nullable=False),
        sa.Column("order_line_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("restocked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_line_id"],
            ["order_line.id"],
            name=op.f("fk_order_refund_line_order_line_id_order_line"),
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"],
            ["order_refund.id"],
            name=op.f("fk_order_refund_line_refund_id_order_refund"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("refund_id", "order_line_id", name=op.f("pk_order_refund_line")),
    )
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sa.Enum("store", "warehouse", name="storekind", native_enum=False, length=32),
                nullable=False,
                server_default="store",
            )
        )
    with op.batch_alter_table("coupon", schema=None) as batch_op:
        batch_op.create_index("ix_coupon_redeemed_for", ["redeemed_for"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("coupon", schema=None) as batch_op:
        batch_op.drop_index("ix_coupon_redeemed_for")

    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_column("kind")

    op.drop_table("order_refund_line")
    op.drop_table("order_refund")
    with op.batch_alter_table("order_line", schema=None) as batch_op:
        batch_op.drop_index("ix_order_line_sku_id")

    op.drop_table("order_line")
    with op.batch_alter_table("order_event", schema=None) as batch_op:
        batch_op.drop_index("ix_order_event_order_id_id")

    op.drop_table("order_event")
    with op.batch_alter_table("order_coupon", schema=None) as batch_op:
        batch_op.drop_index("ix_order_coupon_coupon_id")

    op.drop_table("order_coupon")
    with op.batch_alter_table("channel_violation", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_violation_partner_id_id")
        batch_op.drop_index("ix_channel_violation_kind_id")

    op.drop_table("channel_violation")
    with op.batch_alter_table("customer_order", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_order_open_pickup_code",
            sqlite_where=sa.text("status IN ('placed', 'ready_for_pickup')"),
            postgresql_where=sa.text("status IN ('placed', 'ready_for_pickup')"),
        )
        batch_op.drop_index("ix_order_store_id_status_id")
        batch_op.drop_index("ix_order_status_pickup_expires_at")
        batch_op.drop_index("ix_order_partner_id_id")
        batch_op.drop_index("ix_order_customer_id_id")

    op.drop_table("customer_order")
    with op.batch_alter_table("stock_movement", schema=None) as batch_op:
        batch_op.drop_index("ix_stock_movement_store_id_sku_id_id")

    op.drop_table("stock_movement")
    with op.batch_alter_table("stock_level", schema=None) as batch_op:
        batch_op.drop_index("ix_stock_level_sku_id")

    op.drop_table("stock_level")
    with op.batch_alter_table("stock_alert", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_stock_alert_open",
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        )
        batch_op.drop_index("ix_stock_alert_store_id_id")

    op.drop_table("stock_alert")
    op.drop_table("sku_exclusive_channel")
    op.drop_table("price_band")
    with op.batch_alter_table("sku", schema=None) as batch_op:
        batch_op.drop_index("ix_sku_product_id_id")

    op.drop_table("sku")
    with op.batch_alter_table("product", schema=None) as batch_op:
        batch_op.drop_index("ix_product_status_id")

    op.drop_table("product")
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_message_delivered_at_id")

    op.drop_table("outbox_message")
