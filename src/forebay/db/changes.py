"""How every replica learns, within a fraction of a second, that a key, tenant or
limit changed: a change counter, one row bumped in the same transaction as the
change, that each replica polls with one single-row SELECT (`key_refresh_s`,
0.25 s by default) and reloads keys and policies only when it moved.

Chosen over Redis pub/sub and PostgreSQL LISTEN/NOTIFY because it is the only
one of the three that sees every writer on every backend: the CLI writes to the
database directly and knows nothing of Redis, SQLite has no notifications, and a
bump in the same transaction can be neither lost nor early (a replica that
reconnects after a network blip still sees the number moved, where a
notification sent meanwhile is gone). The cost is one indexed single-row read
per replica per poll, off the request path.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, select, update

from forebay.db.schema import changes


def bump(conn: Connection) -> None:
    """Inside the transaction that makes the change."""
    conn.execute(update(changes).where(changes.c.id == 1).values(seq=changes.c.seq + 1))


def current(engine: Engine) -> int:
    with engine.connect() as conn:
        value = conn.execute(select(changes.c.seq).where(changes.c.id == 1)).scalar()
    return int(value or 0)
