"""Rollouts (shadow and canary), what each scoring run saw per arm, and whether a promotion request
asks for a canary.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mesh", sa.String(200), nullable=False),
        sa.Column("release_id", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("candidates", sa.Text, nullable=False),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_table(
        "rollout_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("node", sa.String(300), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("figures", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rollout_metrics_rollout_step", "rollout_metrics", ["rollout_id", "step"])
    with op.batch_alter_table("promotion_requests") as batch:
        batch.add_column(sa.Column("rollout", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promotion_requests") as batch:
        batch.drop_column("rollout")
    op.drop_table("rollout_metrics")
    op.drop_table("rollouts")
