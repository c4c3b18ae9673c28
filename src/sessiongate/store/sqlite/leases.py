"""Conversation leases and retention: the statements of each operation, on one connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sessiongate.errors import LeaseLost
from sessiongate.models import Lease, PruneReport, Session
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.codec import from_micros, session_from_row
from sessiongate.store.sqlite.connection import one

Params = Mapping[str, Any]


def lease_from_row(row: sqlite3.Row) -> Lease:
    """A `Lease` from a row of the leases table."""
    return Lease(
        key=row["key"],
        owner=row["owner"],
        token=row["token"],
        acquired_at=from_micros(row["acquired_at"]),
        expires_at=from_micros(row["expires_at"]),
    )


def fence_params(fence: Lease | None) -> dict[str, Any] | None:
    """What `check_fence` needs of a lease (None: the write is not fenced)."""
    return None if fence is None else {"key": fence.key, "token": int(fence.token)}


def lease_lost(fence: Params) -> LeaseLost:
    """The error refusing a write whose fencing lease was taken."""
    return LeaseLost(
        f"the lease on {fence['key']!r} (token {fence['token']}) was taken by another "
        "replica; this one no longer writes for that conversation"
    )


def check_fence(conn: sqlite3.Connection, fence: Params | None) -> None:
    """Raise `LeaseLost` unless the fencing lease (when given) still holds its key."""
    if fence is not None and one(conn, queries.FENCE_HOLDS, fence) is None:
        raise lease_lost(fence)


def held_fences(conn: sqlite3.Connection, fences: Sequence[Params]) -> set[tuple[str, int]]:
    """Which of `fences` still hold their keys, in one statement, as (key, token) pairs."""
    pairs = json.dumps([[fence["key"], fence["token"]] for fence in fences])
    return {(row[0], row[1]) for row in conn.execute(queries.FENCES_HOLDING, {"fences": pairs})}


def acquire(conn: sqlite3.Connection, params: Params) -> Lease | None:
    """Take a free or expired key with the next token; None while a live lease holds it."""
    token = one(conn, queries.NEXT_LEASE_TOKEN, {})
    assert token is not None  # the counter row is created by the migration
    row = one(conn, queries.ACQUIRE_LEASE, {**params, "token": token["token"]})
    return None if row is None else lease_from_row(row)


@dataclass(frozen=True, slots=True)
class Acquire:
    """One `acquire_lease` call as a write operation: neighbours run without savepoints.

    Each acquisition is two statements that cannot refuse anything (a held key yields
    None), so a batch of them needs no savepoint apiece. Its commit need not wait for
    the disk (see `sessiongate.store.sqlite.writer`): every write the lease fences is
    durable, and its fsync makes the acquisition durable first.
    """

    durable: ClassVar[bool] = False
    params: Params

    def __call__(self, conn: sqlite3.Connection) -> Lease | None:
        return acquire(conn, self.params)

    @staticmethod
    def run_together(conn: sqlite3.Connection, acquires: Sequence[Acquire]) -> list[Lease | None]:
        """Each acquisition's lease (or None), in their order."""
        return [acquire(conn, item.params) for item in acquires]


@dataclass(frozen=True, slots=True)
class Renew:
    """One `renew_lease` call as a write operation; like `Acquire`, not waiting for the disk."""

    durable: ClassVar[bool] = False
    params: Params

    def __call__(self, conn: sqlite3.Connection) -> Lease | None:
        """Move the expiry of a lease that still holds its key."""
        row = one(conn, queries.RENEW_LEASE, self.params)
        return None if row is None else lease_from_row(row)


def release(conn: sqlite3.Connection, params: Params) -> bool:
    """Delete the key's row if it still carries this lease's token."""
    return conn.execute(queries.RELEASE_LEASE, params).rowcount == 1


def lease_of(conn: sqlite3.Connection, key: str) -> Lease | None:
    """The lease row of `key`, live or expired."""
    row = one(conn, queries.LEASE_OF, {"key": key})
    return None if row is None else lease_from_row(row)


def holders(conn: sqlite3.Connection, params: Params) -> list[str]:
    """Owners of live leases on jobs, timers and keys."""
    return sorted(str(row[0]) for row in conn.execute(queries.LEASE_HOLDERS, params))


def expire_of(conn: sqlite3.Connection, params: Params) -> int:
    """End every live lease of one owner now; how many ended."""
    statements = (queries.EXPIRE_JOB_LEASES, queries.EXPIRE_TIMER_LEASES, queries.EXPIRE_KEY_LEASES)
    return sum(conn.execute(sql, params).rowcount for sql in statements)


def stale(conn: sqlite3.Connection, params: Params) -> list[Session]:
    """Active sessions idle since before the cutoff whose key no live lease holds."""
    return [session_from_row(row) for row in conn.execute(queries.STALE_SESSIONS, params)]


def _ids(conn: sqlite3.Connection, sql: str, params: Params) -> list[Any]:
    return [row[0] for row in conn.execute(sql, params)]


def prune(conn: sqlite3.Connection, rules: Params, *, dry_run: bool) -> PruneReport:
    """Select what the rules allow on the state as it is now, then (unless dry) delete it."""
    sessions: list[str] = []
    if rules["ended_before"] is not None:
        sessions = _ids(conn, queries.PRUNABLE_SESSIONS, rules)
    session_ids = json.dumps(sessions)
    entries = one(conn, queries.COUNT_LEDGER_OF, {"ids": session_ids})
    jobs = set(_ids(conn, queries.JOBS_OF_SESSIONS, {"ids": session_ids}))
    if rules["done_before"] is not None:
        jobs.update(_ids(conn, queries.OLD_DONE_JOBS, rules))
    letters = set(_ids(conn, queries.DEAD_LETTERS_OF, {"ids": session_ids}))
    if rules["died_before"] is not None:
        letters.update(_ids(conn, queries.PRUNABLE_DEAD_LETTERS, rules))
    leases: list[str] = []
    if rules["expired_before"] is not None:
        leases = _ids(conn, queries.EXPIRED_LEASES, rules)
    report = PruneReport(
        sessions=tuple(sessions),
        entries=0 if entries is None else int(entries["n"]),
        jobs=len(jobs),
        dead_letters=tuple(sorted(letters)),
        leases=len(leases),
    )
    if not dry_run:
        _delete(conn, sessions, sorted(jobs | letters), sorted(letters), leases)
    return report


def _delete(
    conn: sqlite3.Connection,
    sessions: Sequence[str],
    jobs: Sequence[int],
    letters: Sequence[int],
    leases: Sequence[str],
) -> None:
    ids = {"ids": json.dumps(list(sessions))}
    for sql in (
        queries.DELETE_LEDGER_OF,
        queries.DELETE_CURSORS_OF,
        queries.DELETE_TIMERS_OF,
        queries.DELETE_ROUTES_OF,
        queries.DELETE_SESSIONS,
    ):
        conn.execute(sql, ids)
    conn.execute(queries.DELETE_JOBS, {"ids": json.dumps(list(jobs))})
    conn.execute(queries.DELETE_DEAD_LETTERS, {"ids": json.dumps(list(letters))})
    conn.execute(queries.DELETE_LEASES, {"ids": json.dumps(list(leases))})
