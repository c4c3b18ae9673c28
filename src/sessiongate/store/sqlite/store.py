"""`SQLiteStore`: the embedded default store, one SQLite file in WAL mode.

Writes go through the group-commit `Writer` (one thread, one connection, one
fsync per batch); reads through a small pool of read-only connections. Values
are validated and encoded here, before anything reaches the database, so a
refused value never leaves a half-written row.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from sessiongate.errors import SchemaError
from sessiongate.models import (
    Cursor,
    DeadLetter,
    EndRequest,
    Entry,
    Job,
    JobState,
    Lease,
    NewEntry,
    NewJob,
    OutboxStats,
    PruneReport,
    RetentionRules,
    Session,
    SessionState,
    StoreStats,
    Timer,
)
from sessiongate.store.migrations import pending
from sessiongate.store.sqlite import cursors as cursor_sql
from sessiongate.store.sqlite import leases as lease_sql
from sessiongate.store.sqlite import outbox as outbox_sql
from sessiongate.store.sqlite import schema
from sessiongate.store.sqlite import sessions as session_sql
from sessiongate.store.sqlite import stats as stats_sql
from sessiongate.store.sqlite import timers as timer_sql
from sessiongate.store.sqlite.archive import SQLiteArchive
from sessiongate.store.sqlite.codec import (
    at_micros,
    end_params,
    entry_params,
    jobs_params,
    lease_micros,
    maybe_at_micros,
    maybe_datetime,
    session_params,
    timer_params,
    to_micros,
)
from sessiongate.store.sqlite.connection import connect, prepare_directory
from sessiongate.store.sqlite.inline import DEFERRED, InlineReader
from sessiongate.store.sqlite.leases import fence_params
from sessiongate.store.sqlite.readers import DEFAULT_READERS, ReaderPool
from sessiongate.store.sqlite.writer import DEFAULT_BATCH_LIMIT, Writer
from sessiongate.validation import check_identifier, check_text, storable

T = TypeVar("T")


def _open_write_connection(path: Path) -> sqlite3.Connection:
    prepare_directory(path)
    return connect(path, read_only=False)


def _check_cursor(provider: str, session_id: str) -> None:
    check_text(provider, what="provider name")
    check_identifier(session_id, what="cursor session id")


class SQLiteStore:
    """The `Store` on one SQLite file, with group commit. Open it with `SQLiteStore.open`."""

    def __init__(self, path: Path, writer: Writer, readers: ReaderPool) -> None:
        self._path = path
        self._writer = writer
        self._readers = readers
        self._inline = InlineReader(path)

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        readers: int = DEFAULT_READERS,
        batch_limit: int = DEFAULT_BATCH_LIMIT,
    ) -> SQLiteStore:
        """Open (creating it and its directory if missing) the database file at `path`.

        Raises `StoreUnavailable` or `StoreError` naming the file when it cannot be
        opened for writing. Does not migrate: call `migrate` (or use `open_store`).
        """
        path = Path(path)
        check_text(str(path), what="database path")
        conn = await asyncio.to_thread(_open_write_connection, path)
        writer = Writer(conn, path, batch_limit=batch_limit)
        writer.start()
        return cls(path, writer, ReaderPool(path, size=readers))

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def writer(self) -> Writer:
        """The group-commit writer (its `commits` counter shows the batching)."""
        return self._writer

    @property
    def archive(self) -> SQLiteArchive:
        """The memory archive (`sessiongate.store.archive`) in this database file."""
        return SQLiteArchive(self._writer, self._readers)

    async def _point_read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """A read of one row by key, where it is answered soonest.

        While the writer is idle, here on the calling thread, without a thread hop
        (`InlineReader`), or, if that would wait, on the writer's connection, whose page
        cache is warm. While writes are under way, on a reader beside them: the event
        loop's time then goes to the writes' results.
        """
        if self._writer.idle:
            value = self._inline.read(read)
            if value is not DEFERRED:
                return value
            return await self._writer.read(read)
        return await self._readers.run(read)

    # -- schema ------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        """See `Store.schema_version`."""
        return await self._readers.run(schema.version)

    async def migrate(self) -> int:
        """See `Store.migrate`."""
        current = await self._writer.run(schema.prepare)
        try:
            steps = pending("sqlite", current)
        except SchemaError as exc:
            raise SchemaError(f"{exc} (database file {self._path})") from None
        for migration in steps:
            at = to_micros(datetime.now(UTC))
            current = await self._writer.run(partial(schema.apply, migration=migration, at=at))
        return current

    async def close(self) -> None:
        """See `Store.close`."""
        self._inline.close()
        await self._readers.close()
        await self._writer.close()

    async def stats(self, *, ended_since: datetime, limit: int = 1000) -> StoreStats:
        """See `Store.stats`."""
        params = {"ended_since": at_micros(ended_since, "ended_since"), "limit": max(0, limit)}
        return await self._readers.run(partial(stats_sql.stats, params=params, path=self._path))

    # -- sessions, routing, ledger -------------------------------------------------------------

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
        operation = partial(
            session_sql.start,
            fence=fence_params(fence),
            session=session_params(session),
            end_request=None if end is None else end_params(end),
            copy_from=copy_entries_from,
            copy_upto=copy_upto_seq,
            timers=[timer_params(timer) for timer in timers],
            jobs=jobs_params(jobs, at=session.created_at),
        )
        return await self._writer.run(operation)

    async def end_session(self, end: EndRequest) -> bool:
        """See `SessionStore.end_session`."""
        return await self._writer.run(partial(session_sql.end, request=end_params(end)))

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
        operation = partial(
            session_sql.reopen,
            fence=fence_params(fence),
            session_id=session_id,
            at=at_micros(at, "at"),
            end_request=None if end is None else end_params(end),
            timers=[timer_params(timer) for timer in timers],
            jobs=jobs_params(jobs, at=at),
        )
        return await self._writer.run(operation)

    async def get_session(self, session_id: str) -> Session | None:
        """See `SessionStore.get_session`."""
        return await self._point_read(partial(session_sql.find, session_id=session_id))

    async def routed_session(self, key: str) -> Session | None:
        """See `SessionStore.routed_session`."""
        return await self._point_read(partial(session_sql.routed, key=key))

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
        filters = {
            "key": key,
            "user_id": user_id,
            "chat_id": chat_id,
            "platform": platform,
            "state": None if state is None else SessionState(state).value,
            "limit": max(0, limit),
        }
        return await self._readers.run(partial(session_sql.search, filters=filters))

    async def erase_session(self, session_id: str) -> int:
        """See `SessionStore.erase_session`."""
        return await self._writer.run(partial(session_sql.erase, session_id=session_id))

    async def set_title(self, session_id: str, title: str | None) -> Session:
        """See `SessionStore.set_title`."""
        if title is not None:
            check_text(title, what="title")
        return await self._writer.run(
            partial(session_sql.set_title, session_id=session_id, title=title)
        )

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
        operation = session_sql.Append(
            session_id,
            [entry_params(entry) for entry in entries],
            at_micros(at, "at"),
            fence_params(fence),
            release,
        )
        return await self._writer.run(operation)

    async def entries(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """See `SessionStore.entries`."""
        filters = {
            "session_id": session_id,
            "after_seq": after_seq,
            "upto_seq": upto_seq,
            "limit": None if limit is None else max(0, limit),
        }
        return await self._readers.run(partial(session_sql.ledger, filters=filters))

    # -- outbox --------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, at: datetime) -> list[int]:
        """See `Outbox.enqueue`."""
        return await self._writer.run(partial(outbox_sql.enqueue, jobs=jobs_params(jobs, at=at)))

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
        check_text(owner, what="lease owner")
        for lane in skip_lanes:
            check_text(lane, what="lane")
        at_us = at_micros(at, "at")
        params = {
            "owner": owner,
            "at": at_us,
            "lease_expires_at": at_us + lease_micros(lease_seconds),
            "limit": max(0, limit),
            "kinds": None if kinds is None else json.dumps(list(kinds)),
            "skip_lanes": json.dumps(list(skip_lanes)) if skip_lanes else None,
        }
        return await self._writer.run(partial(outbox_sql.claim, params=params))

    async def heartbeat(
        self, job_id: int, token: int, *, at: datetime, lease_seconds: float
    ) -> bool:
        """See `Outbox.heartbeat`."""
        at_us = at_micros(at, "at")
        params = {
            "id": job_id,
            "token": token,
            "at": at_us,
            "lease_expires_at": at_us + lease_micros(lease_seconds),
        }
        return await self._writer.run(partial(outbox_sql.heartbeat, params=params))

    async def complete_job(self, job_id: int, token: int, *, at: datetime) -> bool:
        """See `Outbox.complete_job`."""
        params = {"id": job_id, "token": token, "at": at_micros(at, "at")}
        return await self._writer.run(partial(outbox_sql.complete, params=params))

    async def retry_job(
        self, job_id: int, token: int, *, run_after: datetime, error: str, at: datetime
    ) -> bool:
        """See `Outbox.retry_job`."""
        params = {
            "id": job_id,
            "token": token,
            "run_after": at_micros(run_after, "run_after"),
            "error": storable(error),
            "at": at_micros(at, "at"),
        }
        return await self._writer.run(partial(outbox_sql.retry, params=params))

    async def bury_job(self, job_id: int, token: int, *, error: str, at: datetime) -> bool:
        """See `Outbox.bury_job`."""
        params = {
            "id": job_id,
            "token": token,
            "error": storable(error),
            "at": at_micros(at, "at"),
        }
        return await self._writer.run(partial(outbox_sql.bury, params=params))

    async def get_job(self, job_id: int) -> Job | None:
        """See `Outbox.get_job`."""
        return await self._readers.run(partial(outbox_sql.get, job_id=job_id))

    async def list_jobs(
        self,
        *,
        session_id: str | None = None,
        state: JobState | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """See `Outbox.list_jobs`."""
        filters = {
            "session_id": session_id,
            "state": None if state is None else JobState(state).value,
            "kind": kind,
            "limit": max(0, limit),
        }
        return await self._readers.run(partial(outbox_sql.search, filters=filters))

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """See `Outbox.dead_letters`."""
        return await self._readers.run(partial(outbox_sql.dead_letters, limit=max(0, limit)))

    async def redrive(self, job_ids: Sequence[int] | None, *, at: datetime) -> int:
        """See `Outbox.redrive`."""
        params = {
            "ids": None if job_ids is None else json.dumps([int(i) for i in job_ids]),
            "at": at_micros(at, "at"),
        }
        return await self._writer.run(partial(outbox_sql.redrive, params=params))

    async def drop_dead_job(self, job_id: int) -> bool:
        """See `Outbox.drop_dead_job`."""
        return await self._writer.run(partial(outbox_sql.drop_dead, job_id=int(job_id)))

    async def next_job_due(self) -> datetime | None:
        """See `Outbox.next_job_due`."""
        return maybe_datetime(await self._readers.run(outbox_sql.next_due))

    async def outbox_stats(self) -> OutboxStats:
        """See `Outbox.outbox_stats`."""
        return await self._readers.run(outbox_sql.stats)

    # -- timers --------------------------------------------------------------------------------

    async def set_timer(self, timer: Timer) -> None:
        """See `TimerStore.set_timer`."""
        await self._writer.run(partial(timer_sql.set_timer, params=timer_params(timer)))

    async def claim_timers(
        self, owner: str, *, at: datetime, lease_seconds: float, limit: int = 100
    ) -> list[Timer]:
        """See `TimerStore.claim_timers`."""
        check_text(owner, what="lease owner")
        at_us = at_micros(at, "at")
        params = {
            "owner": owner,
            "at": at_us,
            "lease_expires_at": at_us + lease_micros(lease_seconds),
            "limit": max(0, limit),
        }
        return await self._writer.run(partial(timer_sql.claim, params=params))

    async def release_timer(
        self, session_id: str, kind: str, owner: str, *, reschedule_at: datetime | None = None
    ) -> bool:
        """See `TimerStore.release_timer`."""
        params = {
            "session_id": session_id,
            "kind": kind,
            "owner": owner,
            "due_at": maybe_at_micros(reschedule_at, "reschedule_at"),
        }
        return await self._writer.run(partial(timer_sql.release, params=params))

    async def next_timer_due(self) -> datetime | None:
        """See `TimerStore.next_timer_due`."""
        return maybe_datetime(await self._readers.run(timer_sql.next_due))

    async def timers(self, session_id: str) -> list[Timer]:
        """See `TimerStore.timers`."""
        return await self._readers.run(partial(timer_sql.of_session, session_id=session_id))

    # -- cursors -------------------------------------------------------------------------------

    async def get_cursor(self, provider: str, session_id: str) -> Cursor:
        """See `CursorStore.get_cursor`."""
        return await self._readers.run(
            partial(cursor_sql.get, provider=provider, session_id=session_id)
        )

    async def cursors(self, session_id: str) -> list[Cursor]:
        """See `CursorStore.cursors`."""
        return await self._readers.run(partial(cursor_sql.of_session, session_id=session_id))

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
        _check_cursor(provider, session_id)
        params = {
            "provider": provider,
            "session_id": session_id,
            "expected_seq": expected_seq,
            "delivered_seq": delivered_seq,
            "at": at_micros(at, "at"),
        }
        return await self._writer.run(partial(cursor_sql.advance, params=params))

    async def record_commit(
        self, provider: str, session_id: str, *, epoch: int, committed_seq: int, at: datetime
    ) -> bool:
        """See `CursorStore.record_commit`."""
        _check_cursor(provider, session_id)
        params = {
            "provider": provider,
            "session_id": session_id,
            "epoch": epoch,
            "committed_seq": committed_seq,
            "at": at_micros(at, "at"),
        }
        return await self._writer.run(partial(cursor_sql.record_commit, params=params))

    async def note_cursor_error(
        self, provider: str, session_id: str, error: str, *, at: datetime
    ) -> None:
        """See `CursorStore.note_cursor_error`."""
        _check_cursor(provider, session_id)
        params = {
            "provider": provider,
            "session_id": session_id,
            "error": storable(error),
            "at": at_micros(at, "at"),
        }
        await self._writer.run(partial(cursor_sql.note_error, params=params))

    # -- conversation leases -----------------------------------------------------------------

    async def acquire_lease(
        self,
        key: str,
        owner: str,
        *,
        at: datetime,
        lease_seconds: float,
        replacing: str | None = None,
    ) -> Lease | None:
        """See `LeaseStore.acquire_lease`."""
        check_identifier(key, what="session key")
        check_text(owner, what="lease owner")
        now = at_micros(at, "at")
        params = {
            "key": key,
            "owner": owner,
            "at": now,
            "expires_at": now + lease_micros(lease_seconds),
            "replacing": replacing,
        }
        return await self._writer.run(lease_sql.Acquire(params))

    async def renew_lease(
        self, lease: Lease, *, at: datetime, lease_seconds: float
    ) -> Lease | None:
        """See `LeaseStore.renew_lease`."""
        expires = at_micros(at, "at") + lease_micros(lease_seconds)
        params = {"key": lease.key, "token": int(lease.token), "expires_at": expires}
        return await self._writer.run(lease_sql.Renew(params))

    async def release_lease(self, lease: Lease) -> bool:
        """See `LeaseStore.release_lease`."""
        params = {"key": lease.key, "token": int(lease.token)}
        return await self._writer.run(partial(lease_sql.release, params=params))

    async def lease_of(self, key: str) -> Lease | None:
        """See `LeaseStore.lease_of`."""
        return await self._point_read(partial(lease_sql.lease_of, key=key))

    async def lease_holders(self, *, at: datetime) -> list[str]:
        """See `LeaseStore.lease_holders`."""
        params = {"at": at_micros(at, "at")}
        return await self._readers.run(partial(lease_sql.holders, params=params))

    async def expire_leases_of(self, owner: str, *, at: datetime) -> int:
        """See `LeaseStore.expire_leases_of`."""
        check_text(owner, what="lease owner")
        params = {"owner": owner, "at": at_micros(at, "at")}
        return await self._writer.run(partial(lease_sql.expire_of, params=params))

    # -- retention -----------------------------------------------------------------------------

    async def stale_sessions(
        self, *, idle_before: datetime, at: datetime, limit: int
    ) -> list[Session]:
        """See `RetentionStore.stale_sessions`."""
        params = {
            "idle_before": at_micros(idle_before, "idle_before"),
            "at": at_micros(at, "at"),
            "limit": max(0, limit),
        }
        return await self._readers.run(partial(lease_sql.stale, params=params))

    async def prune(
        self, rules: RetentionRules, *, at: datetime, dry_run: bool = False
    ) -> PruneReport:
        """See `RetentionStore.prune`."""
        for provider in rules.providers:
            check_text(provider, what="provider name")
        params = {
            "ended_before": maybe_at_micros(rules.sessions_ended_before, "sessions_ended_before"),
            "done_before": maybe_at_micros(rules.jobs_done_before, "jobs_done_before"),
            "died_before": maybe_at_micros(rules.dead_letters_before, "dead_letters_before"),
            "expired_before": maybe_at_micros(rules.leases_expired_before, "leases_expired_before"),
            "at": at_micros(at, "at"),
            "providers": json.dumps(list(rules.providers)),
            "provider_count": len(set(rules.providers)),
            "limit": max(0, rules.limit),
        }
        return await self._writer.run(partial(lease_sql.prune, rules=params, dry_run=dry_run))
