"""One ledger row per request, and no route reason too long for its column.

request_id becomes unique, so that a retried batch whose first commit did
succeed, or a spool replayed at start, inserts with ON CONFLICT DO NOTHING
instead of writing a request twice. Duplicates already recorded that way are
removed first (the first row of each request is kept), and when there were
any the rollups, which counted them, are recomputed from the events.

route_reason becomes TEXT on PostgreSQL: it lists deployments and what
happened to each, which has no natural bound (five cooling-down deployments
made 420 characters). SQLite neither enforces VARCHAR lengths nor tells
VARCHAR from TEXT, so its table is left as it is rather than copied whole.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

# The rollup tables as 0004 created them (a migration does not import the
# application: it must keep meaning what it meant when it was written).
ROLLUPS = (("usage_hourly", "hour", 3600), ("usage_daily", "day", 86400))


def upgrade() -> None:
    bind = op.get_bind()
    extra = bind.execute(
        sa.text("SELECT COUNT(*) - COUNT(DISTINCT request_id) FROM usage_events")
    ).scalar()
    if extra:
        op.execute(
            "DELETE FROM usage_events WHERE id NOT IN "
            "(SELECT MIN(id) FROM usage_events GROUP BY request_id)"
        )
        for name, bucket, width in ROLLUPS:
            op.execute(f"DELETE FROM {name}")  # noqa: S608 (constants only)
            op.execute(_recompute(name, bucket, width, bind.dialect.name))
    op.create_index("ux_usage_request_id", "usage_events", ["request_id"], unique=True)
    if bind.dialect.name == "postgresql":
        op.alter_column(
            "usage_events", "route_reason", type_=sa.Text(), existing_type=sa.String(300)
        )


def _recompute(name: str, bucket: str, width: int, dialect: str) -> str:
    # floor(ts / width), exact even where the division rounds up (as in 0004).
    if dialect == "postgresql":
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
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "usage_events",
            "route_reason",
            type_=sa.String(300),
            existing_type=sa.Text(),
            postgresql_using="left(route_reason, 300)",
        )
    op.drop_index("ux_usage_request_id", "usage_events")
