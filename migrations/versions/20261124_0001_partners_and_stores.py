"""partners and stores

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "partner",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "type",
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
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "prospect",
                "active",
                "probation",
                "terminated",
                name="partnerstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "tier",
            sa.Enum("a", "b", "c", name="partnertier", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("contact_name", sa.String(length=100), nullable=True),
        sa.Column("contact_phone", sa.String(length=32), nullable=True),
        sa.Column("contact_email", sa.String(length=254), nullable=True),
        sa.Column("contract_starts_on", sa.Date(), nullable=True),
        sa.Column("contract_ends_on", sa.Date(), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["partner.id"], name=op.f("fk_partner_parent_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner")),
        sa.UniqueConstraint("code", name=op.f("uq_partner_code")),
    )
    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partner_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index("ix_partner_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_partner_type_id", ["type", "id"], unique=False)

    op.create_table(
        "partner_territory",
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_partner_territory_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("partner_id", "region_code", name=op.f("pk_partner_territory")),
    )
    with op.batch_alter_table("partner_territory", schema=None) as batch_op:
        batch_op.create_index("ix_partner_territory_region_code", ["region_code"], unique=False)

    op.create_table(
        "store",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("offers_pickup", sa.Boolean(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("open", "closed", name="storestatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_store_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store")),
        sa.UniqueConstraint("code", name=op.f("uq_store_code")),
    )
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.create_index("ix_store_partner_id_id", ["partner_id", "id"], unique=False)
        batch_op.create_index("ix_store_region_code", ["region_code"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_index("ix_store_region_code")
        batch_op.drop_index("ix_store_partner_id_id")

    op.drop_table("store")
    with op.batch_alter_table("partner_territory", schema=None) as batch_op:
        batch_op.drop_index("ix_partner_territory_region_code")

    op.drop_table("partner_territory")
    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.drop_index("ix_partner_type_id")
        batch_op.drop_index("ix_partner_status_id")
        batch_op.drop_index(batch_op.f("ix_partner_parent_id"))

    op.drop_table("partner")
