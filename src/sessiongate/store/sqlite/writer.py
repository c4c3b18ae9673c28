"""Group commit: one thread owns the write connection and shares fsyncs between writers.

Each write operation is a small synchronous function of the connection. The
writer thread takes every operation queued so far (up to a cap), runs them in
ONE `BEGIN IMMEDIATE` transaction, each inside its own savepoint, and commits
once, so a batch costs one fsync however many operations it holds. An
operation that raises is rolled back to its savepoint alone; the others of
its batch are unaffected. A batch of one operation needs no savepoint: if it
raises, the whole transaction (which holds only it) is rolled back. Neighbours
of a kind that can run together (appends) share one savepoint and a few
statements, and are run one by one only if that fails. Results
reach the awaiting coroutines only after the commit, so nothing is ever
reported done before it is durable, and a whole batch is handed to the event
loop in one wake-up.

An operation may declare that its commit need not wait for the disk
(`durable = False`: taking or renewing a conversation's lease). A batch made
only of such operations commits without an fsync; it survives a crash of the
process (the file's writes are in the operating system already), and the
next durable commit's fsync makes it durable along with its own, since the
WAL is synced as a whole. Only a power loss before then can undo it, which
ends every process that could have relied on it too.

While nothing else is queued, the store also sends short reads here: they run
between transactions, on a connection whose page cache stays warm.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sessiongate.errors import StoreError, StoreUnavailable
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.connection import is_driver_error, map_error
from sessiongate.store.sqlite.handoff import Task, settle

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]

DEFAULT_BATCH_LIMIT = 256


class RunsTogether(Protocol):
    """A kind of operation whose neighbours in a batch can run in one go (see `_alike`)."""

    def __call__(self, conn: sqlite3.Connection) -> Any: ...

    @staticmethod
    def run_together(conn: sqlite3.Connection, operations: Sequence[Any]) -> Sequence[Any]:
        """Each operation's result, or the exception refusing it (having written nothing)."""
        ...


class Writer:
    """The single writer of one SQLite file; `run` an operation, get its result once durable."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, batch_limit: int = DEFAULT_BATCH_LIMIT
    ) -> None:
        self._conn = conn
        self._path = path
        self._batch_limit = max(1, batch_limit)
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._closed = False
        self._pending = 0
        self._thread = threading.Thread(
            target=self._serve, name=f"sessiongate-sqlite-writer:{path.name}", daemon=True
        )
        self._durable = True  # the connection is opened with synchronous=FULL
        self.commits = 0
        """How many transactions were committed; read by tests."""
        self.unsynced_commits = 0
        """How many of them did not wait for the disk (see `durable`); read by tests."""
        self.operations = 0
        """How many operations were run, successful or not; read by tests."""

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    async def run(self, operation: Operation[T]) -> T:
        """Run `operation` in the next batch; its result, or its error, once committed."""
        return await self._submit(operation, read_only=False)

    @property
    def idle(self) -> bool:
        """Whether every operation handed to the writer has finished (none is queued)."""
        return self._pending == 0

    async def read(self, operation: Operation[T]) -> T:
        """Run a read on the writer's connection, between transactions: it sees the last commit.

        Meant for short reads while the writer is `idle`: its connection's page cache stays
        warm, where a reader's is dropped at each read that follows another commit.
        """
        return await self._submit(operation, read_only=True)

    async def _submit(self, operation: Operation[T], *, read_only: bool) -> T:
        if self._closed:
            raise StoreUnavailable(f"the store on {self._path} is closed; open it again")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(Task(operation, future, loop, read_only=read_only))
        self._pending += 1
        try:
            return await future
        finally:
            self._pending -= 1

    async def close(self) -> None:
        """Finish the queued operations, close the connection and join the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    # -- the writer thread -----------------------------------------------------------------

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            # This thread is the queue's only consumer: what `empty` denies is there to take.
            while len(batch) < self._batch_limit and not self._queue.empty():
                task = self._queue.get_nowait()
                if task is None:
                    stopping = True
                    break
                batch.append(task)
            if any(task.read_only for task in batch):
                self._read([task for task in batch if task.read_only])
                batch = [task for task in batch if not task.read_only]
            while batch:
                done, batch = self._guarded_transaction(batch)
                settle(done)
        self._conn.close()
        self._fail_leftovers()

    def _read(self, reads: list[Task]) -> None:
        """Run reads between transactions (never inside one: they see only what is committed)."""
        self._rollback()  # nothing is open between batches; never read an unfinished one
        for task in reads:
            try:
                task.value = task.operation(self._conn)
            # The isolation point of one read: its error goes to its caller.
            except Exception as exc:  # noqa: BLE001
                task.error = map_error(exc, self._path) if is_driver_error(exc) else exc
        settle(reads)

    def _fail_leftovers(self) -> None:
        leftovers: list[Task] = []
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task.error = StoreUnavailable(f"the store on {self._path} is closed; open it again")
                leftovers.append(task)
        settle(leftovers)

    def _guarded_transaction(self, batch: list[Task]) -> tuple[list[Task], list[Task]]:
        # The writer thread's isolation point: a fault here must not leave callers waiting
        # forever, nor stop the thread that every later write depends on.
        try:
            return self._transaction(batch)
        except Exception as exc:
            log.exception("the writer of %s failed on a batch of %d", self._path, len(batch))
            self._rollback()
            for task in batch:
                task.value = None
                task.error = StoreError(f"the write to {self._path} failed unexpectedly ({exc!r})")
            return batch, []

    def _transaction(self, batch: list[Task]) -> tuple[list[Task], list[Task]]:
        """Run `batch` in one transaction: the tasks it settled, and those it did not attempt."""
        try:
            self._synchronous(any(_durable(task) for task in batch))
            self._conn.execute(queries.BEGIN_IMMEDIATE)
        except sqlite3.Error as exc:
            error = map_error(exc, self._path)
            for task in batch:
                task.error = _fresh(error)
            return batch, []
        if len(batch) == 1:
            return self._alone(batch[0]), []
        start = 0
        while start < len(batch):
            run = _alike(batch, start)
            if len(run) > 1:
                self._attempt_together(run)
            else:
                self._attempt(run[0])
            start += len(run)
            if not self._conn.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the
                # earlier operations are lost too. The rest get a fresh transaction.
                attempted = batch[:start]
                self._fail_succeeded(attempted, run[-1].error)
                return attempted, batch[start:]
        self._commit(batch)
        return batch, []

    def _synchronous(self, durable: bool) -> None:
        """Make the next commit wait for the disk, or not; between transactions only."""
        if durable is not self._durable:
            self._conn.execute(
                queries.PRAGMA_SYNCHRONOUS_FULL if durable else queries.PRAGMA_SYNCHRONOUS_NORMAL
            )
            self._durable = durable

    def _alone(self, task: Task) -> list[Task]:
        """Run the only operation of a transaction: no savepoint, its error rolls back all."""
        self.operations += 1
        try:
            task.value = task.operation(self._conn)
        # The isolation point of one operation: its error goes to its caller.
        except Exception as exc:  # noqa: BLE001
            task.error = map_error(exc, self._path) if is_driver_error(exc) else exc
            self._rollback()
            return [task]
        if not self._conn.in_transaction:
            self._fail_succeeded([task], None)
        else:
            self._commit([task])
        return [task]

    def _attempt(self, task: Task) -> None:
        self.operations += 1
        try:
            self._conn.execute(queries.SAVEPOINT)
            task.value = task.operation(self._conn)
            self._conn.execute(queries.RELEASE_SAVEPOINT)
        # The isolation point of one operation in a batch: its error goes to its caller.
        except Exception as exc:  # noqa: BLE001
            task.value = None
            task.error = map_error(exc, self._path) if is_driver_error(exc) else exc
            self._undo_operation()

    def _attempt_together(self, run: list[Task]) -> None:
        """Run operations of one kind in one go, inside one savepoint.

        Their kind's `run_together` returns each one's result, or the error that refused it
        having written nothing. Should it raise instead, the savepoint is rolled back and
        the operations are run one by one, each in its own.
        """
        kind = cast("type[RunsTogether]", type(run[0].operation))
        try:
            self._conn.execute(queries.SAVEPOINT)
            outcomes = kind.run_together(self._conn, [task.operation for task in run])
            self._conn.execute(queries.RELEASE_SAVEPOINT)
        # The isolation point of a run: what failed is found by running its operations alone.
        except Exception as exc:  # noqa: BLE001
            self._undo_operation()
            if self._conn.in_transaction:
                for task in run:
                    self._attempt(task)
                return
            lost = map_error(exc, self._path) if is_driver_error(exc) else exc
            outcomes = [_fresh(lost) for _ in run]
        self.operations += len(run)
        for task, outcome in zip(run, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                task.error = outcome
            else:
                task.value = outcome

    def _commit(self, tasks: list[Task]) -> None:
        try:
            self._conn.execute(queries.COMMIT)
        except sqlite3.Error as exc:
            self._rollback()
            self._fail_succeeded(tasks, map_error(exc, self._path))
            return
        self.commits += 1
        if not self._durable:
            self.unsynced_commits += 1

    def _undo_operation(self) -> None:
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute(queries.ROLLBACK_TO_SAVEPOINT)
            self._conn.execute(queries.RELEASE_SAVEPOINT)
        except sqlite3.Error:
            log.exception("undoing one operation on %s failed; dropping its batch", self._path)
            self._rollback()

    def _rollback(self) -> None:
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute(queries.ROLLBACK)
        except sqlite3.Error:
            log.exception("rolling back a failed transaction on %s failed", self._path)

    def _fail_succeeded(self, tasks: list[Task], cause: BaseException | None) -> None:
        """Mark what had succeeded in a lost transaction as failed: nothing was written."""
        lost = (
            cause
            if isinstance(cause, StoreError)
            else StoreError(
                f"the transaction on {self._path} was rolled back ({cause}); nothing was written"
            )
        )
        for task in tasks:
            if task.error is None:
                task.error = _fresh(lost)
                task.value = None


def _durable(task: Task) -> bool:
    """Whether the commit holding `task`'s operation must wait for the disk (the default)."""
    return bool(getattr(task.operation, "durable", True))


def _fresh(error: BaseException) -> BaseException:
    """A copy of `error` for one more waiter (an exception instance carries its traceback)."""
    return type(error)(*error.args)


def _alike(batch: list[Task], start: int) -> list[Task]:
    """The run of operations from `start` that can go together (see `Writer._attempt_together`).

    Only neighbours are joined, so operations still take effect in the order they came.
    """
    kind = type(batch[start].operation)
    if getattr(kind, "run_together", None) is None:
        return batch[start : start + 1]
    end = start + 1
    while end < len(batch) and type(batch[end].operation) is kind:
        end += 1
    return batch[start:end]
