"""Point reads of the SQLite store: on the calling thread when they need not wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from sessiongate.errors import StoreError
from sessiongate.models import Session
from sessiongate.store.sqlite import SQLiteStore
from sessiongate.store.sqlite import sessions as session_sql
from sessiongate.store.sqlite.inline import DEFERRED, InlineReader
from sessiongate.testing.records import new_entry, new_session

T = TypeVar("T")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _at_once(coro: Coroutine[Any, Any, T]) -> T:
    """The value of `coro` if it finishes without suspending once; fails the test otherwise."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    pytest.fail("the read suspended: it went to a store thread")


def _exclusive_lock(path: Path) -> sqlite3.Connection:
    """Another process's connection holding the file exclusively: readers get SQLITE_BUSY."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def test_a_point_read_answers_without_a_thread_hop(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.start_session(new_session("s-1", at=T0, key="k-1"))

    routed = _at_once(sqlite_store.routed_session("k-1"))
    found = _at_once(sqlite_store.get_session("s-1"))

    assert isinstance(routed, Session)
    assert routed.id == "s-1"
    assert found == routed
    assert _at_once(sqlite_store.routed_session("k-unknown")) is None


async def test_a_point_read_sees_every_write_acknowledged_before_it(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.start_session(new_session("s-1", at=T0, key="k-1"))
    for turn in range(1, 31):
        at = T0 + timedelta(seconds=turn)
        await sqlite_store.append_entries("s-1", [new_entry(f"message {turn}")], at=at)
        session = _at_once(sqlite_store.routed_session("k-1"))
        assert session is not None
        assert (session.turn_count, session.last_activity_at) == (turn, at)


async def test_reads_from_another_thread_go_through_the_store_threads(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.start_session(new_session("s-1", at=T0, key="k-1"))
    assert _at_once(sqlite_store.routed_session("k-1")) is not None  # this thread owns it
    seen: list[Session | None] = []

    def elsewhere() -> None:
        seen.append(asyncio.run(sqlite_store.routed_session("k-1")))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    await asyncio.to_thread(thread.join)

    assert [session.id if session else None for session in seen] == ["s-1"]


def test_the_inline_reader_defers_rather_than_wait(db_path: Path) -> None:
    db_path.parent.mkdir()
    sqlite3.connect(db_path).execute("PRAGMA journal_mode = WAL").fetchall()
    reader = InlineReader(db_path)
    assert reader.read(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0]) == 42

    lock = _exclusive_lock(db_path)
    try:
        assert reader.read(lambda conn: conn.execute("SELECT 1 FROM sqlite_master").fetchall()) is (
            DEFERRED
        )
    finally:
        lock.close()
    assert reader.read(lambda conn: conn.execute("SELECT 7").fetchone()[0]) == 7
    assert reader.deferred == 1
    reader.close()
    assert reader.read(lambda conn: 1) is DEFERRED


def test_the_inline_reader_serves_only_its_own_thread(db_path: Path) -> None:
    db_path.parent.mkdir()
    reader = InlineReader(db_path)
    assert reader.read(lambda conn: 5) == 5
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(reader.read(lambda conn: 6)))
    thread.start()
    thread.join()

    assert outcome == [DEFERRED]
    reader.close()


def test_an_inline_read_error_names_the_file(db_path: Path) -> None:
    db_path.parent.mkdir()
    reader = InlineReader(db_path)
    with pytest.raises(StoreError, match=str(db_path)):
        reader.read(lambda conn: session_sql.routed(conn, key="k-1"))  # no schema here
    reader.close()


def test_a_file_that_cannot_be_opened_defers_every_read(tmp_path: Path) -> None:
    reader = InlineReader(tmp_path / "missing-dir" / "sessiongate.db")
    assert reader.read(lambda conn: 1) is DEFERRED
    assert reader.read(lambda conn: 1) is DEFERRED
    reader.close()
