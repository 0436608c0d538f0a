"""A change counter that every key, tenant and limit change bumps, so replicas
learn of changes by polling one row (see forebay.db.changes)."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    table = op.create_table(
        "changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "seq": 0}])


def downgrade() -> None:
    op.drop_table("changes")
