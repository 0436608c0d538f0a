"""Bring a database to the newest schema with Alembic, at start-up and from the CLI."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant will do: it names the lock that replicas starting at the same
# time take on PostgreSQL, so that one migrates and the others then find
# nothing left to do (rather than racing to create the same tables).
_MIGRATION_LOCK = 0x466F726562617900  # "Forebay\0"


def upgrade(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
