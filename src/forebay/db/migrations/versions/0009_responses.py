"""Stored responses of the Responses API, per tenant, with an expiry.

One row per response (its id is the key; every read also names the tenant),
the input and output items as JSON text and the Response object as returned.
`expires_at` is indexed for the purge, (tenant_id, created_at) for listing.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("usage", sa.Text, nullable=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_responses_tenant_created", "responses", ["tenant_id", "created_at"])
    op.create_index("ix_responses_expires", "responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_expires", "responses")
    op.drop_index("ix_responses_tenant_created", "responses")
    op.drop_table("responses")
