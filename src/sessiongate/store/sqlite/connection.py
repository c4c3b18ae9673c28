"""Opening SQLite connections, and mapping driver errors to sessiongate's errors.

Every `sqlite3` exception is turned into a `sessiongate.errors` one here, with
a message naming the database file and what to do about it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sessiongate.errors import (
    Conflict,
    InvalidInput,
    SessionGateError,
    StoreError,
    StoreUnavailable,
)
from sessiongate.store.sqlite import queries

BUSY_TIMEOUT_MS = 5_000

# Primary result codes (the low byte of an extended code), from sqlite3.h.
_PERM = 3
_BUSY = 5
_LOCKED = 6
_READONLY = 8
_IOERR = 10
_CORRUPT = 11
_FULL = 13
_CANTOPEN = 14
_TOOBIG = 18
_CONSTRAINT = 19
_NOTADB = 26


def prepare_directory(path: Path) -> None:
    """Create the parent directory of the database file if it is missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the directory {path.parent} for the database file {path}: "
            f"{exc.strerror or exc}; create it or choose another --store path"
        ) from None


def connect(
    path: Path, *, read_only: bool, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> sqlite3.Connection:
    """A connection to `path` in WAL mode with durable commits; errors mapped.

    Transactions are explicit (`isolation_level=None`): the writer issues its own
    BEGIN IMMEDIATE / COMMIT. A reader is limited to queries. A locked file is waited
    for up to `busy_timeout_ms`.
    """
    try:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
    except sqlite3.Error as exc:
        raise map_error(exc, path) from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(queries.PRAGMA_BUSY_TIMEOUT.format(milliseconds=busy_timeout_ms))
        if read_only:
            conn.execute(queries.PRAGMA_QUERY_ONLY)
        else:
            conn.execute(queries.PRAGMA_WAL).fetchall()
            conn.execute(queries.PRAGMA_SYNCHRONOUS_FULL)
            _probe_writable(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise map_error(exc, path) from None
    except BaseException:
        conn.close()
        raise
    return conn


def one(
    conn: sqlite3.Connection, sql: str, params: Mapping[str, Any] | Sequence[Any]
) -> sqlite3.Row | None:
    """The first row of a statement run to completion (so a RETURNING write is done)."""
    rows: list[sqlite3.Row] = conn.execute(sql, params).fetchall()
    return rows[0] if rows else None


def _probe_writable(conn: sqlite3.Connection) -> None:
    # SQLite opens a file it may not write silently read-only and only fails at the
    # first write; fail at open instead, with a write that is always rolled back.
    conn.execute(queries.BEGIN_IMMEDIATE)
    try:
        conn.execute(queries.PROBE_WRITABLE)
    finally:
        conn.execute(queries.ROLLBACK)


def is_driver_error(exc: BaseException) -> bool:
    """Whether `exc` comes from the driver or from binding a value, and must be mapped."""
    return isinstance(exc, sqlite3.Error | UnicodeEncodeError | OverflowError)


def map_error(exc: BaseException, path: Path) -> SessionGateError:
    """The sessiongate error for a driver (or value binding) exception raised on `path`."""
    if isinstance(exc, SessionGateError):
        return exc
    if isinstance(exc, UnicodeEncodeError):
        return InvalidInput(f"a value is not valid Unicode text ({exc.reason}); nothing was stored")
    if isinstance(exc, OverflowError):
        return InvalidInput(f"a number is too large to store ({exc}); nothing was stored")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    detail = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) or primary == _CONSTRAINT:
        if "UNIQUE" in detail or "PRIMARY KEY" in detail:
            return Conflict(f"a record with the same identity already exists ({detail})")
        return InvalidInput(f"a value was refused by the database schema ({detail})")
    if primary == _TOOBIG:
        return InvalidInput(f"a value is too large for the database file {path} ({detail})")
    message = _MESSAGES.get(primary) if primary is not None else None
    if message is None:
        if "readonly" in detail or "read-only" in detail:
            message = _MESSAGES[_READONLY]
        elif "unable to open" in detail:
            message = _MESSAGES[_CANTOPEN]
        else:
            message = "the database file {path} failed ({detail})"
    cls = StoreUnavailable if primary in _UNAVAILABLE else StoreError
    return cls(message.format(path=path, detail=detail))


_UNAVAILABLE = frozenset({_CANTOPEN, _NOTADB, _CORRUPT, _PERM})

_MESSAGES: dict[int, str] = {
    _READONLY: (
        "the database file {path} is read-only ({detail}); make the file and its "
        "directory writable by this user, or choose another --store path"
    ),
    _FULL: (
        "the disk holding the database file {path} is full ({detail}); free some space "
        "and retry; nothing was written"
    ),
    _IOERR: (
        "reading or writing the database file {path} failed with an I/O error ({detail}); "
        "check the disk and retry"
    ),
    _CANTOPEN: (
        "cannot open the database file {path} ({detail}); check that the path is a file "
        "(not a directory) and that its directory exists and is writable"
    ),
    _PERM: ("access to the database file {path} was denied ({detail}); check its permissions"),
    _NOTADB: (
        "the file {path} is not a sessiongate SQLite database ({detail}); "
        "point --store at another file"
    ),
    _CORRUPT: ("the database file {path} is corrupt ({detail}); restore it from a backup"),
    _BUSY: (
        "the database file {path} stayed locked by another process for over "
        f"{BUSY_TIMEOUT_MS // 1000} seconds ({{detail}}); retry, or stop the other process"
    ),
    _LOCKED: ("the database file {path} is locked ({detail}); retry"),
}
