"""Hourly and daily usage rollups, backfilled from the events already recorded;
an index for per-key usage over time (key budgets are seeded from it)."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

ROLLUPS = (("usage_hourly", "hour", 3600), ("usage_daily", "day", 86400))
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens")
FLOAT_SUMS = ("cost_usd", "energy_wh", "latency_ms_sum")


def upgrade() -> None:
    op.create_index("ix_usage_key_ts", "usage_events", ["key_id", "ts"])
    for name, bucket, width in ROLLUPS:
        op.create_table(
            name,
            sa.Column(bucket, sa.Integer, primary_key=True),
            sa.Column("tenant_id", sa.String(40), primary_key=True),
            sa.Column("key_id", sa.String(40), primary_key=True),
            sa.Column("alias", sa.String(200), primary_key=True),
            sa.Column("deployment", sa.String(200), primary_key=True),
            *(sa.Column(c, sa.BigInteger, nullable=False) for c in SUMS),
            *(sa.Column(c, sa.Float, nullable=False) for c in FLOAT_SUMS),
        )
        op.create_index(f"ix_{name}_tenant", name, ["tenant_id", bucket])
        op.execute(_backfill(name, bucket, width))


def _backfill(name: str, bucket: str, width: int) -> str:
    # floor(ts / width), exact even where the division rounds up to the next
    # integer, spelled so that SQLite and PostgreSQL compute the same bucket.
    if op.get_bind().dialect.name == "postgresql":
        approx = f"CAST(floor(ts / {width}) AS BIGINT)"
    else:
        approx = f"CAST(ts / {width} AS INTEGER)"  # ts >= 0: truncation is floor
    return f"""
        INSERT INTO {name} ({bucket}, tenant_id, key_id, alias, deployment, requests,
            errors, prompt_tokens, completion_tokens, cost_usd, energy_wh, latency_ms_sum)
        SELECT b - CASE WHEN ts < b * {width} THEN 1 ELSE 0 END,
            COALESCE(tenant_id, ''), COALESCE(key_id, ''), COALESCE(alias, ''),
            COALESCE(deployment, ''), COUNT(*),
            SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens),
            SUM(completion_tokens), SUM(cost_usd), SUM(energy_wh), SUM(latency_ms)
        FROM (SELECT {approx} AS b, * FROM usage_events) AS e
        GROUP BY 1, 2, 3, 4, 5
    """  # noqa: S608 (constants only)


def downgrade() -> None:
    for name, _, _ in ROLLUPS:
        op.drop_table(name)
    op.drop_index("ix_usage_key_ts", "usage_events")
