"""`Store.stats` on SQLite: the metrics aggregates, read in one read transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sessiongate.models import SessionState, StoreStats
from sessiongate.store.sqlite import queries

_LIVE = (SessionState.ACTIVE.value, SessionState.ENDING.value)
_MICROS = 1_000_000


def stats(conn: sqlite3.Connection, params: Mapping[str, Any], path: Path) -> StoreStats:
    """The aggregates of `Store.stats` (`params`: `ended_since` micros and `limit`)."""
    # One snapshot for every aggregate, so the figures of one scrape agree.
    own = not conn.in_transaction
    if own:
        conn.execute(queries.BEGIN)
    try:
        return _read(conn, params, path)
    finally:
        if own:
            conn.execute(queries.ROLLBACK)


def _read(conn: sqlite3.Connection, params: Mapping[str, Any], path: Path) -> StoreStats:
    by_state = dict.fromkeys((state.value for state in SessionState), 0)
    ended: dict[str, int] = {}
    turns = live_turns = 0
    for row in conn.execute(queries.STATS_SESSIONS):
        by_state[row["state"]] += row["n"]
        turns += row["turns"]
        if row["state"] in _LIVE:
            live_turns += row["turns"]
        if row["end_reason"] is not None:
            ended[row["end_reason"]] = ended.get(row["end_reason"], 0) + row["n"]
    delivered = {
        row["provider"]: row["delivered"] for row in conn.execute(queries.STATS_LIVE_DELIVERED)
    }
    failing = {row["provider"]: row["n"] for row in conn.execute(queries.STATS_FAILING_CURSORS)}
    letters = {
        (row["kind"], row["provider"]): row["n"] for row in conn.execute(queries.STATS_DEAD_LETTERS)
    }
    delays = tuple(
        row["delay"] / _MICROS for row in conn.execute(queries.STATS_COMMIT_DELAYS, params)
    )
    return StoreStats(
        sessions=by_state,
        ended=ended,
        turns=turns,
        live_turns=live_turns,
        live_delivered=delivered,
        failing_cursors=failing,
        dead_letters=letters,
        commit_delays=delays,
        size_bytes=_disk_bytes(path),
    )


def _disk_bytes(path: Path) -> int:
    """The database file and its write-ahead log: what the store takes on disk."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        try:
            total += part.stat().st_size
        except FileNotFoundError:
            continue  # no WAL right after a checkpoint
    return total
