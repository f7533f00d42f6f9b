"""session generations, the shared session key, self-service owner lock rows, domain proofs

Revision ID: 0003s
Revises: 0002
Create Date: 2026-12-06 08:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003s'
down_revision = '0003u'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_generation",
        sa.Column("github_user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("github_user_id"),
    )
    op.create_table(
        "instance_secret",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "self_service_owner",
        sa.Column("github_user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("grants_created", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("github_user_id"),
    )
    op.create_table(
        "domain_proof",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("github_user_id", sa.BigInteger(), nullable=False),
        sa.Column("domain", sqlmodel.sql.sqltypes.AutoString(length=253), nullable=False),
        sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("checked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("verified_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["grant_id"], ["grant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_domain_proof_grant_id"), "domain_proof", ["grant_id"], unique=False)
    op.create_index(op.f("ix_domain_proof_github_user_id"), "domain_proof", ["github_user_id"], unique=False)
    op.create_index(op.f("ix_domain_proof_state"), "domain_proof", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_domain_proof_state"), table_name="domain_proof")
    op.drop_index(op.f("ix_domain_proof_github_user_id"), table_name="domain_proof")
    op.drop_index(op.f("ix_domain_proof_grant_id"), table_name="domain_proof")
    op.drop_table("domain_proof")
    op.drop_table("self_service_owner")
    op.drop_table("instance_secret")
    op.drop_table("session_generation")
