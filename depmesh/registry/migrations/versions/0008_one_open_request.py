"""One open promotion request per release, enforced by the database (a partial unique index).

Processes that asked at the same moment each found no open request (an unlocked read) and each made one; an
approval of a spare one then outlived the promotion. Existing duplicates are voided, keeping the oldest.

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'approved')"


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE promotion_requests SET status = 'void' WHERE " + OPEN + " AND id NOT IN ("
        "SELECT MIN(id) FROM promotion_requests WHERE " + OPEN + " GROUP BY mesh, release_id)"))
    op.create_index("ux_promotion_requests_open", "promotion_requests", ["mesh", "release_id"], unique=True,
                    sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))


def downgrade() -> None:
    op.drop_index("ux_promotion_requests_open", table_name="promotion_requests")
