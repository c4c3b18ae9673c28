"""Durable timers: the statements of each operation, on one connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from sessiongate.models import Timer
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.codec import timer_from_row
from sessiongate.store.sqlite.connection import one

Params = Mapping[str, Any]


def set_timer(conn: sqlite3.Connection, params: Params) -> None:
    """Insert or move a timer, clearing any lease on it."""
    conn.execute(queries.SET_TIMER, params)


def claim(conn: sqlite3.Connection, params: Params) -> list[Timer]:
    """Lease due timers without a live lease (the parameters of `CLAIM_TIMERS`)."""
    timers = [timer_from_row(row) for row in conn.execute(queries.CLAIM_TIMERS, params)]
    # RETURNING does not keep the inner ORDER BY.
    timers.sort(key=lambda timer: (timer.due_at, timer.session_id, timer.kind))
    return timers


def release(conn: sqlite3.Connection, params: Params) -> bool:
    """Delete a timer leased by the owner, or move it unleased to `due_at` when given."""
    sql = queries.DELETE_TIMER if params.get("due_at") is None else queries.RESCHEDULE_TIMER
    return conn.execute(sql, params).rowcount == 1


def next_due(conn: sqlite3.Connection) -> int | None:
    """The earliest due time of any timer, in microseconds."""
    row = one(conn, queries.NEXT_TIMER_DUE, {})
    return None if row is None else row["due"]


def of_session(conn: sqlite3.Connection, session_id: str) -> list[Timer]:
    """The timers of one session, by kind."""
    rows = conn.execute(queries.LIST_TIMERS, {"session_id": session_id})
    return [timer_from_row(row) for row in rows]
