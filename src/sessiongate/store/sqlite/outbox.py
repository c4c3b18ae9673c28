"""Outbox jobs and dead letters: the statements of each operation, on one connection.

Every outcome (heartbeat, complete, retry, bury) is a compare-and-set on the
job's state and fencing token, so a worker whose lease was taken over can no
longer record anything.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sessiongate.errors import Conflict
from sessiongate.models import DeadLetter, Job, JobState, OutboxStats
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.codec import (
    dead_letter_from_row,
    job_from_row,
    maybe_datetime,
)
from sessiongate.store.sqlite.connection import one

Params = Mapping[str, Any]


def enqueue(conn: sqlite3.Connection, jobs: Sequence[Params]) -> list[int]:
    """Insert jobs; a duplicate idempotency key is skipped. The ids of the new ones."""
    ids: list[int] = []
    for job in jobs:
        row = one(conn, queries.ENQUEUE_JOB, job)
        if row is not None:
            ids.append(row["id"])
    return ids


def claim(conn: sqlite3.Connection, params: Params) -> list[Job]:
    """Lease the due, unblocked jobs (the parameters of `CLAIM_JOBS`), oldest first."""
    sql = queries.CLAIM_JOBS if params["skip_lanes"] is None else queries.CLAIM_JOBS_SKIPPING
    jobs = [job_from_row(row) for row in conn.execute(sql, params)]
    # RETURNING does not keep the inner ORDER BY.
    jobs.sort(key=lambda job: (job.run_after, job.id))
    return jobs


def heartbeat(conn: sqlite3.Connection, params: Params) -> bool:
    """Extend a lease held with the current token."""
    return conn.execute(queries.HEARTBEAT_JOB, params).rowcount == 1


def complete(conn: sqlite3.Connection, params: Params) -> bool:
    """Mark a job done; a gating job may finalize its ending session."""
    row = one(conn, queries.COMPLETE_JOB, params)
    if row is None:
        return False
    if row["gates_finalize"] and row["session_id"] is not None:
        conn.execute(queries.FINALIZE_IF_DONE, {"id": row["session_id"]})
    return True


def retry(conn: sqlite3.Connection, params: Params) -> bool:
    """Put a job held with the current token back to pending."""
    return conn.execute(queries.RETRY_JOB, params).rowcount == 1


def bury(conn: sqlite3.Connection, params: Params) -> bool:
    """Move a job held with the current token to dead, with its dead letter."""
    row = one(conn, queries.BURY_JOB, params)
    if row is None:
        return False
    conn.execute(
        queries.INSERT_DEAD_LETTER,
        {
            "job_id": row["id"],
            "kind": row["kind"],
            "idempotency_key": row["idempotency_key"],
            "payload": row["payload"],
            "session_id": row["session_id"],
            "attempts": row["attempts"],
            "last_error": params["error"],
            "at": params["at"],
        },
    )
    return True


def redrive(conn: sqlite3.Connection, params: Params) -> int:
    """Send dead jobs back to pending and drop their dead letters; how many."""
    ids = [row["id"] for row in conn.execute(queries.REDRIVE_JOBS, params).fetchall()]
    if ids:
        conn.execute(queries.DELETE_DEAD_LETTERS, {"ids": json.dumps(ids)})
    return len(ids)


def drop_dead(conn: sqlite3.Connection, job_id: int) -> bool:
    """Delete a dead job that gates nothing, and its dead letter; False if not dead."""
    row = one(conn, queries.DEAD_JOB, {"id": job_id})
    if row is None:
        return False
    if row["gates_finalize"]:
        raise Conflict(
            f"job {job_id} gates the finalization of session {row['session_id']}; "
            "redrive it instead of dropping it"
        )
    conn.execute(queries.DROP_DEAD_JOB, {"id": job_id})
    conn.execute(queries.DROP_DEAD_LETTER, {"id": job_id})
    return True


# -- reads -----------------------------------------------------------------------------------


def get(conn: sqlite3.Connection, job_id: int) -> Job | None:
    """The job with this id, or None."""
    row = one(conn, queries.GET_JOB, {"id": job_id})
    return None if row is None else job_from_row(row)


def search(conn: sqlite3.Connection, filters: Params) -> list[Job]:
    """Jobs matching `filters` (the parameters of `LIST_JOBS`), by id."""
    by_session = filters["session_id"] is not None
    sql = queries.LIST_JOBS_BY_SESSION if by_session else queries.LIST_JOBS
    return [job_from_row(row) for row in conn.execute(sql, filters)]


def dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    """Dead letters, oldest first."""
    rows = conn.execute(queries.LIST_DEAD_LETTERS, {"limit": limit})
    return [dead_letter_from_row(row) for row in rows]


def next_due(conn: sqlite3.Connection) -> int | None:
    """The earliest pending run_after or running lease expiry, in microseconds."""
    row = one(conn, queries.NEXT_JOB_DUE, {})
    return None if row is None else row["due"]


def stats(conn: sqlite3.Connection) -> OutboxStats:
    """Counts per state and kind, and the oldest pending run_after."""
    totals = dict.fromkeys(JobState, 0)
    by_kind: dict[str, dict[str, int]] = {}
    for row in conn.execute(queries.JOB_COUNTS, {}):
        state = JobState(row["state"])
        totals[state] += row["n"]
        by_kind.setdefault(row["kind"], {})[state.value] = row["n"]
    oldest = one(conn, queries.OLDEST_PENDING, {})
    return OutboxStats(
        pending=totals[JobState.PENDING],
        running=totals[JobState.RUNNING],
        dead=totals[JobState.DEAD],
        done=totals[JobState.DONE],
        oldest_pending_at=maybe_datetime(None if oldest is None else oldest["oldest"]),
        by_kind=by_kind,
    )
