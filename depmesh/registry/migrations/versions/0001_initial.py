"""The registry's first schema: model versions, stage transitions, releases.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node", sa.String(300), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("artifact_hash", sa.String(64), nullable=False),
        sa.Column("artifact_path", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("gates", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("input_versions", sa.Text, nullable=False),
        sa.Column("upstream_models", sa.Text, nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("library_versions", sa.Text, nullable=False),
        sa.Column("card", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("node", "version", name="uq_model_versions_node_version"),
    )
    # at most one Production version per model, enforced by the database
    op.create_index("uq_one_production_per_node", "model_versions", ["node"], unique=True,
                    sqlite_where=sa.text("stage = 'Production'"), postgresql_where=sa.text("stage = 'Production'"))
    op.create_table(
        "stage_transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node", sa.String(300), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("from_stage", sa.String(20), nullable=True),
        sa.Column("to_stage", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("release_id", sa.Integer, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stage_transitions_node", "stage_transitions", ["node", "id"])
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_release_id", sa.Integer, nullable=True),
    )
    op.create_table(
        "release_members",
        sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True),
        sa.Column("node", sa.String(300), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
    )
    state = op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("production_release_id", sa.Integer, nullable=True),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "production_release_id": None, "revision": 0}])


def downgrade() -> None:
    for table in ("registry_state", "release_members", "releases", "stage_transitions"):
        op.drop_table(table)
    op.drop_index("uq_one_production_per_node", "model_versions")
    op.drop_table("model_versions")
