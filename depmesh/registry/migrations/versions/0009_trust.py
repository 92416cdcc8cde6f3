"""Trust: the audit trail's hash chain, signed approvals, and the governance a mesh declared.

- stage_transitions and audit_events get prev_hash / row_hash (depmesh.registry.chain); existing rows are
  chained in id order, so the trail is tamper-evident from this migration on.
- approvals get a signature (ed25519 over the request, depmesh.signing).
- mesh_governance remembers each mesh's teams declaration (its hash and policy).

Revision ID: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("stage_transitions", "audit_events"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
            batch.add_column(sa.Column("row_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("signature", sa.Text, nullable=True))
    op.create_table(
        "mesh_governance",
        sa.Column("mesh", sa.String(200), primary_key=True),
        sa.Column("teams_sha256", sa.String(64), nullable=True),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("declared_by", sa.String(200), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
    )
    from depmesh.registry.chain import rechain

    rechain(op.get_bind())


def downgrade() -> None:
    op.drop_table("mesh_governance")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("signature")
    for table in ("stage_transitions", "audit_events"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("row_hash")
            batch.drop_column("prev_hash")
