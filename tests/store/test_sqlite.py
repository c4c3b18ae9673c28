"""What only the SQLite store has: group commit, its file, its schema, its driver errors."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sessiongate.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    SchemaError,
    SessionClosed,
    StoreError,
    StoreUnavailable,
)
from sessiongate.models import EndReason, EndRequest, Timer
from sessiongate.store import open_store
from sessiongate.store.migrations import latest_version
from sessiongate.store.sqlite import SQLiteStore
from sessiongate.store.sqlite.writer import Writer
from sessiongate.testing.records import new_entry, new_job, new_session

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file behind the store's back, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- group commit ------------------------------------------------------------------------------


async def test_concurrent_appends_share_commits(sqlite_store: SQLiteStore) -> None:
    sessions = [new_session(f"s{n}", at=T0) for n in range(20)]
    await asyncio.gather(*(sqlite_store.start_session(s) for s in sessions))
    before = sqlite_store.writer.commits

    appends = [
        sqlite_store.append_entries(f"s{n % 20}", [new_entry(f"turn {n}")], at=T0)
        for n in range(200)
    ]
    results = await asyncio.gather(*appends)

    commits = sqlite_store.writer.commits - before
    assert 1 <= commits <= 50, f"200 appends took {commits} commits"
    assert all(len(stored) == 1 for stored in results)
    for n in range(20):
        ledger = await sqlite_store.entries(f"s{n}")
        assert [e.seq for e in ledger] == list(range(1, 11))
        assert sorted(e.text for e in ledger) == sorted(f"turn {k}" for k in range(n, 200, 20))
        session = await sqlite_store.get_session(f"s{n}")
        assert session is not None
        assert session.turn_count == 10


@asynccontextmanager
async def _held(writer: Writer) -> AsyncIterator[None]:
    """Keep the writer thread busy in the block, so what is queued there forms ONE batch."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    holding = asyncio.ensure_future(writer.run(hold))
    try:
        assert await asyncio.to_thread(started.wait, 10), "the writer never started"
        yield
        await asyncio.sleep(0.05)  # the queued operations' tasks reach the queue
    finally:
        release.set()
        await holding


async def test_a_failing_operation_does_not_fail_its_batch(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.start_session(new_session("ended", at=T0))
    await sqlite_store.end_session(EndRequest("ended", EndReason.NEW, T0))
    before = sqlite_store.writer.commits

    async with _held(sqlite_store.writer):
        outcomes = asyncio.gather(
            sqlite_store.start_session(new_session("a", at=T0)),
            # Inserts its session row, then fails on the missing source: must leave no row.
            sqlite_store.start_session(new_session("b", at=T0), copy_entries_from="missing"),
            sqlite_store.append_entries("ended", [new_entry("late")], at=T0),
            sqlite_store.start_session(new_session("a", at=T0, key="other-key")),
            sqlite_store.enqueue([new_job("j1")], at=T0),
            return_exceptions=True,
        )
    a, b, late, duplicate, enqueued = await outcomes

    # One commit for the held batch, then ONE for all five operations.
    assert sqlite_store.writer.commits - before == 2
    assert not isinstance(a, BaseException)
    assert a.id == "a"
    assert isinstance(b, NotFound)
    assert isinstance(late, SessionClosed)
    assert isinstance(duplicate, Conflict)
    assert enqueued == [1]
    assert await sqlite_store.get_session("b") is None
    assert await sqlite_store.routed_session(new_session("b", at=T0).key) is None
    assert await sqlite_store.entries("ended") == []
    assert [j.idempotency_key for j in await sqlite_store.list_jobs()] == ["j1"]


async def test_a_cancelled_caller_does_not_stop_the_writer(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.start_session(new_session("s", at=T0))
    task = asyncio.ensure_future(sqlite_store.append_entries("s", [new_entry("x")], at=T0))
    await asyncio.sleep(0)
    task.cancel()
    stored = await sqlite_store.append_entries("s", [new_entry("y")], at=T0)
    seqs = [e.seq for e in await sqlite_store.entries("s")]
    assert stored[0].seq == seqs[-1]
    assert seqs == list(range(1, len(seqs) + 1))


# -- the file --------------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(db_path: Path) -> None:
    first = await open_store(f"sqlite:///{db_path}")
    try:
        await first.start_session(new_session("s", at=T0), timers=[Timer("s", "idle", T0)])
        await first.append_entries(
            "s", [new_entry("hello", parts=[{"tool": "search", "n": 1}], meta={"m": "é"})], at=T0
        )
        await first.enqueue([new_job("j", payload={"x": [1, 2]}, session_id="s")], at=T0)
        await first.advance_cursor("local", "s", expected_seq=0, delivered_seq=1, at=T0)
        entries = await first.entries("s")
        session = await first.get_session("s")
        jobs = await first.list_jobs()
    finally:
        await first.close()

    second = await open_store(f"sqlite:///{db_path}")
    try:
        assert await second.get_session("s") == session
        assert await second.entries("s") == entries
        assert await second.list_jobs() == jobs
        assert await second.timers("s") == [Timer("s", "idle", T0)]
        assert (await second.get_cursor("local", "s")).delivered_seq == 1
    finally:
        await second.close()
    wal = db_path.with_name(db_path.name + "-wal")
    assert not await asyncio.to_thread(wal.exists), "a clean close checkpoints the WAL away"


async def test_the_file_is_durable_wal(sqlite_store: SQLiteStore, db_path: Path) -> None:
    assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    synchronous = await sqlite_store.writer.run(
        lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
    )
    assert synchronous == 2, "FULL: every commit is fsynced"
    assert sqlite_store.path == db_path
    assert db_path.parent.is_dir(), "the missing parent directory was created"


async def test_an_empty_file_is_at_version_zero(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        assert await store.schema_version() == 0
        assert await store.migrate() == latest_version("sqlite")
        assert await store.schema_version() == latest_version("sqlite")
    finally:
        await store.close()


async def test_migrate_twice_is_a_no_op(sqlite_store: SQLiteStore, db_path: Path) -> None:
    before = _rows(db_path, "SELECT version, name, applied_at FROM schema_migrations")
    assert await sqlite_store.migrate() == latest_version("sqlite")
    assert _rows(db_path, "SELECT version, name, applied_at FROM schema_migrations") == before
    assert [row[0] for row in before] == list(range(1, latest_version("sqlite") + 1))


async def test_a_database_newer_than_the_code_is_refused(db_path: Path) -> None:
    store = await open_store(f"sqlite:///{db_path}")
    await store.close()
    newer = latest_version("sqlite") + 1
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)",
            (newer,),
        )
    conn.close()

    with pytest.raises(SchemaError) as refused:
        await open_store(f"sqlite:///{db_path}")
    message = str(refused.value)
    assert f"version {newer}" in message
    assert "newer" in message
    assert str(db_path) in message
    with pytest.raises(SchemaError):
        await open_store(f"sqlite:///{db_path}", migrate=False)


def _make_read_only(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    if os.access(path, os.W_OK):  # root ignores modes; the immutable attribute binds root too
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    assert not os.access(path, os.W_OK), f"could not make {path} read-only for this test"


def _make_writable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


async def test_a_read_only_file_is_refused_clearly(db_path: Path) -> None:
    store = await open_store(f"sqlite:///{db_path}")
    await store.close()
    _make_read_only(db_path)
    try:
        with pytest.raises(StoreError) as refused:
            await open_store(f"sqlite:///{db_path}")
    finally:
        _make_writable(db_path)
    message = str(refused.value)
    assert str(db_path) in message
    assert "read-only" in message
    assert not isinstance(refused.value.__cause__, sqlite3.Error)


async def test_a_directory_is_not_a_database_file(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=str(tmp_path)):
        await SQLiteStore.open(tmp_path)


async def test_a_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot create the directory"):
        await SQLiteStore.open(blocker / "sessiongate.db")


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailable, match="not a sessiongate SQLite database"):
        await SQLiteStore.open(junk)


async def test_a_full_disk_writes_nothing_and_says_so(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.start_session(new_session("s", at=T0))
    page_count = await sqlite_store.writer.run(
        lambda conn: int(conn.execute("PRAGMA page_count").fetchone()[0])
    )
    # Cap the file at its current size: the next page it needs makes SQLite report it full.
    await sqlite_store.writer.run(
        lambda conn: conn.execute(f"PRAGMA max_page_count = {page_count}").fetchall()
    )

    with pytest.raises(StoreError, match="full") as refused:
        await sqlite_store.append_entries("s", [new_entry("x" * 200_000)], at=T0)
    assert "sessiongate.db" in str(refused.value)
    assert await sqlite_store.entries("s") == []
    session = await sqlite_store.get_session("s")
    assert session is not None
    assert session.turn_count == 0
    # Small writes still fit in the free pages: the writer carries on.
    stored = await sqlite_store.append_entries("s", [new_entry("small")], at=T0)
    assert [e.seq for e in stored] == [1]


# -- refused input -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["nul \x00 inside", "lone \ud800 surrogate"])
async def test_unstorable_text_is_refused_and_nothing_written(
    sqlite_store: SQLiteStore, text: str
) -> None:
    await sqlite_store.start_session(new_session("s", at=T0))
    commits = sqlite_store.writer.commits
    with pytest.raises(InvalidInput):
        await sqlite_store.append_entries("s", [new_entry("fine"), new_entry(text)], at=T0)
    with pytest.raises(InvalidInput):
        await sqlite_store.enqueue([new_job("j", payload={"k": text})], at=T0)
    with pytest.raises(InvalidInput):
        await sqlite_store.set_title("s", text)
    assert sqlite_store.writer.commits == commits, "refused before reaching the database"
    assert await sqlite_store.entries("s") == []
    assert await sqlite_store.list_jobs() == []


# -- several processes on one file -------------------------------------------------------------


async def test_two_stores_on_one_file_never_claim_the_same_job(db_path: Path) -> None:
    first = await open_store(f"sqlite:///{db_path}")
    second = await SQLiteStore.open(db_path)
    try:
        await first.enqueue([new_job(f"j{n}") for n in range(60)], at=T0)
        later = T0 + timedelta(seconds=1)
        claims = await asyncio.gather(
            *(
                store.claim_jobs(f"w{n}", at=later, lease_seconds=60, limit=7)
                for n, store in enumerate([first, second] * 6)
            )
        )
        claimed = [job.id for batch in claims for job in batch]
        assert sorted(claimed) == list(range(1, 61))
        assert all(job.fencing_token == 1 for batch in claims for job in batch)
    finally:
        await second.close()
        await first.close()


# -- the writer on its own -------------------------------------------------------------------


class FlakyConnection(sqlite3.Connection):
    """A connection that fails one chosen COMMIT as a broken disk would."""

    commits_seen = 0
    fail_at: int | None = None  # which COMMIT fails, counted from 1
    syncs: list[str]  # the commits and the changes of `synchronous`, in order

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" or sql.startswith("PRAGMA synchronous"):
            self.syncs = [*getattr(self, "syncs", []), sql]
        if sql == "COMMIT":
            self.commits_seen += 1
            if self.commits_seen == self.fail_at:
                error = sqlite3.OperationalError("disk I/O error")
                error.sqlite_errorcode = 10  # SQLITE_IOERR
                raise error
        return super().execute(sql, *args)


@pytest.fixture
async def bare_writer(tmp_path: Path) -> AsyncIterator[tuple[Writer, FlakyConnection]]:
    conn = sqlite3.connect(
        tmp_path / "w.db", isolation_level=None, check_same_thread=False, factory=FlakyConnection
    )
    writer = Writer(conn, tmp_path / "w.db")
    writer.start()
    try:
        await writer.run(lambda c: c.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
        yield writer, conn
    finally:
        await writer.close()


def _insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def operation(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (x) VALUES (?)", (value,))
        return value

    return operation


def _values(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT x FROM t ORDER BY x")]


async def _one_batch(writer: Writer, *operations: Callable[[sqlite3.Connection], Any]) -> list[Any]:
    """Run `operations` as one batch."""
    async with _held(writer):
        results = asyncio.gather(*(writer.run(op) for op in operations), return_exceptions=True)
    return await results


async def test_a_failed_commit_fails_the_batch_and_writes_nothing(
    bare_writer: tuple[Writer, FlakyConnection],
) -> None:
    writer, conn = bare_writer
    # The first commit is the batch holding the writer; the second is the batch under test.
    conn.fail_at = conn.commits_seen + 2
    commits = writer.commits
    results = await _one_batch(writer, _insert(1), _insert(2))
    assert all(isinstance(r, StoreError) for r in results)
    assert "I/O error" in str(results[0])
    assert "w.db" in str(results[0])
    assert writer.commits == commits + 1
    assert await writer.run(_values) == []
    assert await writer.run(_insert(3)) == 3, "the writer carries on after a failed commit"


async def test_a_lost_transaction_fails_what_it_held_and_retries_the_rest(
    bare_writer: tuple[Writer, FlakyConnection],
) -> None:
    writer, _ = bare_writer

    def lose_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # as SQLite does itself on some disk errors
        raise sqlite3.OperationalError("database or disk is full")

    results = await _one_batch(writer, _insert(1), lose_the_transaction, _insert(2))
    assert isinstance(results[0], StoreError), "its write was rolled back with the batch"
    assert isinstance(results[1], StoreError)
    assert results[2] == 2
    assert await writer.run(_values) == [2]


class _Unsynced:
    """An insert that declares its commit need not wait for the disk."""

    durable = False

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, conn: sqlite3.Connection) -> int:
        return _insert(self.value)(conn)


async def test_only_a_batch_of_unsynced_operations_commits_without_an_fsync(
    bare_writer: tuple[Writer, FlakyConnection],
) -> None:
    writer, conn = bare_writer
    conn.syncs = []
    unsynced = writer.unsynced_commits

    assert await writer.run(_Unsynced(1)) == 1
    assert await writer.run(_insert(2)) == 2
    assert await _one_batch(writer, _Unsynced(3), _insert(4)) == [3, 4]
    assert await writer.run(_Unsynced(5)) == 5

    assert conn.syncs == [
        "PRAGMA synchronous = NORMAL",
        "COMMIT",  # 1 alone
        "PRAGMA synchronous = FULL",
        "COMMIT",  # 2
        "COMMIT",  # the batch holding the writer
        "COMMIT",  # 3 with 4: 4 needs the fsync, so the batch waits for it
        "PRAGMA synchronous = NORMAL",
        "COMMIT",  # 5 alone
    ]
    assert writer.unsynced_commits == unsynced + 2
    assert await writer.run(_values) == [1, 2, 3, 4, 5]


async def test_leases_commit_without_an_fsync_and_what_they_fence_with_one(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.start_session(new_session("s-1", at=T0, key="k-1"))
    writer = sqlite_store.writer
    commits, unsynced = writer.commits, writer.unsynced_commits

    lease = await sqlite_store.acquire_lease("k-1", "me", at=T0, lease_seconds=30)
    assert lease is not None
    renewed = await sqlite_store.renew_lease(lease, at=T0, lease_seconds=60)
    assert renewed is not None
    await sqlite_store.append_entries("s-1", [new_entry("hi")], at=T0, fence=lease, release=True)

    assert (writer.commits - commits, writer.unsynced_commits - unsynced) == (3, 2)
    assert await sqlite_store.lease_of("k-1") is None


def test_an_unsynced_lease_outlives_a_crash_of_its_process(db_path: Path) -> None:
    script = (
        "import asyncio, os, sys\n"
        "from datetime import UTC, datetime\n"
        "from sessiongate.store import open_store\n"
        "async def main():\n"
        "    store = await open_store(sys.argv[1])\n"
        "    lease = await store.acquire_lease('k-1', 'gone', at=datetime.now(UTC),"
        " lease_seconds=30)\n"
        "    print(lease.token, flush=True)\n"
        "    os._exit(9)  # no close, no checkpoint: as a SIGKILL would leave it\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{db_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    rows = _rows(db_path, "SELECT owner, token FROM leases WHERE key = 'k-1'")
    assert rows == [("gone", int(done.stdout.strip()))]
