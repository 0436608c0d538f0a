"""Engines: SQLite in WAL mode by default, PostgreSQL (psycopg 3) at scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def database_url(configured: str, data_dir: Path) -> str:
    return configured or f"sqlite:///{data_dir / 'forebay.db'}"


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` (as libpq and most hosts spell them)
    mean the psycopg 3 driver, the one Forebay depends on."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """Errors never echo statement parameters (hide_parameters): they end up in logs."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # One connection for the ledger writer, a few for key refreshes and admin
    # reads; pre-ping and recycle so a database restart or an idle-connection
    # reaper costs a reconnect, not a failed batch.
    return create_engine(
        url,
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the CLI and the ledger writer read while the server writes;
    # NORMAL sync is durable across process crashes, which is what we need.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
