"""The shared ledger database for replica tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def shared_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"
