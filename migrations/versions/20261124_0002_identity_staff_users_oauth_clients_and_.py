"""identity: staff users, oauth clients and grants, audit events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=True),
        sa.Column("object_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_object", ["object_type", "object_id"], unique=False)

    op.create_table(
        "oauth_client",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("grant_types", sa.Text(), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("first_party", sa.Boolean(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_oauth_client_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_client")),
        sa.UniqueConstraint("client_id", name=op.f("uq_oauth_client_client_id")),
    )
    op.create_table(
        "staff_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "hq_admin",
                "channel_manager",
                "marketer",
                "partner_admin",
                "store_staff",
                "integration",
                "member",
                name="role",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_staff_user_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_staff_user_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_user")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_user_email")),
    )
    op.create_table(
        "oauth_authorization_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=False),
        sa.Column("expires_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_user.id"],
            name=op.f("fk_oauth_authorization_code_user_id_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_authorization_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_oauth_authorization_code_code_hash")),
    )
    op.create_table(
        "oauth_refresh_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("expires_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_user.id"],
            name=op.f("fk_oauth_refresh_token_user_id_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_refresh_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_oauth_refresh_token_token_hash")),
    )
    with op.batch_alter_table("oauth_refresh_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_refresh_token_family"), ["family"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("oauth_refresh_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_refresh_token_family"))

    op.drop_table("oauth_refresh_token")
    op.drop_table("oauth_authorization_code")
    op.drop_table("staff_user")
    op.drop_table("oauth_client")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_object")

    op.drop_table("audit_event")
