"""Experiment tracking and reproducibility recipes.

- ``trainings``: every training (registered, rejected by its gates, failed,
  tuning trials, pruned ones), with parameters, metrics, code, lock and data
  versions, host, times and peak memory; ``training_curves`` its curves.
- ``blobs``: content-addressed lock files, diffs and catalogs.
- ``model_versions.recipe``: what rebuilds the version. Versions registered
  before this migration have none, so they cannot move to Staging again
  until they are retrained.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("recipe", sa.Text, nullable=True))
    op.create_table(
        "trainings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("mesh", sa.String(200), nullable=False),
        sa.Column("node", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("trigger", sa.String(200), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("declared_params", sa.Text, nullable=False),
        sa.Column("seed", sa.Integer, nullable=True),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("diff_sha256", sa.String(64), nullable=True),
        sa.Column("lock_sha256", sa.String(64), nullable=True),
        sa.Column("catalog_sha256", sa.String(64), nullable=True),
        sa.Column("library_versions", sa.Text, nullable=False),
        sa.Column("input_versions", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("peak_memory_mb", sa.Float, nullable=True),
        sa.Column("study", sa.String(300), nullable=True),
        sa.Column("trial", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_trainings_mesh_started", "trainings", ["mesh", "started_at"])
    op.create_index("ix_trainings_mesh_node_started", "trainings", ["mesh", "node", "started_at"])
    op.create_table(
        "training_curves",
        sa.Column("training_id", sa.String(32), sa.ForeignKey("trainings.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("series", sa.String(100), primary_key=True),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("values", sa.Text, nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("training_curves")
    op.drop_table("trainings")
    op.drop_table("blobs")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("recipe")
