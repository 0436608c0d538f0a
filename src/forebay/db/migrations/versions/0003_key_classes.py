"""Traffic classes per API key: the default class and the classes it may use."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("default_class", sa.String(40), nullable=True))
        batch.add_column(sa.Column("classes", sa.Text, nullable=True))  # JSON list; NULL: all


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("classes")
        batch.drop_column("default_class")
