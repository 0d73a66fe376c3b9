"""customers, points and coupons

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 16:20:12.095130
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coupon_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "amount_off_threshold",
                "percent_off",
                "fixed_off",
                "exchange",
                name="couponkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("active", "paused", name="templatestatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("threshold_amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("discount_amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("percent_off", sa.Integer(), nullable=True),
        sa.Column("max_discount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("exchange_sku", sa.String(length=64), nullable=True),
        sa.Column(
            "claim_channel",
            sa.Enum(
                "online", "offline", "both", name="couponchannel", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column(
            "use_channel",
            sa.Enum(
                "online", "offline", "both", name="couponchannel", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("claim_starts_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim_ends_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_from", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_until", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("total_stock", sa.BigInteger(), nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("per_person_limit", sa.Integer(), nullable=False),
        sa.Column(
            "stacking",
            sa.Enum("exclusive", "stackable", name="stacking", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "cancel_policy",
            sa.Enum("restore", "void", name="cancelpolicy", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_template")),
    )
    op.create_table(
        "member_level",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column(
            "metric",
            sa.Enum("spend", "points", name="levelmetric", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("threshold", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_level")),
        sa.UniqueConstraint("code", name=op.f("uq_member_level_code")),
        sa.UniqueConstraint("rank", name=op.f("uq_member_level_rank")),
    )
    op.create_table(
        "coupon_template_partner",
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_coupon_template_partner_partner_id_partner"),
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_template.id"],
            name=op.f("fk_coupon_template_partner_template_id_coupon_template"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "template_id", "partner_id", name=op.f("pk_coupon_template_partner")
        ),
    )
    op.create_table(
        "coupon_template_store",
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_coupon_template_store_store_id_store")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_template.id"],
            name=op.f("fk_coupon_template_store_template_id_coupon_template"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("template_id", "store_id", name=op.f("pk_coupon_template_store")),
    )
    op.create_table(
        "points_earning_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("level_id", sa.Integer(), nullable=True),
        sa.Column("points_per_yuan", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("multiplier", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("starts_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ends_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["level_id"],
            ["member_level.id"],
            name=op.f("fk_points_earning_rule_level_id_member_level"),
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_points_earning_rule_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_earning_rule")),
    )
    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "merged", name="customerstatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("merged_into_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("gender", sa.String(length=16), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("contact_phone", sa.String(length=32), nullable=True),
        sa.Column("contact_email", sa.String(length=254), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("first_channel", sa.String(length=32), nullable=True),
        sa.Column("member_since", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("recruited_partner_id", sa.Integer(), nullable=True),
        sa.Column("recruited_store_id", sa.Integer(), nullable=True),
        sa.Column("recruited_guide_id", sa.Integer(), nullable=True),
        sa.Column("level_id", sa.Integer(), nullable=True),
        sa.Column("manual_level_id", sa.Integer(), nullable=True),
        sa.Column("level_period_ends_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("level_grace_ends_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["level_id"], ["member_level.id"], name=op.f("fk_customer_level_id_member_level")
        ),
        sa.ForeignKeyConstraint(
            ["manual_level_id"],
            ["member_level.id"],
            name=op.f("fk_customer_manual_level_id_member_level"),
        ),
        sa.ForeignKeyConstraint(
            ["merged_into_id"], ["customer.id"], name=op.f("fk_customer_merged_into_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["recruited_guide_id"],
            ["staff_user.id"],
            name=op.f("fk_customer_recruited_guide_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["recruited_partner_id"],
            ["partner.id"],
            name=op.f("fk_customer_recruited_partner_id_partner"),
        ),
        sa.ForeignKeyConstraint(
            ["recruited_store_id"], ["store.id"], name=op.f("fk_customer_recruited_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_contact_phone"), ["contact_phone"], unique=False
        )
        batch_op.create_index("ix_customer_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_customer_level_id_id", ["level_id", "id"], unique=False)
        batch_op.create_index("ix_customer_merged_into_id", ["merged_into_id"], unique=False)
        batch_op.create_index(
            "ix_customer_recruited_partner_id_id", ["recruited_partner_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_customer_recruited_store_id_id", ["recruited_store_id", "id"], unique=False
        )

    op.create_table(
        "coupon",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "claimed", "redeemed", "voided", name="couponstatus", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column(
            "origin",
            sa.Enum("claim", "grant", name="couponorigin", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("claim_channel", sa.String(length=32), nullable=False),
        sa.Column("claim_store_id", sa.Integer(), nullable=True),
        sa.Column("valid_from", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("redeemed_store_id", sa.Integer(), nullable=True),
        sa.Column("redeemed_by", sa.String(length=100), nullable=True),
        sa.Column("redeemed_for", sa.String(length=100), nullable=True),
        sa.Column("voided_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim_key", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_store_id"], ["store.id"], name=op.f("fk_coupon_claim_store_id_store")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_coupon_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["redeemed_store_id"], ["store.id"], name=op.f("fk_coupon_redeemed_store_id_store")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_template.id"],
            name=op.f("fk_coupon_template_id_coupon_template"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon")),
        sa.UniqueConstraint("claim_key", name=op.f("uq_coupon_claim_key")),
        sa.UniqueConstraint("code", name=op.f("uq_coupon_code")),
    )
    with op.batch_alter_table("coupon", schema=None) as batch_op:
        batch_op.create_index("ix_coupon_customer_id_id", ["customer_id", "id"], unique=False)
        batch_op.create_index(
            "ix_coupon_template_id_status", ["template_id", "status"], unique=False
        )

    op.create_table(
        "coupon_claim_count",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_coupon_claim_count_customer_id_customer"),
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_template.id"],
            name=op.f("fk_coupon_claim_count_template_id_coupon_template"),
        ),
        sa.PrimaryKeyConstraint("customer_id", "template_id", name=op.f("pk_coupon_claim_count")),
    )
    op.create_table(
        "customer_consent",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "marketing_messages",
                "profiling",
                name="consentpurpose",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("decided_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_customer_consent_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("customer_id", "purpose", name=op.f("pk_customer_consent")),
    )
    op.create_table(
        "customer_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "phone",
                "email",
                "wechat_unionid",
                "wechat_openid",
                "wecom_external_userid",
                "marketplace_buyer",
                name="identitykind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("unionid_hint", sa.String(length=64), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_customer_identity_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_identity")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_customer_identity_kind_value")),
    )
    with op.batch_alter_table("customer_identity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_identity_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_customer_identity_unionid_hint"), ["unionid_hint"], unique=False
        )

    op.create_table(
        "customer_tag",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_customer_tag_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("customer_id", "tag", name=op.f("pk_customer_tag")),
    )
    with op.batch_alter_table("customer_tag", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customer_tag_tag_customer_id", ["tag", "customer_id"], unique=False
        )

    op.create_table(
        "member_level_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("from_level_id", sa.Integer(), nullable=True),
        sa.Column("to_level_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_member_level_change_customer_id_customer"),
        ),
        sa.ForeignKeyConstraint(
            ["from_level_id"],
            ["member_level.id"],
            name=op.f("fk_member_level_change_from_level_id_member_level"),
        ),
        sa.ForeignKeyConstraint(
            ["to_level_id"],
            ["member_level.id"],
            name=op.f("fk_member_level_change_to_level_id_member_level"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_level_change")),
    )
    with op.batch_alter_table("member_level_change", schema=None) as batch_op:
        batch_op.create_index(
            "ix_member_level_change_customer_id_id", ["customer_id", "id"], unique=False
        )

    op.create_table(
        "points_account",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_points_account_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_points_account")),
    )
    op.create_table(
        "points_lot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("available_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.Column("expires_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_points_lot_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_lot")),
    )
    with op.batch_alter_table("points_lot", schema=None) as batch_op:
        batch_op.create_index(
            "ix_points_lot_available_at_pending",
            ["available_at"],
            unique=False,
            postgresql_where=sa.text("NOT released AND remaining > 0"),
            sqlite_where=sa.text("NOT released AND remaining > 0"),
        )
        batch_op.create_index(
            "ix_points_lot_customer_id_expires_at", ["customer_id", "expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_points_lot_expires_at_unspent",
            ["expires_at"],
            unique=False,
            postgresql_where=sa.text("remaining > 0"),
            sqlite_where=sa.text("remaining > 0"),
        )

    op.create_table(
        "qualifying_spend",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_qualifying_spend_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qualifying_spend")),
        sa.UniqueConstraint(
            "source_type", "source_id", name=op.f("uq_qualifying_spend_source_type_source_id")
        ),
    )
    with op.batch_alter_table("qualifying_spend", schema=None) as batch_op:
        batch_op.create_index(
            "ix_qualifying_spend_customer_id_occurred_at",
            ["customer_id", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "points_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "earn",
                "release",
                "redeem",
                "expire",
                "reverse",
                "adjust",
                "transfer",
                name="entrykind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("pending_delta", sa.BigInteger(), nullable=False),
        sa.Column("debt_delta", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("lot_id", sa.Integer(), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_points_entry_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["points_lot.id"], name=op.f("fk_points_entry_lot_id_points_lot")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_entry")),
        sa.UniqueConstraint(
            "source_type",
            "source_id",
            "kind",
            "customer_id",
            name=op.f("uq_points_entry_source_type_source_id_kind_customer_id"),
        ),
    )
    with op.batch_alter_table("points_entry", schema=None) as batch_op:
        batch_op.create_index("ix_points_entry_customer_id_id", ["customer_id", "id"], unique=False)

    # ### end Alembic commands ###


def downgrade() -> None:
    with op.batch_alter_table("points_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_points_entry_customer_id_id")

    op.drop_table("points_entry")
    with op.batch_alter_table("qualifying_spend", schema=None) as batch_op:
        batch_op.drop_index("ix_qualifying_spend_customer_id_occurred_at")

    op.drop_table("qualifying_spend")
    with op.batch_alter_table("points_lot", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_points_lot_expires_at_unspent",
            postgresql_where=sa.text("remaining > 0"),
            sqlite_where=sa.text("remaining > 0"),
        )
        batch_op.drop_index("ix_points_lot_customer_id_expires_at")
        batch_op.drop_index(
            "ix_points_lot_available_at_pending",
            postgresql_where=sa.text("NOT released AND remaining > 0"),
            sqlite_where=sa.text("NOT released AND remaining > 0"),
        )

    op.drop_table("points_lot")
    op.drop_table("points_account")
    with op.batch_alter_table("member_level_change", schema=None) as batch_op:
        batch_op.drop_index("ix_member_level_change_customer_id_id")

    op.drop_table("member_level_change")
    with op.batch_alter_table("customer_tag", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_tag_tag_customer_id")

    op.drop_table("customer_tag")
    with op.batch_alter_table("customer_identity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_identity_unionid_hint"))
        batch_op.drop_index(batch_op.f("ix_customer_identity_customer_id"))

    op.drop_table("customer_identity")
    op.drop_table("customer_consent")
    op.drop_table("coupon_claim_count")
    with op.batch_alter_table("coupon", schema=None) as batch_op:
        batch_op.drop_index("ix_coupon_template_id_status")
        batch_op.drop_index("ix_coupon_customer_id_id")

    op.drop_table("coupon")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_recruited_store_id_id")
        batch_op.drop_index("ix_customer_recruited_partner_id_id")
        batch_op.drop_index("ix_customer_merged_into_id")
        batch_op.drop_index("ix_customer_level_id_id")
        batch_op.drop_index("ix_customer_created_at_id")
        batch_op.drop_index(batch_op.f("ix_customer_contact_phone"))

    op.drop_table("customer")
    op.drop_table("points_earning_rule")
    op.drop_table("coupon_template_store")
    op.drop_table("coupon_template_partner")
    op.drop_table("member_level")
    op.drop_table("coupon_template")
    # ### end Alembic commands ###
