"""Limits and budgets per tenant and per key (a validated JSON policy each)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "limits",
        sa.Column("scope", sa.String(10), primary_key=True),  # "tenant" or "key"
        sa.Column("subject_id", sa.String(40), primary_key=True),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limits")
