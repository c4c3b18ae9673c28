"""Fixtures of the operator command tests: a SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sessiongate.store import open_store

from .seeding import Seeded, seed


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated store: a SQLite file, or a PostgreSQL database of its own."""
    url: str
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessiongate.db'}"
    else:
        url = request.getfixturevalue("pg_dsn")

    async def migrate() -> None:
        await (await open_store(url, migrate=True)).close()

    asyncio.run(migrate())
    return url


@pytest.fixture
def seeded(store_url: str) -> Seeded:
    """A store holding Alice's finalized and active sessions and Bob's active one."""
    blank = Seeded(store_url, "", "", "")
    finalized_id, alice_id, bob_id = blank.with_store(seed)
    return Seeded(store_url, finalized_id, alice_id, bob_id)
