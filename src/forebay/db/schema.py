"""Table definitions shared by every backend (SQLite by default, PostgreSQL at scale).

Migrations under `migrations/` create these; the definitions here are what the
code queries through SQLAlchemy Core, so there is one spelling of each column.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("models", Text, nullable=True),  # JSON list of aliases; NULL means every model
    Column("is_admin", Boolean, nullable=False, server_default="0"),
    Column("default_class", String(40), nullable=True),  # NULL: the configured default
    Column("classes", Text, nullable=True),  # JSON list of traffic classes; NULL means all
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("request_id", String(40), nullable=False),
    Column("tenant_id", String(40), nullable=True),
    Column("key_id", String(40), nullable=True),
    Column("endpoint", String(40), nullable=False),
    Column("alias", String(200), nullable=True),
    Column("deployment", String(200), nullable=True),
    # A list of deployments and what happened to each: no natural bound (migration 0007).
    Column("route_reason", Text, nullable=True),
    Column("stream", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("tokens_estimated", Boolean, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("energy_wh", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(60), nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("config_revision", String(20), nullable=False),
    Column("traffic_class", String(40), nullable=True),
    # Parts of prompt_tokens and completion_tokens, priced on their own; the
    # client's wire protocol (migration 0008).
    Column("cache_read_tokens", Integer, nullable=False, server_default="0"),
    Column("cache_write_tokens", Integer, nullable=False, server_default="0"),
    Column("reasoning_tokens", Integer, nullable=False, server_default="0"),
    Column("protocol", String(40), nullable=False, server_default="openai_chat"),
    Index("ix_usage_tenant_ts", "tenant_id", "ts"),
    Index("ix_usage_key_ts", "key_id", "ts"),
    Index("ix_usage_ts", "ts"),
    # One row per request: a retried batch or a replayed spool inserts with
    # ON CONFLICT DO NOTHING against it (migration 0007).
    Index("ux_usage_request_id", "request_id", unique=True),
)


def _rollup(name: str, bucket: str) -> Table:
    """Usage summed per time bucket and (tenant, key, model, deployment, protocol).

    `bucket` counts whole hours or days since the Unix epoch (UTC): an integer
    spelled and compared the same way on SQLite and PostgreSQL. A missing
    tenant, key, model or deployment is stored as "" so that the primary key
    (and with it `ON CONFLICT DO UPDATE`) sees no NULLs. The ledger writer
    keeps these current in the same transaction as each batch of events.
    """
    return Table(
        name,
        metadata,
        Column(bucket, Integer, primary_key=True),
        Column("tenant_id", String(40), primary_key=True),
        Column("key_id", String(40), primary_key=True),
        Column("alias", String(200), primary_key=True),
        Column("deployment", String(200), primary_key=True),
        Column("protocol", String(40), primary_key=True, server_default="openai_chat"),
        Column("requests", BigInteger, nullable=False),
        Column("errors", BigInteger, nullable=False),
        Column("prompt_tokens", BigInteger, nullable=False),
        Column("completion_tokens", BigInteger, nullable=False),
        Column("cache_read_tokens", BigInteger, nullable=False, server_default="0"),
        Column("cache_write_tokens", BigInteger, nullable=False, server_default="0"),
        Column("reasoning_tokens", BigInteger, nullable=False, server_default="0"),
        Column("cost_usd", Float, nullable=False),
        Column("energy_wh", Float, nullable=False),
        Column("latency_ms_sum", Float, nullable=False),
        Index(f"ix_{name}_tenant", "tenant_id", bucket),
    )


usage_hourly = _rollup("usage_hourly", "hour")
usage_daily = _rollup("usage_daily", "day")

# One row per tenant or key that has limits; `policy` is LimitPolicy as JSON
# (see forebay.state.policy), so adding a kind of limit needs no migration.
limits = Table(
    "limits",
    metadata,
    Column("scope", String(10), primary_key=True),
    Column("subject_id", String(40), primary_key=True),
    Column("policy", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# One row, one number: bumped in the same transaction as every change to keys,
# tenants or limits, so replicas poll one row to learn that something changed
# (see forebay.db.changes).
changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

# Responses kept for previous_response_id and GET /v1/responses/{id} (migration
# 0009): always read with the tenant in the WHERE clause. `input` and `output`
# are the items as canonical JSON (protocols/canonical_json.py), `body` the
# Response object as the client got it; `expires_at` is when the purge may drop it.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("previous_response_id", String(64), nullable=True),
    Column("input", Text, nullable=False),
    Column("output", Text, nullable=False),
    Column("usage", Text, nullable=True),
    Column("body", Text, nullable=False),
    Index("ix_responses_tenant_created", "tenant_id", "created_at"),
    Index("ix_responses_expires", "expires_at"),
)
