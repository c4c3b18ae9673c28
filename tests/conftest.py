"""Fixtures shared by the whole suite: a store of each kind, a fake clock.

PostgreSQL tests use the server named by SESSIONGATE_TEST_PG_DSN (default: the
local trust-auth server). Each test gets a fresh database, created and dropped
here. When the server is unreachable the tests are skipped on a developer
machine, and FAIL in CI (CI=true), so CI can never go green without them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sessiongate.store import Store, open_store
from sessiongate.testing import FakeClock

PG_DSN = os.environ.get("SESSIONGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
STORE_KINDS = ("memory", "sqlite", "postgres")


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin DSN of the PostgreSQL server, or skip/fail as documented above."""
    problem = _pg_reachable()
    if problem is not None:
        message = f"PostgreSQL at {PG_DSN} is unreachable: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: Postgres tests must run)")
        pytest.skip(message)
    return PG_DSN


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A DSN of a fresh, empty database, dropped after the test."""
    name = f"sg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh store of `kind` for one test."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'sessiongate.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """A fresh, migrated store of each kind in turn."""
    opened = await open_store(store_url(store_kind, tmp_path, request))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
