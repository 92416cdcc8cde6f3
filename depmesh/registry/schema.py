"""The registry's tables (SQLAlchemy Core). Changes go through a migration in
migrations/versions, never through create_all."""

from __future__ import annotations

import sqlalchemy as sa

STAGES = ("Development", "Staging", "Production", "Archived")

metadata = sa.MetaData()

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False, server_default=""),
    sa.Column("node", sa.String(300), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("rejected", sa.Boolean, nullable=False, server_default=sa.false()),  # removed by a rollback
    sa.Column("artifact_hash", sa.String(64), nullable=False),
    sa.Column("artifact_path", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),  # JSON
    sa.Column("gates", sa.Text, nullable=False),  # JSON: gate -> {passed, figures}
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("input_versions", sa.Text, nullable=False),  # JSON: input -> data version
    sa.Column("upstream_models", sa.Text, nullable=False),  # JSON: model -> version it was trained against
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("library_versions", sa.Text, nullable=False),  # JSON
    sa.Column("card", sa.Text, nullable=False),  # markdown
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("mesh", "node", "version", name="uq_model_versions_mesh_node_version"),
)

stage_transitions = sa.Table(
    "stage_transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False, server_default=""),
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

releases = sa.Table(
    "releases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False, server_default=""),
    # Staging | Production | PartlyRolledBack | Superseded | RolledBack
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("replaced_release_id", sa.Integer, nullable=True),  # the Production release it replaced
)

release_members = sa.Table(
    "release_members", metadata,
    sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True),
    sa.Column("node", sa.String(300), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
)

# One row per mesh: which release is Production, and a revision every stage
# change bumps. Every stage change locks this row first (SELECT ... FOR UPDATE
# on PostgreSQL; SQLite's BEGIN IMMEDIATE locks the whole file), so stage
# changes of one mesh are serialized, and a compare-and-swap on the revision
# refuses a decision taken on a stale view.
mesh_state = sa.Table(
    "mesh_state", metadata,
    sa.Column("mesh", sa.String(200), primary_key=True),
    sa.Column("production_release_id", sa.Integer, nullable=True),
    sa.Column("revision", sa.Integer, nullable=False),
)

ACTOR_MAX = 200  # stage_transitions.actor; checked before writing, on SQLite too
