"""`PostgresStore`: the `Store` protocol on PostgreSQL, for one or several replicas.

Each operation is one transaction on a pooled connection (`Database.run`).
Every state change is a compare-and-set in SQL; claims use `FOR UPDATE SKIP
LOCKED`, so replicas sharing the database coordinate through it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sessiongate.errors import Conflict, NotFound
from sessiongate.models import (
    Cursor,
    DeadLetter,
    EndReason,
    EndRequest,
    Entry,
    Job,
    JobState,
    Lease,
    NewEntry,
    NewJob,
    OutboxStats,
    Session,
    SessionState,
    StoreStats,
    Timer,
)
from sessiongate.store.migrations import pending
from sessiongate.store.postgres import queries, records, transactions
from sessiongate.store.postgres.archive import PostgresArchive
from sessiongate.store.postgres.connection import Cursor as DbCursor
from sessiongate.store.postgres.connection import Database
from sessiongate.store.postgres.leases import PostgresLeases, check_fence, release_fence
from sessiongate.store.postgres.records import (
    Params,
    aware,
    identifier,
    storable_error,
    text,
)
from sessiongate.store.postgres.stats import outbox_stats_from, read_stats


class PostgresStore(PostgresLeases):
    """The PostgreSQL `Store`. Open it with `await PostgresStore.open(dsn)`."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, wait_seconds: float = 10.0
    ) -> PostgresStore:
        """Connect a pool to `dsn`; raises `StoreUnavailable` saying why it cannot.

        `wait_seconds` bounds how long connecting may take before giving up.
        """
        database = await Database.connect(
            dsn, min_size=min_size, max_size=max_size, wait_seconds=wait_seconds
        )
        return cls(database)

    async def close(self) -> None:
        """See `Store.close`."""
        await self._db.close()

    async def stats(self, *, ended_since: datetime, limit: int = 1000) -> StoreStats:
        """See `Store.stats`."""
        params = {"ended_since": aware(ended_since, "ended_since"), "limit": max(0, limit)}
        return await self._db.run(partial(read_stats, params=params))

    @property
    def archive(self) -> PostgresArchive:
        """The memory archive (`sessiongate.store.archive`) in this database."""
        return PostgresArchive(self._db)

    # --- helpers -----------------------------------------------------------------------

    async def _one(self, query: str, params: Params) -> dict[str, Any] | None:
        async def run(cursor: DbCursor) -> dict[str, Any] | None:
            await cursor.execute(query, params)
            return await cursor.fetchone()

        return await self._db.run(run, alone=True)

    async def _execute(self, query: str, params: Params) -> None:
        async def run(cursor: DbCursor) -> None:
            await cursor.execute(query, params)

        await self._db.run(run, alone=True)

    async def _all(self, query: str, params: Params) -> list[dict[str, Any]]:
        async def run(cursor: DbCursor) -> list[dict[str, Any]]:
            await cursor.execute(query, params)
            return await cursor.fetchall()

        return await self._db.run(run, alone=True)

    # --- schema ------------------------------------------------------------------------

    async def schema_version(self) -> int:
        """See `Store.schema_version`."""

        async def run(cursor: DbCursor) -> int:
            return await _schema_version(cursor)

        return await self._db.run(run)

    async def migrate(self) -> int:
        """See `Store.migrate`."""

        # One transaction per migration, each under the advisory lock, so that
        # replicas starting together apply every step exactly once.
        async def step(cursor: DbCursor) -> tuple[int, bool]:
            await cursor.execute(queries.LOCK_MIGRATIONS)
            await cursor.execute(queries.CREATE_SCHEMA_MIGRATIONS)
            current = await _schema_version(cursor)
            todo = pending("postgres", current)
            if not todo:
                return current, False
            migration = todo[0]
            # Without parameters the whole file runs as one multi-statement script.
            await cursor.execute(migration.sql)
            await cursor.execute(
                queries.RECORD_MIGRATION, {"version": migration.version, "name": migration.name}
            )
            return migration.version, True

        while True:
            version, applied = await self._db.run(step)
            if not applied:
                return version

    # --- sessions ----------------------------------------------------------------------

    async def start_session(
        self,
        session: Session,
        *,
        end: EndRequest | None = None,
        copy_entries_from: str | None = None,
        copy_upto_seq: int | None = None,
        timers: Sequence[Timer] = (),
        jobs: Sequence[NewJob] = (),
        fence: Lease | None = None,
    ) -> Session:
        """See `SessionStore.start_session`."""
        params = records.session_params(session)
        end_jobs = _end_jobs(end)
        timer_rows = [records.timer_params(timer) for timer in timers]
        job_rows = [records.job_params(job, session.created_at) for job in jobs]

        async def run(cursor: DbCursor) -> Session:
            await check_fence(cursor, fence)
            await transactions.end_or_conflict(cursor, end, end_jobs)
            stored = await transactions.insert_session(cursor, params)
            await transactions.route(cursor, session.key, session.id, session.created_at)
            if copy_entries_from is not None:
                stored = await transactions.copy_entries(
                    cursor, session.id, copy_entries_from, copy_upto_seq
                )
            await transactions.set_timers(cursor, timer_rows)
            await transactions.enqueue(cursor, job_rows)
            return stored

        return await self._db.run(run)

    async def end_session(self, end: EndRequest) -> bool:
        """See `SessionStore.end_session`."""
        jobs = _end_jobs(end)

        async def run(cursor: DbCursor) -> bool:
            return await transactions.end(cursor, end, jobs)

        return await self._db.run(run)

    async def reopen_session(
        self,
        session_id: str,
        *,
        at: datetime,
        end: EndRequest | None = None,
        timers: Sequence[Timer] = (),
        jobs: Sequence[NewJob] = (),
        fence: Lease | None = None,
    ) -> Session:
        """See `SessionStore.reopen_session`."""
        aware(at, "at")
        end_jobs = _end_jobs(end)
        timer_rows = [records.timer_params(timer) for timer in timers]
        job_rows = [records.job_params(job, at) for job in jobs]

        async def run(cursor: DbCursor) -> Session:
            # Reopened first (another row than `end`'s), so an unknown or active
            # session is reported as such before `end` is tried.
            await check_fence(cursor, fence)
            reopened = await transactions.reopen(cursor, session_id, at)
            await transactions.end_or_conflict(cursor, end, end_jobs)
            await transactions.route(cursor, reopened.key, session_id, at)
            await transactions.set_timers(cursor, timer_rows)
            await transactions.enqueue(cursor, job_rows)
            return reopened

        return await self._db.run(run)

    async def get_session(self, session_id: str) -> Session | None:
        """See `SessionStore.get_session`."""
        row = await self._one(queries.GET_SESSION, {"session_id": session_id})
        return records.session_from(row) if row else None

    async def routed_session(self, key: str) -> Session | None:
        """See `SessionStore.routed_session`."""
        row = await self._one(queries.ROUTED_SESSION, {"key": key})
        return records.session_from(row) if row else None

    async def list_sessions(
        self,
        *,
        key: str | None = None,
        user_id: str | None = None,
        chat_id: str | None = None,
        platform: str | None = None,
        state: SessionState | None = None,
        limit: int = 100,
    ) -> list[Session]:
        """See `SessionStore.list_sessions`."""
        rows = await self._all(
            queries.LIST_SESSIONS,
            {
                "key": key,
                "user_id": user_id,
                "chat_id": chat_id,
                "platform": platform,
                "state": SessionState(state).value if state else None,
                "limit": max(0, limit),
            },
        )
        return [records.session_from(row) for row in rows]

    async def erase_session(self, session_id: str) -> int:
        """See `SessionStore.erase_session`."""
        params = {"session_id": session_id}

        async def run(cursor: DbCursor) -> int:
            await cursor.execute(queries.SESSION_STATE_FOR_UPDATE, params)
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"no session with id {session_id}")
            if row["state"] == "active":
                raise Conflict(f"session {session_id} is active; end it before erasing it")
            await cursor.execute(queries.ERASE_LEDGER, params)
            erased = cursor.rowcount
            await cursor.execute(queries.ERASE_CURSORS, params)
            return erased

        return await self._db.run(run)

    async def set_title(self, session_id: str, title: str | None) -> Session:
        """See `SessionStore.set_title`."""
        text(title, "title")
        row = await self._one(queries.SET_TITLE, {"session_id": session_id, "title": title})
        if row is None:
            raise NotFound(f"no session with id {session_id}")
        return records.session_from(row)

    async def append_entries(
        self,
        session_id: str,
        entries: Sequence[NewEntry],
        *,
        at: datetime,
        fence: Lease | None = None,
        release: bool = False,
    ) -> list[Entry]:
        """See `SessionStore.append_entries`."""
        aware(at, "at")
        rows = [records.entry_params(entry) for entry in entries]
        if rows:
            fenced = None if fence is None else {"key": fence.key, "token": int(fence.token)}
            return await self._db.run(
                partial(
                    transactions.append_alone,
                    session_id=session_id,
                    entries=rows,
                    at=at,
                    fence=fenced,
                    release=release,
                ),
                alone=True,
            )

        async def run(cursor: DbCursor) -> list[Entry]:
            await check_fence(cursor, fence)
            stored = await transactions.append(cursor, session_id, rows, at)
            if release and fence is not None:
                await release_fence(cursor, fence)
            return stored

        return await self._db.run(run)

    async def entries(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """See `SessionStore.entries`."""
        rows = await self._all(
            queries.LIST_ENTRIES,
            {
                "session_id": session_id,
                "after_seq": after_seq,
                "upto_seq": upto_seq,
                "limit": None if limit is None else max(0, limit),
            },
        )
        return [records.entry_from(row) for row in rows]

    # --- outbox ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, at: datetime) -> list[int]:
        """See `Outbox.enqueue`."""
        rows = [records.job_params(job, at) for job in jobs]

        async def run(cursor: DbCursor) -> list[int]:
            return await transactions.enqueue(cursor, rows)

        return await self._db.run(run)

    async def claim_jobs(
        self,
        owner: str,
        *,
        at: datetime,
        lease_seconds: float,
        limit: int = 1,
        kinds: Sequence[str] | None = None,
        skip_lanes: Sequence[str] = (),
    ) -> list[Job]:
        """See `Outbox.claim_jobs`."""
        rows = await self._all(
            queries.CLAIM_JOBS_SKIPPING if skip_lanes else queries.CLAIM_JOBS,
            {
                "owner": text(owner, "lease owner"),
                "at": aware(at, "at"),
                "lease_expires_at": at + timedelta(seconds=lease_seconds),
                "limit": max(0, limit),
                "kinds": None if kinds is None else list(kinds),
                "skip_lanes": [text(lane, "lane") for lane in skip_lanes],
            },
        )
        return [records.job_from(row) for row in rows]

    async def heartbeat(
        self, job_id: int, token: int, *, at: datetime, lease_seconds: float
    ) -> bool:
        """See `Outbox.heartbeat`."""
        row = await self._one(
            queries.HEARTBEAT_JOB,
            {
                "job_id": job_id,
                "token": token,
                "at": aware(at, "at"),
                "lease_expires_at": at + timedelta(seconds=lease_seconds),
            },
        )
        return row is not None

    async def complete_job(self, job_id: int, token: int, *, at: datetime) -> bool:
        """See `Outbox.complete_job`."""
        params = {"job_id": job_id, "token": token, "at": aware(at, "at")}

        async def run(cursor: DbCursor) -> bool:
            await cursor.execute(queries.COMPLETE_JOB, params)
            row = await cursor.fetchone()
            if row is None:
                return False
            if row["gates_finalize"] and row["session_id"] is not None:
                await transactions.finalize_if_drained(cursor, row["session_id"])
            return True

        return await self._db.run(run)

    async def retry_job(
        self, job_id: int, token: int, *, run_after: datetime, error: str, at: datetime
    ) -> bool:
        """See `Outbox.retry_job`."""
        row = await self._one(
            queries.RETRY_JOB,
            {
                "job_id": job_id,
                "token": token,
                "run_after": aware(run_after, "run_after"),
                "error": storable_error(error),
                "at": aware(at, "at"),
            },
        )
        return row is not None

    async def bury_job(self, job_id: int, token: int, *, error: str, at: datetime) -> bool:
        """See `Outbox.bury_job`."""
        row = await self._one(
            queries.BURY_JOB,
            {
                "job_id": job_id,
                "token": token,
                "error": storable_error(error),
                "at": aware(at, "at"),
            },
        )
        return row is not None

    async def get_job(self, job_id: int) -> Job | None:
        """See `Outbox.get_job`."""
        row = await self._one(queries.GET_JOB, {"job_id": job_id})
        return records.job_from(row) if row else None

    async def list_jobs(
        self,
        *,
        session_id: str | None = None,
        state: JobState | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """See `Outbox.list_jobs`."""
        rows = await self._all(
            queries.LIST_JOBS,
            {
                "session_id": session_id,
                "state": JobState(state).value if state else None,
                "kind": kind,
                "limit": max(0, limit),
            },
        )
        return [records.job_from(row) for row in rows]

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """See `Outbox.dead_letters`."""
        rows = await self._all(queries.LIST_DEAD_LETTERS, {"limit": max(0, limit)})
        return [records.dead_letter_from(row) for row in rows]

    async def redrive(self, job_ids: Sequence[int] | None, *, at: datetime) -> int:
        """See `Outbox.redrive`."""
        row = await self._one(
            queries.REDRIVE_JOBS,
            {"job_ids": None if job_ids is None else list(job_ids), "at": aware(at, "at")},
        )
        return int(row["revived"]) if row else 0

    async def drop_dead_job(self, job_id: int) -> bool:
        """See `Outbox.drop_dead_job`."""
        return await self._db.run(partial(transactions.drop_dead_job, job_id=int(job_id)))

    async def next_job_due(self) -> datetime | None:
        """See `Outbox.next_job_due`."""
        row = await self._one(queries.NEXT_JOB_DUE, {})
        return records.utc(row["due"]) if row else None

    async def outbox_stats(self) -> OutboxStats:
        """See `Outbox.outbox_stats`."""

        async def run(cursor: DbCursor) -> OutboxStats:
            await cursor.execute(queries.JOB_COUNTS)
            counts = await cursor.fetchall()
            await cursor.execute(queries.OLDEST_PENDING)
            oldest = await cursor.fetchone()
            return outbox_stats_from(counts, records.utc(oldest["oldest"]) if oldest else None)

        return await self._db.run(run)

    # --- timers ------------------------------------------------------------------------

    async def set_timer(self, timer: Timer) -> None:
        """See `TimerStore.set_timer`."""
        params = records.timer_params(timer)

        async def run(cursor: DbCursor) -> None:
            await transactions.set_timers(cursor, [params])

        await self._db.run(run)

    async def claim_timers(
        self, owner: str, *, at: datetime, lease_seconds: float, limit: int = 100
    ) -> list[Timer]:
        """See `TimerStore.claim_timers`."""
        rows = await self._all(
            queries.CLAIM_TIMERS,
            {
                "owner": text(owner, "lease owner"),
                "at": aware(at, "at"),
                "lease_expires_at": at + timedelta(seconds=lease_seconds),
                "limit": max(0, limit),
            },
        )
        return [records.timer_from(row) for row in rows]

    async def release_timer(
        self, session_id: str, kind: str, owner: str, *, reschedule_at: datetime | None = None
    ) -> bool:
        """See `TimerStore.release_timer`."""
        params: Params = {"session_id": session_id, "kind": kind, "owner": owner}
        if reschedule_at is None:
            row = await self._one(queries.DELETE_TIMER, params)
        else:
            params["due_at"] = aware(reschedule_at, "reschedule_at")
            row = await self._one(queries.RESCHEDULE_TIMER, params)
        return row is not None

    async def next_timer_due(self) -> datetime | None:
        """See `TimerStore.next_timer_due`."""
        row = await self._one(queries.NEXT_TIMER_DUE, {})
        return records.utc(row["due"]) if row else None

    async def timers(self, session_id: str) -> list[Timer]:
        """See `TimerStore.timers`."""
        rows = await self._all(queries.LIST_TIMERS, {"session_id": session_id})
        return [records.timer_from(row) for row in rows]

    # --- cursors -----------------------------------------------------------------------

    async def get_cursor(self, provider: str, session_id: str) -> Cursor:
        """See `CursorStore.get_cursor`."""
        row = await self._one(queries.GET_CURSOR, {"provider": provider, "session_id": session_id})
        return records.cursor_from(row) if row else Cursor(provider, session_id)

    async def cursors(self, session_id: str) -> list[Cursor]:
        """See `CursorStore.cursors`."""
        rows = await self._all(queries.LIST_CURSORS, {"session_id": session_id})
        return [records.cursor_from(row) for row in rows]

    async def advance_cursor(
        self,
        provider: str,
        session_id: str,
        *,
        expected_seq: int,
        delivered_seq: int,
        at: datetime,
    ) -> bool:
        """See `CursorStore.advance_cursor`."""
        row = await self._one(
            queries.ADVANCE_CURSOR,
            {
                "provider": text(provider, "provider name"),
                "session_id": identifier(session_id, "cursor session id"),
                "expected_seq": expected_seq,
                "delivered_seq": delivered_seq,
                "at": aware(at, "at"),
            },
        )
        return bool(row and row["changed"])

    async def record_commit(
        self, provider: str, session_id: str, *, epoch: int, committed_seq: int, at: datetime
    ) -> bool:
        """See `CursorStore.record_commit`."""
        row = await self._one(
            queries.RECORD_COMMIT,
            {
                "provider": text(provider, "provider name"),
                "session_id": identifier(session_id, "cursor session id"),
                "epoch": epoch,
                "committed_seq": committed_seq,
                "at": aware(at, "at"),
            },
        )
        return bool(row and row["changed"])

    async def note_cursor_error(
        self, provider: str, session_id: str, error: str, *, at: datetime
    ) -> None:
        """See `CursorStore.note_cursor_error`."""
        await self._execute(
            queries.NOTE_CURSOR_ERROR,
            {
                "provider": text(provider, "provider name"),
                "session_id": identifier(session_id, "cursor session id"),
                "error": storable_error(error),
                "at": aware(at, "at"),
            },
        )


async def _schema_version(cursor: DbCursor) -> int:
    await cursor.execute(queries.SCHEMA_MIGRATIONS_EXISTS)
    row = await cursor.fetchone()
    if row is None or not row["present"]:
        return 0
    await cursor.execute(queries.SCHEMA_VERSION)
    row = await cursor.fetchone()
    return int(row["version"]) if row else 0


def _end_jobs(end: EndRequest | None) -> list[Params]:
    """The checked jobs of an end request (its `at` is their default run_after)."""
    if end is None:
        return []
    aware(end.at, "end time")
    text(end.detail, "end detail")
    records.enum(EndReason, end.reason, "end reason")
    return [records.job_params(job, end.at) for job in end.jobs]
