"""Several meshes in one registry, and rollbacks that remember what they rejected.

- ``mesh`` on model versions, stage transitions and releases: each mesh (the
  catalog's ``mesh:`` name) has its own versions, releases and Production
  pointer. Rows written before this migration get the empty mesh name; the
  first mesh that opens the registry adopts them (a registry held one mesh then).
- ``mesh_state`` replaces the single ``registry_state`` row: one row per mesh,
  the Production release and the revision every stage change bumps, locked by
  every stage change (the one serialized path).
- ``model_versions.rejected``: the version was removed from Production by a
  rollback, so no later rollback restores it.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESH = sa.String(200)


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("mesh", MESH, nullable=False, server_default=""))
        batch.add_column(sa.Column("rejected", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.drop_constraint("uq_model_versions_node_version", type_="unique")
        batch.create_unique_constraint("uq_model_versions_mesh_node_version", ["mesh", "node", "version"])
    op.drop_index("uq_one_production_per_node", "model_versions")
    op.create_index("uq_one_production_per_model", "model_versions", ["mesh", "node"], unique=True,
                    sqlite_where=sa.text("stage = 'Production'"), postgresql_where=sa.text("stage = 'Production'"))
    with op.batch_alter_table("stage_transitions") as batch:
        batch.add_column(sa.Column("mesh", MESH, nullable=False, server_default=""))
    op.create_index("ix_stage_transitions_mesh_node", "stage_transitions", ["mesh", "node", "id"])
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("mesh", MESH, nullable=False, server_default=""))
    op.create_table(
        "mesh_state",
        sa.Column("mesh", MESH, primary_key=True),
        sa.Column("production_release_id", sa.Integer, nullable=True),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    op.execute("INSERT INTO mesh_state (mesh, production_release_id, revision) "
               "SELECT '', production_release_id, revision FROM registry_state WHERE id = 1")
    op.drop_table("registry_state")


def downgrade() -> None:
    raise NotImplementedError("the registry does not go back to one mesh: restore a backup taken before 0002")
