"""Fixtures of the tests of what only the SQLite store has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessiongate.store.sqlite import SQLiteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's SQLite database file goes (its directory does not exist yet)."""
    return tmp_path / "data" / "sessiongate.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    """A migrated SQLite store on `db_path`, closed after the test."""
    store = await SQLiteStore.open(db_path)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()
