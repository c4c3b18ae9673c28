"""Point reads run on the calling thread, without a hop to a store thread.

A read of one row by key costs about 40 µs in SQLite, where handing it to a
store thread and back costs two thread wake-ups, about 100 µs on a VM. So the
store runs its point reads (the routing of each message, a session by id, a
lease) here, on a read-only connection of the event loop's thread, and sends
everything else to its threads.

It never waits on the event loop: the connection has no busy timeout, and a
read that finds the file locked (only an exclusive lock taken by another
process does that to a reader in WAL mode) reports `DEFERRED`, so the caller
runs it on a reader thread instead, which may wait. A thread other than the one
that first used it gets `DEFERRED` too: a connection is never shared between
threads. What it cannot avoid is a page that is not in the operating system's
cache: a point read touches a few pages of a b-tree, and reading one from the disk
holds the loop for that long, as any page fault of the process would.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from sessiongate.errors import SessionGateError
from sessiongate.store.sqlite.connection import connect, is_driver_error, map_error

T = TypeVar("T")

_BUSY = 5
_LOCKED = 6


class Deferred(enum.Enum):
    """What `InlineReader.read` returns when the read must run on a store thread instead."""

    DEFERRED = "deferred"


DEFERRED: Final = Deferred.DEFERRED


class InlineReader:
    """A read-only connection of one thread (the first to read), for reads that never wait."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: int | None = None
        self._closed = False
        self.deferred = 0
        """How many reads were handed back to run elsewhere; read by tests."""

    def read(self, operation: Callable[[sqlite3.Connection], T]) -> T | Deferred:
        """The result of `operation`, or `DEFERRED` when it cannot run here without waiting."""
        conn = self._connection()
        if conn is None:
            self.deferred += 1
            return DEFERRED
        try:
            return operation(conn)
        except sqlite3.OperationalError as exc:
            if _would_wait(exc):
                self.deferred += 1
                return DEFERRED
            raise map_error(exc, self._path) from None
        except Exception as exc:
            if is_driver_error(exc):
                raise map_error(exc, self._path) from None
            raise

    def close(self) -> None:
        """Close the connection; later reads are all `DEFERRED` (and fail where they go)."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._closed:
            return None
        here = threading.get_ident()
        if self._thread is None:
            self._thread = here
            # If it cannot be opened, every read goes to the store threads, which report why.
            with contextlib.suppress(SessionGateError):
                self._conn = connect(self._path, read_only=True, busy_timeout_ms=0)
        return self._conn if self._thread == here else None


def _would_wait(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_BUSY, _LOCKED)
