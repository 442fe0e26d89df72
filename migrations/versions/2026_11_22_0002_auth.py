"""auth: merchants, users, signing keys, OAuth2 clients, refresh-token families and tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = False, now: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now() if now else None)


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("address", sa.String(300)),
        sa.Column("category", sa.String(50)),
        _ts("created_at", now=True),
        sa.CheckConstraint("lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180", name="location"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("merchant_id", sa.BigInteger, sa.ForeignKey("merchants.id")),
        sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
        _ts("created_at", now=True),
        _ts("updated_at", now=True),
        sa.CheckConstraint("role IN ('runner', 'merchant', 'operator')", name="role"),
        sa.CheckConstraint("(role = 'merchant') = (merchant_id IS NOT NULL)", name="merchant_owner"),
    )
    op.create_index("ix_users_merchant_id", "users", ["merchant_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB, nullable=False),
        sa.Column("private_enc", sa.LargeBinary, nullable=False),
        _ts("created_at", now=True),
        _ts("retired_at", nullable=True),
    )
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_hash", sa.String(64)),
        sa.Column("redirect_uris", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("grant_types", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("scopes", postgresql.JSONB, nullable=False, server_default="[]"),
        _ts("created_at", now=True),
    )
    op.create_table(
        "refresh_families",
        sa.Column("id", sa.String(43), primary_key=True),
        sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("session_id", sa.String(43)),
        _ts("created_at", now=True),
        _ts("expires_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.String(32)),
    )
    op.create_index("ix_refresh_families_user_id", "refresh_families", ["user_id"])
    op.create_index("ix_refresh_families_session_id", "refresh_families", ["session_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column("family_id", sa.String(43), sa.ForeignKey("refresh_families.id", ondelete="CASCADE"), nullable=False),
        _ts("created_at", now=True),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_table("refresh_families")
    op.drop_table("oauth_clients")
    op.drop_table("signing_keys")
    op.drop_table("users")
    op.drop_table("merchants")
