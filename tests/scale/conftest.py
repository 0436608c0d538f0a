"""Replica tests share one ledger in a real, throwaway PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture
def shared_db_url(postgres_url: str) -> str:
    return postgres_url
