"""The multi-statement steps of the PostgreSQL store, each run on an open transaction.

The store composes these inside one `Database.run`: ending a session, routing a
key, enqueueing jobs and finalizing a drained session are shared by several
operations, so they live here once. Values reaching these functions are
already checked (`records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sessiongate.errors import Conflict, NotFound, SessionClosed
from sessiongate.models import EndReason, EndRequest, Entry, Session, SessionState
from sessiongate.store.postgres import queries, records
from sessiongate.store.postgres.connection import Cursor
from sessiongate.store.postgres.leases import check_fence, lease_lost
from sessiongate.store.postgres.records import Params


async def enqueue(cursor: Cursor, jobs: Sequence[Params]) -> list[int]:
    """Insert checked jobs; skip those whose idempotency key exists; return the new ids."""
    ids: list[int] = []
    for params in jobs:
        await cursor.execute(queries.ENQUEUE_JOB, params)
        row = await cursor.fetchone()
        if row is not None:
            ids.append(row["id"])
    return ids


async def set_timers(cursor: Cursor, timers: Sequence[Params]) -> None:
    """Upsert checked timers, clearing any lease."""
    for params in timers:
        await cursor.execute(queries.SET_TIMER, params)


async def finalize_if_drained(cursor: Cursor, session_id: str) -> bool:
    """Move an `ending` session with no gating job left undone to `finalized`.

    The session row is locked first, in its own statement: a concurrent
    transaction completing another gating job (or ending the session) then
    commits before this check reads, so the last one to finish always sees
    everything done and nobody leaves the session stuck in `ending`.
    """
    await cursor.execute(queries.LOCK_SESSION, {"session_id": session_id})
    await cursor.execute(queries.FINALIZE_IF_DONE, {"session_id": session_id})
    return await cursor.fetchone() is not None


async def end(cursor: Cursor, request: EndRequest, jobs: Sequence[Params]) -> bool:
    """The one funnel (`Store.end_session`) on an open transaction; `jobs` are checked."""
    await check_fence(cursor, request.fence)
    await cursor.execute(
        queries.MARK_ENDING,
        {
            "session_id": request.session_id,
            "reason": records.enum(EndReason, request.reason, "end reason").value,
            "detail": request.detail,
            "at": request.at,
            "expected": records.states(request.expected),
            "turns": request.expected_turns,
        },
    )
    if await cursor.fetchone() is None:
        await _require_session(cursor, request.session_id)
        return False
    params = {"session_id": request.session_id}
    await cursor.execute(queries.UNROUTE_SESSION, params)
    await cursor.execute(queries.DELETE_SESSION_TIMERS, params)
    await enqueue(cursor, jobs)
    await cursor.execute(queries.FINALIZE_IF_DONE, params)
    return True


async def drop_dead_job(cursor: Cursor, job_id: int) -> bool:
    """Delete a dead job that gates nothing, and its dead letter; False if not dead."""
    await cursor.execute(queries.DEAD_JOB, {"job_id": job_id})
    row = await cursor.fetchone()
    if row is None:
        return False
    if row["gates_finalize"]:
        raise Conflict(
            f"job {job_id} gates the finalization of session {row['session_id']}; "
            "redrive it instead of dropping it"
        )
    await cursor.execute(queries.DROP_DEAD_JOB, {"job_id": job_id})
    return True


async def end_or_conflict(
    cursor: Cursor, request: EndRequest | None, jobs: Sequence[Params]
) -> None:
    """End `request` first, as `start_session` and `reopen_session` do; `Conflict` if it fails."""
    if request is not None and not await end(cursor, request, jobs):
        raise Conflict(
            f"session {request.session_id} could not be ended: it is no longer in state "
            f"{', '.join(records.states(request.expected))}"
        )


async def route(cursor: Cursor, key: str, session_id: str, at: datetime) -> None:
    """Route `key` to `session_id`; `Conflict` if the key routes to another session."""
    await cursor.execute(queries.ROUTE_SESSION, {"key": key, "session_id": session_id, "at": at})
    if await cursor.fetchone() is None:
        raise Conflict(
            f"session key {key!r} already routes to another session; "
            "end that session first (someone else may have just opened it)"
        )


async def insert_session(cursor: Cursor, params: Params) -> Session:
    """Insert a new `active` session; `Conflict` if its id exists."""
    await cursor.execute(queries.INSERT_SESSION, params)
    row = await cursor.fetchone()
    if row is None:
        raise Conflict(f"a session with id {params['id']} already exists")
    return records.session_from(row)


async def copy_entries(
    cursor: Cursor, session_id: str, source_id: str, upto_seq: int | None
) -> Session:
    """Copy the ledger of `source_id` (to `upto_seq`) into `session_id`; recount it."""
    await _require_session(cursor, source_id)
    await cursor.execute(
        queries.COPY_ENTRIES,
        {"session_id": session_id, "source_id": source_id, "upto_seq": upto_seq},
    )
    await cursor.execute(queries.SET_SESSION_COUNTERS, {"session_id": session_id})
    row = await cursor.fetchone()
    assert row is not None  # inserted earlier in this transaction
    return records.session_from(row)


async def reopen(cursor: Cursor, session_id: str, at: datetime) -> Session:
    """Make an ended session active again (epoch + 1); `Conflict` if it is active."""
    await cursor.execute(queries.REOPEN_SESSION, {"session_id": session_id, "at": at})
    row = await cursor.fetchone()
    if row is None:
        await _require_session(cursor, session_id)
        raise Conflict(f"session {session_id} is active; only an ended session can be resumed")
    return records.session_from(row)


async def append(
    cursor: Cursor, session_id: str, entries: Sequence[Params], at: datetime
) -> list[Entry]:
    """Append checked entries to an active session's ledger with dense seqs."""
    if not entries:
        state = await _require_session(cursor, session_id)
        if state != SessionState.ACTIVE:
            raise SessionClosed(f"session {session_id} is {state}, not active")
        return []
    await cursor.execute(
        queries.RESERVE_SEQS,
        {
            "session_id": session_id,
            "count": len(entries),
            "tokens": sum(params["token_estimate"] for params in entries),
            "at": at,
        },
    )
    row = await cursor.fetchone()
    if row is None:
        state = await _require_session(cursor, session_id)
        raise SessionClosed(f"session {session_id} is {state}, not active; it takes no new entries")
    first = row["turn_count"] - len(entries) + 1
    rows = [
        {**params, "session_id": session_id, "seq": first + offset, "created_at": at}
        for offset, params in enumerate(entries)
    ]
    if rows:
        await cursor.executemany(queries.INSERT_ENTRY, rows)
    return [
        records.stored_entry(session_id, first + offset, params, at)
        for offset, params in enumerate(entries)
    ]


async def append_alone(
    cursor: Cursor,
    session_id: str,
    entries: Sequence[Params],
    at: datetime,
    fence: Params | None,
    release: bool,
) -> list[Entry]:
    """`append` in ONE statement, fence and release included: run it outside a transaction.

    It is the hot path of every turn: one round trip instead of one per statement plus
    BEGIN and COMMIT. Should it write nothing, a second read says why.
    """
    await cursor.execute(
        queries.APPEND_ENTRIES,
        {
            "session_id": session_id,
            "count": len(entries),
            "tokens": sum(params["token_estimate"] for params in entries),
            "at": at,
            "fence_key": None if fence is None else fence["key"],
            "fence_token": None if fence is None else fence["token"],
            "release": release and fence is not None,
            "roles": [params["role"] for params in entries],
            "texts": [params["text"] for params in entries],
            "parts": [params["parts"] for params in entries],
            "message_ids": [params["platform_message_id"] for params in entries],
            "token_estimates": [params["token_estimate"] for params in entries],
            "metas": [params["meta"] for params in entries],
        },
    )
    row = await cursor.fetchone()
    assert row is not None  # the final SELECT always yields one row
    if not row["fence_holds"]:
        assert fence is not None
        raise lease_lost(fence["key"], fence["token"])
    if row["turn_count"] is None:
        state = await _require_session(cursor, session_id)
        raise SessionClosed(f"session {session_id} is {state}, not active; it takes no new entries")
    first = row["turn_count"] - len(entries) + 1
    return [
        records.stored_entry(session_id, first + offset, params, at)
        for offset, params in enumerate(entries)
    ]


async def _require_session(cursor: Cursor, session_id: str) -> str:
    """The state of `session_id`; `NotFound` if there is no such session."""
    await cursor.execute(queries.SESSION_STATE, {"session_id": session_id})
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"no session with id {session_id}")
    state: str = row["state"]
    return state
