"""One engine per backend, migrated: every test that takes `ledger_engine`
runs against SQLite and against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from forebay.db.engine import make_engine
from forebay.db.migrate import upgrade
from tests.support.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database()


@pytest.fixture
def ledger_engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    upgrade(engine)
    yield engine
    engine.dispose()
