"""Provider cursors: the statements of each operation, on one connection.

Advancing and committing are compare-and-set; a cursor never written counts as zero.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from sessiongate.models import Cursor
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.codec import cursor_from_row
from sessiongate.store.sqlite.connection import one

Params = Mapping[str, Any]


def get(conn: sqlite3.Connection, provider: str, session_id: str) -> Cursor:
    """The cursor, or a zero cursor when none was written."""
    row = one(conn, queries.GET_CURSOR, {"provider": provider, "session_id": session_id})
    return Cursor(provider, session_id) if row is None else cursor_from_row(row)


def of_session(conn: sqlite3.Connection, session_id: str) -> list[Cursor]:
    """Every written cursor of a session, by provider."""
    rows = conn.execute(queries.LIST_CURSORS, {"session_id": session_id})
    return [cursor_from_row(row) for row in rows]


def _create(conn: sqlite3.Connection, params: Params, **values: Any) -> bool:
    row = {
        "provider": params["provider"],
        "session_id": params["session_id"],
        "delivered_seq": 0,
        "committed_seq": 0,
        "commit_epoch": 0,
        "last_commit_at": None,
        "at": params["at"],
    }
    row.update(values)
    return conn.execute(queries.INSERT_CURSOR, row).rowcount == 1


def advance(conn: sqlite3.Connection, params: Params) -> bool:
    """Set delivered_seq if it equals expected_seq (a missing cursor counts as 0)."""
    if conn.execute(queries.ADVANCE_CURSOR, params).rowcount == 1:
        return True
    return params["expected_seq"] == 0 and _create(
        conn, params, delivered_seq=params["delivered_seq"]
    )


def record_commit(conn: sqlite3.Connection, params: Params) -> bool:
    """Record commit `epoch` if the cursor is at `epoch - 1` (a missing cursor is at 0)."""
    if conn.execute(queries.RECORD_COMMIT, params).rowcount == 1:
        return True
    return params["epoch"] == 1 and _create(
        conn,
        params,
        committed_seq=params["committed_seq"],
        commit_epoch=1,
        last_commit_at=params["at"],
    )


def note_error(conn: sqlite3.Connection, params: Params) -> None:
    """Record the last error seen for a provider and session."""
    conn.execute(queries.NOTE_CURSOR_ERROR, params)
