"""Failure-mode drills: each drill's mode, injection, verdict and timing.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mesh", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(200), nullable=False),
        sa.Column("injection", sa.Text, nullable=False),
        sa.Column("caught", sa.Boolean, nullable=False),
        sa.Column("caught_by", sa.Text, nullable=False),
        sa.Column("also_fired", sa.Text, nullable=False),
        sa.Column("missed_by", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drills")
