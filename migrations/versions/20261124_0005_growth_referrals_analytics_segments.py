"""growth referrals analytics segments

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 21:22:02.010054
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_spend",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("recorded_scope", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_channel_spend_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_spend")),
        sa.UniqueConstraint("recorded_scope", "idempotency_key", name="uq_channel_spend_key"),
    )
    with op.batch_alter_table("channel_spend", schema=None) as batch_op:
        batch_op.create_index("ix_channel_spend_period", ["channel", "period_start"], unique=False)

    op.create_table(
        "referral_campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("starts_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "registration_reward",
            sa.Enum("points", "coupon", name="rewardkind", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column("registration_points", sa.Integer(), nullable=True),
        sa.Column("registration_template_id", sa.Integer(), nullable=True),
        sa.Column(
            "first_order_reward",
            sa.Enum("points", "coupon", name="rewardkind", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column("first_order_points", sa.Integer(), nullable=True),
        sa.Column("first_order_template_id", sa.Integer(), nullable=True),
        sa.Column("max_rewarded_per_inviter", sa.Integer(), nullable=True),
        sa.Column("max_registrations_per_day", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["first_order_template_id"],
            ["coupon_template.id"],
            name=op.f("fk_referral_campaign_first_order_template_id_coupon_template"),
        ),
        sa.ForeignKeyConstraint(
            ["registration_template_id"],
            ["coupon_template.id"],
            name=op.f("fk_referral_campaign_registration_template_id_coupon_template"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_campaign")),
    )
    op.create_table(
        "segment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("owner_partner_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_partner_id"], ["partner.id"], name=op.f("fk_segment_owner_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment")),
    )
    with op.batch_alter_table("segment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_segment_owner_partner_id"), ["owner_partner_id"], unique=False
        )

    op.create_table(
        "segment_grant_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("campaign_key", sa.String(length=100), nullable=False),
        sa.Column(
            "action",
            sa.Enum("coupon", "points", name="grantaction", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("points", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "completed",
                "failed",
                name="jobstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segment.id"], name=op.f("fk_segment_grant_job_segment_id_segment")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_template.id"],
            name=op.f("fk_segment_grant_job_template_id_coupon_template"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_grant_job")),
        sa.UniqueConstraint("segment_id", "campaign_key", name="uq_segment_grant"),
    )
    op.create_table(
        "customer_metrics",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("orders_count", sa.Integer(), nullable=False),
        sa.Column("total_spent", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("gross_margin", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("avg_order_value", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("first_order_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("second_order_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_order_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_order_channel", sa.String(length=32), nullable=True),
        sa.Column("rfm_recency", sa.SmallInteger(), nullable=True),
        sa.Column("rfm_frequency", sa.SmallInteger(), nullable=True),
        sa.Column("rfm_monetary", sa.SmallInteger(), nullable=True),
        sa.Column("rfm_segment", sa.String(length=32), nullable=True),
        sa.Column("rfm_scored_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_customer_metrics_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_metrics")),
    )
    with op.batch_alter_table("customer_metrics", schema=None) as batch_op:
        batch_op.create_index("ix_customer_metrics_last_order", ["last_order_at"], unique=False)
        batch_op.create_index("ix_customer_metrics_orders", ["orders_count"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_customer_metrics_rfm_segment"), ["rfm_segment"], unique=False
        )
        batch_op.create_index("ix_customer_metrics_spent", ["total_spent"], unique=False)

    op.create_table(
        "referral_invite",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("inviter_id", sa.Integer(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["referral_campaign.id"],
            name=op.f("fk_referral_invite_campaign_id_referral_campaign"),
        ),
        sa.ForeignKeyConstraint(
            ["inviter_id"], ["customer.id"], name=op.f("fk_referral_invite_inviter_id_customer")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_referral_invite")),
        sa.UniqueConstraint("campaign_id", "inviter_id", name="uq_invite_inviter"),
    )
    op.create_table(
        "segment_grant_member",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_segment_grant_member_customer_id_customer"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["segment_grant_job.id"],
            name=op.f("fk_segment_grant_member_job_id_segment_grant_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "customer_id", name=op.f("pk_segment_grant_member")),
    )
    with op.batch_alter_table("segment_grant_member", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_grant_member_todo", ["job_id", "done", "customer_id"], unique=False
        )

    op.create_table(
        "order_attribution",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("guide_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("placed_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_order_attribution_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["guide_id"], ["staff_user.id"], name=op.f("fk_order_attribution_guide_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_order_attribution_order_id_customer_order"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_order_attribution_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_order_attribution_store_id_store")
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_attribution")),
    )
    with op.batch_alter_table("order_attribution", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_order_attribution_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index("ix_order_attribution_guide", ["guide_id", "placed_at"], unique=False)
        batch_op.create_index(
            "ix_order_attribution_partner", ["partner_id", "placed_at"], unique=False
        )
        batch_op.create_index("ix_order_attribution_store", ["store_id", "placed_at"], unique=False)

    op.create_table(
        "referral",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("inviter_id", sa.Integer(), nullable=False),
        sa.Column("invitee_id", sa.Integer(), nullable=False),
        sa.Column("device_digest", sa.String(length=64), nullable=True),
        sa.Column("phone_digest", sa.String(length=64), nullable=True),
        sa.Column("registered_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_order_id", sa.Integer(), nullable=True),
        sa.Column("first_order_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["referral_campaign.id"],
            name=op.f("fk_referral_campaign_id_referral_campaign"),
        ),
        sa.ForeignKeyConstraint(
            ["first_order_id"],
            ["customer_order.id"],
            name=op.f("fk_referral_first_order_id_customer_order"),
        ),
        sa.ForeignKeyConstraint(
            ["invitee_id"], ["customer.id"], name=op.f("fk_referral_invitee_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["inviter_id"], ["customer.id"], name=op.f("fk_referral_inviter_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral")),
        sa.UniqueConstraint("campaign_id", "device_digest", name="uq_referral_device"),
        sa.UniqueConstraint("campaign_id", "phone_digest", name="uq_referral_phone"),
        sa.UniqueConstraint("invitee_id", name="uq_referral_invitee"),
    )
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.create_index("ix_referral_inviter", ["inviter_id", "registered_at"], unique=False)

    op.create_table(
        "touchpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recorded_scope", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column(
            "step",
            sa.Enum(
                "marketplace_purchase",
                "qr_scan",
                "wecom_added",
                "community_joined",
                "member_registered",
                "first_order",
                "repurchase",
                name="touchpointstep",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("source_channel", sa.String(length=32), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("guide_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("occurred_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_touchpoint_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["guide_id"], ["staff_user.id"], name=op.f("fk_touchpoint_guide_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["customer_order.id"],
            name=op.f("fk_touchpoint_order_id_customer_order"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_touchpoint_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_touchpoint_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_touchpoint")),
        sa.UniqueConstraint("recorded_scope", "event_id", name="uq_touchpoint_event"),
    )
    with op.batch_alter_table("touchpoint", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_touchpoint_campaign_id"), ["campaign_id"], unique=False
        )
        batch_op.create_index(
            "ix_touchpoint_customer_step", ["customer_id", "step", "occurred_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_touchpoint_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index("ix_touchpoint_step_time", ["step", "occurred_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_touchpoint_store_id"), ["store_id"], unique=False)

    op.create_table(
        "referral_reward",
        sa.Column("referral_id", sa.Integer(), nullable=False),
        sa.Column(
            "milestone",
            sa.Enum(
                "registration",
                "first_order",
                name="referralmilestone",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "kind",
            sa.Enum("points", "coupon", name="rewardkind", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("coupon_id", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("withheld_reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupon.id"], name=op.f("fk_referral_reward_coupon_id_coupon")
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referral.id"], name=op.f("fk_referral_reward_referral_id_referral")
        ),
        sa.PrimaryKeyConstraint("referral_id", "milestone", name=op.f("pk_referral_reward")),
    )
    # ### end Alembic commands ###


def downgrade() -> None:
    op.drop_table("referral_reward")
    with op.batch_alter_table("touchpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_touchpoint_store_id"))
        batch_op.drop_index("ix_touchpoint_step_time")
        batch_op.drop_index(batch_op.f("ix_touchpoint_partner_id"))
        batch_op.drop_index("ix_touchpoint_customer_step")
        batch_op.drop_index(batch_op.f("ix_touchpoint_campaign_id"))

    op.drop_table("touchpoint")
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.drop_index("ix_referral_inviter")

    op.drop_table("referral")
    with op.batch_alter_table("order_attribution", schema=None) as batch_op:
        batch_op.drop_index("ix_order_attribution_store")
        batch_op.drop_index("ix_order_attribution_partner")
        batch_op.drop_index("ix_order_attribution_guide")
        batch_op.drop_index(batch_op.f("ix_order_attribution_customer_id"))

    op.drop_table("order_attribution")
    with op.batch_alter_table("segment_grant_member", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_grant_member_todo")

    op.drop_table("segment_grant_member")
    op.drop_table("referral_invite")
    with op.batch_alter_table("customer_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_metrics_spent")
        batch_op.drop_index(batch_op.f("ix_customer_metrics_rfm_segment"))
        batch_op.drop_index("ix_customer_metrics_orders")
        batch_op.drop_index("ix_customer_metrics_last_order")

    op.drop_table("customer_metrics")
    op.drop_table("segment_grant_job")
    with op.batch_alter_table("segment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segment_owner_partner_id"))

    op.drop_table("segment")
    op.drop_table("referral_campaign")
    with op.batch_alter_table("channel_spend", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_spend_period")

    op.drop_table("channel_spend")
    # ### end Alembic commands ###
