"""What each model version needs (model_versions.requirements) and waivers of known vulnerabilities.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("requirements", sa.Text, nullable=True))
    op.create_table(
        "dependency_waivers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mesh", sa.String(200), nullable=False),
        sa.Column("advisory", sa.String(200), nullable=False),
        sa.Column("package", sa.String(200), nullable=False),
        sa.Column("release_id", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dependency_waivers")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("requirements")
