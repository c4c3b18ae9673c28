"""Reader threads, each with its own read-only connection, fed from one queue.

WAL lets readers run beside the writer; every query sees the last commit. A
reader thread takes every read queued so far (up to a cap), runs them one
after another, and hands their results to the event loop in one wake-up, so
many concurrent reads cost one thread hop instead of one each. Another thread
picks up what arrives while the first is busy, so a slow read does not hold
back the rest for long.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sessiongate.errors import SessionGateError, StoreUnavailable
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.connection import connect, is_driver_error, map_error
from sessiongate.store.sqlite.handoff import Task, settle

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_READERS = 4
DEFAULT_READ_BATCH = 32


class ReaderPool:
    """Runs read functions of a connection in reader threads, one connection per thread."""

    def __init__(
        self, path: Path, *, size: int = DEFAULT_READERS, batch_limit: int = DEFAULT_READ_BATCH
    ) -> None:
        self._path = path
        self._batch_limit = max(1, batch_limit)
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._serve, name=f"sessiongate-sqlite-read-{n}:{path.name}", daemon=True
            )
            for n in range(max(1, size))
        ]
        self._started = False
        self._closed = False

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """The result of `read` on a reader's connection; driver errors mapped."""
        if self._closed:
            raise StoreUnavailable(f"the store on {self._path} is closed; open it again")
        if not self._started:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(Task(read, future, loop))
        return await future

    def _start(self) -> None:
        self._started = True
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        """Finish the queued reads, then stop every thread and close its connection."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        for _ in self._threads:
            self._queue.put(None)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    # -- a reader thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        while (batch := self._next_batch()) is not None:
            conn = self._perform_all(batch, conn)
            settle(batch)
        if conn is not None:
            conn.close()

    def _next_batch(self) -> list[Task] | None:
        """The reads queued so far (up to the cap); None when the thread is to stop."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self._batch_limit and not self._queue.empty():
            try:  # another reader thread may have taken it meanwhile
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # a stop signal, for this thread's next turn or another's
                break
            batch.append(item)
        return batch

    def _perform_all(
        self, batch: list[Task], conn: sqlite3.Connection | None
    ) -> sqlite3.Connection | None:
        """Run a batch of reads; the thread's connection (opened on its first batch)."""
        if conn is None:
            try:
                conn = connect(self._path, read_only=True)
            except SessionGateError as exc:
                for read in batch:
                    read.error = type(exc)(*exc.args)
                return None
        # One read transaction for the batch: a connection drops its whole page cache when
        # it starts reading after another connection's commit, so a batch pays that once.
        # Every read of the batch was queued before the snapshot is taken (at the first
        # read), so each still sees every write acknowledged before it was asked for.
        if len(batch) > 1:
            _begin(conn)
        for read in batch:
            try:
                read.value = read.operation(conn)
            # The isolation point of one read: its error goes to its caller.
            except Exception as exc:  # noqa: BLE001
                read.error = map_error(exc, self._path) if is_driver_error(exc) else exc
        if conn.in_transaction and not _end(conn):
            conn.close()  # never keep reading from a stale snapshot: the next batch reopens
            return None
        return conn


def _begin(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute(queries.BEGIN)
    except sqlite3.Error:
        return False  # the reads run one by one instead
    return True


def _end(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute(queries.ROLLBACK)  # it read only: ending it is all there is to do
    except sqlite3.Error:
        log.exception("ending a read transaction failed; reconnecting")
        return False
    return True
