"""Cached and reasoning tokens, and the client's wire protocol, in the ledger.

usage_events gains cache_read_tokens, cache_write_tokens and reasoning_tokens
(parts of prompt_tokens and completion_tokens, priced on their own) and
protocol (openai_chat, anthropic_messages, ...). Every request recorded before
came in through OpenAI Chat or Completions, so existing rows get 0 and
"openai_chat".

The rollups gain the same sums, and protocol joins their key, so usage can be
grouped by protocol without reading raw events. Their existing rows are kept
as they are (protocol "openai_chat", no cached or reasoning tokens), not
recomputed from the events: a large ledger's rollups are small, its events
are not. PostgreSQL alters the tables in place; SQLite cannot change a primary
key, so each rollup is copied into a table of the new shape.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

# The rollup tables as 0004 created them (a migration does not import the
# application: it must keep meaning what it meant when it was written).
ROLLUPS = (("usage_hourly", "hour"), ("usage_daily", "day"))
KEY_LENGTHS = {"tenant_id": 40, "key_id": 40, "alias": 200, "deployment": 200}
KEYS = tuple(KEY_LENGTHS)
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens")
FLOAT_SUMS = ("cost_usd", "energy_wh", "latency_ms_sum")
PARTS = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
PROTOCOL = "openai_chat"


def _protocol() -> sa.Column[str]:
    return sa.Column("protocol", sa.String(40), nullable=False, server_default=PROTOCOL)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("usage_events") as batch:
        for name in PARTS:
            batch.add_column(sa.Column(name, sa.Integer, nullable=False, server_default="0"))
        batch.add_column(_protocol())
    for table, bucket in ROLLUPS:
        if bind.dialect.name == "postgresql":
            for name in PARTS:
                op.add_column(
                    table, sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
                )
            op.add_column(table, _protocol())
            _set_primary_key(table, [bucket, *KEYS, "protocol"])
        else:
            _copy_into_new_shape(table, bucket, with_protocol=True)


def downgrade() -> None:
    """Rollup rows that differ only in protocol are added together first."""
    bind = op.get_bind()
    for table, bucket in ROLLUPS:
        if bind.dialect.name == "postgresql":
            merged = f"{table}_0007"
            cols = ", ".join((bucket, *KEYS))
            sums = ", ".join(f"SUM({c}) AS {c}" for c in (*SUMS, *FLOAT_SUMS))
            op.execute(
                f"CREATE TEMPORARY TABLE {merged} AS "  # noqa: S608 (constants only)
                f"SELECT {cols}, {sums} FROM {table} GROUP BY {cols}"
            )
            op.execute(f"DELETE FROM {table}")  # noqa: S608 (constants only)
            _set_primary_key(table, [bucket, *KEYS], drop=("protocol", *PARTS))
            names = ", ".join((bucket, *KEYS, *SUMS, *FLOAT_SUMS))
            op.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {merged}"  # noqa: S608
            )
            op.execute(f"DROP TABLE {merged}")
        else:
            _copy_into_new_shape(table, bucket, with_protocol=False)
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("protocol")
        for name in reversed(PARTS):
            batch.drop_column(name)


def _set_primary_key(table: str, columns: list[str], drop: tuple[str, ...] = ()) -> None:
    """PostgreSQL: the table's primary key becomes `columns`, under its own name."""
    name = sa.inspect(op.get_bind()).get_pk_constraint(table)["name"] or f"{table}_pkey"
    op.drop_constraint(name, table, type_="primary")
    for column in drop:
        op.drop_column(table, column)
    op.create_primary_key(name, table, columns)


def _copy_into_new_shape(table: str, bucket: str, *, with_protocol: bool) -> None:
    """SQLite: copy a rollup into a table with the new key, then take its place."""
    new = f"_{table}_0008"
    columns: list[sa.Column[Any]] = [
        sa.Column(bucket, sa.Integer, primary_key=True),
        *(sa.Column(k, sa.String(n), primary_key=True) for k, n in KEY_LENGTHS.items()),
        *(sa.Column(c, sa.BigInteger, nullable=False) for c in SUMS),
        *(sa.Column(c, sa.Float, nullable=False) for c in FLOAT_SUMS),
    ]
    if with_protocol:
        columns.append(
            sa.Column("protocol", sa.String(40), primary_key=True, server_default=PROTOCOL)
        )
        columns += [sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in PARTS]
    op.create_table(new, *columns)
    names = ", ".join((bucket, *KEYS, *SUMS, *FLOAT_SUMS))
    if with_protocol:  # every row so far counted openai_chat requests
        rows = f"SELECT {names} FROM {table}"  # noqa: S608 (constants only)
    else:  # rows that differ only in protocol become one
        group = ", ".join((bucket, *KEYS))
        sums = ", ".join(f"SUM({c})" for c in (*SUMS, *FLOAT_SUMS))
        rows = f"SELECT {group}, {sums} FROM {table} GROUP BY {group}"  # noqa: S608
    op.execute(f"INSERT INTO {new} ({names}) {rows}")
    op.drop_table(table)  # and its index
    op.rename_table(new, table)
    op.create_index(f"ix_{table}_tenant", table, ["tenant_id", bucket])
