"""dashboard overview: hourly gateway pulls, indexes for the overview's aggregate queries

The overview page (bot.web.overview) counts rows per week, day or hour over a recent window.
Each of these indexes lets one of its queries read only that window, most of them from the
index alone (the columns after the first are the ones the query reads): audit decisions and
tier changes by (action, at), requests by created_at, active grants by tier, grants by
created_at and revoked_at, deliveries by received_at, allowlist changes by at.
gateway_pull_hour holds each gateway's pulls per clock hour (written with the gateway row's
pull figures).

Revision ID: 0003o
Revises: 0002
Create Date: 2026-12-06 08:15:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003o'
down_revision = '0003d'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'gateway_pull_hour',
        sa.Column('gateway_id', sa.Integer(), nullable=False),
        sa.Column('hour', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('pulls', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('gateway_id', 'hour'),
    )
    op.create_index('ix_gateway_pull_hour_hour', 'gateway_pull_hour', ['hour'], unique=False)
    op.create_index('ix_audit_event_action_at', 'audit_event', ['action', 'at', 'request_id', 'grant_id'],
                    unique=False)
    op.create_index('ix_access_request_created_state_repo', 'access_request', ['created_at', 'state', 'repo'],
                    unique=False)
    op.create_index('ix_grant_status_tier_repo', 'grant', ['status', 'tier', 'repo'], unique=False)
    op.create_index('ix_grant_created_tier_status_repo', 'grant', ['created_at', 'tier', 'status', 'repo'],
                    unique=False)
    op.create_index('ix_grant_revoked_at', 'grant', ['revoked_at'], unique=False)
    op.create_index('ix_delivery_received_status_attempts', 'delivery', ['received_at', 'status', 'attempts'],
                    unique=False)
    op.create_index('ix_allowlist_change_at', 'allowlist_change', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_allowlist_change_at', table_name='allowlist_change')
    op.drop_index('ix_delivery_received_status_attempts', table_name='delivery')
    op.drop_index('ix_grant_revoked_at', table_name='grant')
    op.drop_index('ix_grant_created_tier_status_repo', table_name='grant')
    op.drop_index('ix_grant_status_tier_repo', table_name='grant')
    op.drop_index('ix_access_request_created_state_repo', table_name='access_request')
    op.drop_index('ix_audit_event_action_at', table_name='audit_event')
    op.drop_index('ix_gateway_pull_hour_hour', table_name='gateway_pull_hour')
    op.drop_table('gateway_pull_hour')
