"""The store of a running gateway, read from outside its process.

SQLite through a read-only connection (`file:…?mode=ro`, autocommit): the gateway
holds the write lock, and in WAL mode a reader never waits for the writer nor
blocks it. PostgreSQL through an autocommit connection of its own. Every read is
one statement, so each sees the latest committed state. The calls block; the
benchmarks run them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

# Lease expiry as seconds since the Unix epoch, in each store's own time encoding.
_OPEN_JOBS = {
    "sqlite": "SELECT id, state, lease_expires_at / 1e6 FROM jobs "
    "WHERE state IN ('pending', 'running')",
    "postgres": "SELECT id, state, extract(epoch FROM lease_expires_at)::float8 FROM jobs "
    "WHERE state IN ('pending', 'running')",
}
_ENDING = "SELECT id FROM sessions WHERE state = 'ending'"
_DEAD = "SELECT count(*) FROM jobs WHERE state = 'dead'"
_STATES = "SELECT state, count(*) FROM sessions GROUP BY state"
_DUE_TIMERS = {
    "sqlite": "SELECT count(*) FROM timers WHERE due_at <= :now * 1e6",
    "postgres": "SELECT count(*) FROM timers WHERE due_at <= to_timestamp(%(now)s)",
}


@dataclass(frozen=True, slots=True)
class OpenJob:
    """A job not finished yet: pending, or running under a lease until `lease_expires`."""

    id: int
    state: str
    lease_expires: float | None


@dataclass(frozen=True, slots=True)
class Work:
    """The unfinished work in the store at one moment."""

    jobs: dict[int, OpenJob]
    ending: frozenset[str]

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(j.id for j in self.jobs.values() if j.state == "pending")

    @property
    def running(self) -> frozenset[int]:
        return frozenset(j.id for j in self.jobs.values() if j.state == "running")


class OutsideStore:
    """Reads a gateway's store without going through (or disturbing) the gateway."""

    def __init__(self, url: str) -> None:
        self._dialect = "sqlite" if url.startswith("sqlite:") else "postgres"
        self._url = url
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            if self._dialect == "sqlite":
                path = Path("/" + self._url.removeprefix("sqlite://").lstrip("/"))
                self._conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self._conn = psycopg.connect(self._url, autocommit=True)
        return self._conn

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._connection().execute(sql, params or {})
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows

    def work(self) -> Work:
        """The jobs pending or running and the sessions still ending, now."""
        jobs = {
            int(id_): OpenJob(int(id_), str(state), None if lease is None else float(lease))
            for id_, state, lease in self._rows(_OPEN_JOBS[self._dialect])
        }
        ending = frozenset(str(row[0]) for row in self._rows(_ENDING))
        return Work(jobs, ending)

    def dead_jobs(self) -> int:
        return int(self._rows(_DEAD)[0][0])

    def session_states(self) -> dict[str, int]:
        return {str(state): int(n) for state, n in self._rows(_STATES)}

    def due_timers(self, now: float) -> int:
        """How many timers are due at `now` (seconds since the Unix epoch)."""
        return int(self._rows(_DUE_TIMERS[self._dialect], {"now": now})[0][0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
