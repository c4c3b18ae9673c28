"""The in-memory reference `Store`: plain dicts behind one lock.

It follows the docstrings of `sessiongate.store.base` to the letter and is
deterministic, so unit tests and the simulation can stand on it. Every
operation is one atomic transaction: it validates everything first and only
then mutates, so a failure writes nothing. Records handed out are frozen and
never share a mutable part with the store.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sessiongate.errors import Conflict, NotFound, SessionClosed
from sessiongate.models import (
    Cursor,
    EndReason,
    EndRequest,
    Entry,
    Lease,
    NewEntry,
    NewJob,
    Session,
    SessionState,
    StoreStats,
    Timer,
)
from sessiongate.store import intake
from sessiongate.store.memory_archive import MemoryArchive
from sessiongate.store.memory_outbox import lease_live
from sessiongate.store.memory_retention import MemoryRetention
from sessiongate.store.memory_stats import compute_stats
from sessiongate.validation import check_identifier, check_text, storable

SCHEMA_VERSION = 1


class MemoryStore(MemoryRetention):
    """The reference `Store`, in process memory; lost when the process ends."""

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[str, Session] = {}
        self._routing: dict[str, str] = {}  # session key -> session id
        self._routed_key: dict[str, str] = {}  # session id -> its routing key
        self._ledger: dict[str, list[Entry]] = {}
        self._timers: dict[tuple[str, str], Timer] = {}
        self._cursors: dict[tuple[str, str], Cursor] = {}
        self._archive = MemoryArchive(self._open)

    @property
    def archive(self) -> MemoryArchive:
        """The memory archive (`sessiongate.store.archive`), under this store's lock."""
        return self._archive

    # -- the store's own life ----------------------------------------------------

    async def schema_version(self) -> int:
        """Always the current version: memory has no older schema."""
        async with self._open():
            return SCHEMA_VERSION

    async def migrate(self) -> int:
        """Nothing to apply; returns the current version."""
        async with self._open():
            return SCHEMA_VERSION

    async def close(self) -> None:
        """Forget nothing, but refuse every later operation."""
        self._closed = True

    async def stats(self, *, ended_since: datetime, limit: int = 1000) -> StoreStats:
        """See `Store.stats`."""
        async with self._open():
            since = intake.utc(ended_since, "ended_since")
            return compute_stats(
                self._sessions,
                self._cursors.values(),
                self._dead.values(),
                ended_since=since,
                limit=limit,
            )

    # -- sessions, routing, ledger -------------------------------------------------

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
        async with self._open():
            self._check_fence(fence)
            fresh = intake.session_to_insert(session)
            new_timers = [intake.timer_to_set(t) for t in timers]
            new_jobs = intake.jobs_to_enqueue(jobs)
            end = None if end is None else self._checked_end(end)
            if end is not None:
                self._check_fence(end.fence)
            if end is not None and not self._end_allowed(end):
                raise Conflict(f"session {end.session_id} is no longer in {_states(end)}")
            if fresh.id in self._sessions:
                raise Conflict(f"a session with id {fresh.id!r} already exists")
            copied: list[Entry] = []
            if copy_entries_from is not None:
                copied = self._entries_to_copy(copy_entries_from, copy_upto_seq)
            self._check_route_free(fresh.key, end)
            # Everything is checked: from here on nothing can fail.
            if end is not None:
                self._apply_end(end)
            entries = [replace(e, session_id=fresh.id) for e in copied]
            fresh = replace(
                fresh,
                turn_count=len(entries),
                token_estimate=sum(e.token_estimate for e in entries),
            )
            self._sessions[fresh.id] = fresh
            self._ledger[fresh.id] = entries
            self._route(fresh.key, fresh.id)
            self._put_timers(new_timers)
            self._put_jobs(new_jobs, fresh.created_at)
            return fresh

    async def end_session(self, end: EndRequest) -> bool:
        """See `SessionStore.end_session`."""
        async with self._open():
            end = self._checked_end(end)
            self._check_fence(end.fence)
            if not self._end_allowed(end):
                return False
            self._apply_end(end)
            return True

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
        async with self._open():
            self._check_fence(fence)
            at = intake.utc(at, "reopen time")
            new_timers = [intake.timer_to_set(t) for t in timers]
            new_jobs = intake.jobs_to_enqueue(jobs)
            target = self._require_session(session_id)
            end = None if end is None else self._checked_end(end)
            if target.state is SessionState.ACTIVE:
                raise Conflict(f"session {session_id} is active; only an ended one reopens")
            if target.end_reason is EndReason.FORGET:
                raise Conflict(f"session {session_id} was forgotten; it cannot be reopened")
            if end is not None:
                self._check_fence(end.fence)
            if end is not None and not self._end_allowed(end):
                raise Conflict(f"session {end.session_id} is no longer in {_states(end)}")
            self._check_route_free(target.key, end)
            if end is not None:
                self._apply_end(end)
            reopened = replace(
                self._sessions[session_id],
                state=SessionState.ACTIVE,
                end_reason=None,
                end_detail=None,
                ended_at=None,
                epoch=target.epoch + 1,
                last_activity_at=at,
            )
            self._sessions[session_id] = reopened
            self._route(reopened.key, session_id)
            self._put_timers(new_timers)
            self._put_jobs(new_jobs, at)
            return reopened

    async def get_session(self, session_id: str) -> Session | None:
        """See `SessionStore.get_session`."""
        async with self._open():
            return self._sessions.get(session_id)

    async def routed_session(self, key: str) -> Session | None:
        """See `SessionStore.routed_session`."""
        async with self._open():
            session_id = self._routing.get(key)
            return None if session_id is None else self._sessions[session_id]

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
        async with self._open():
            found = [
                s
                for s in self._sessions.values()
                if (key is None or s.key == key)
                and (user_id is None or s.user_id == user_id)
                and (chat_id is None or s.chat_id == chat_id)
                and (platform is None or s.platform == platform)
                and (state is None or s.state == state)
            ]
            found.sort(key=lambda s: (s.created_at, s.id), reverse=True)
            return found[: max(limit, 0)]

    async def set_title(self, session_id: str, title: str | None) -> Session:
        """See `SessionStore.set_title`."""
        async with self._open():
            intake.optional_text(title, "title")
            session = replace(self._require_session(session_id), title=title)
            self._sessions[session_id] = session
            return session

    async def erase_session(self, session_id: str) -> int:
        """See `SessionStore.erase_session`."""
        async with self._open():
            session = self._require_session(session_id)
            if session.state is SessionState.ACTIVE:
                raise Conflict(f"session {session_id} is active; end it before erasing it")
            erased = len(self._ledger.get(session_id, []))
            self._ledger[session_id] = []
            for cursor_key in [k for k in self._cursors if k[1] == session_id]:
                del self._cursors[cursor_key]
            return erased

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
        async with self._open():
            self._check_fence(fence)
            at = intake.utc(at, "entry time")
            checked = [intake.entry_to_append(e) for e in entries]
            session = self._require_session(session_id)
            if session.state is not SessionState.ACTIVE:
                raise SessionClosed(
                    f"session {session_id} is {session.state}; it takes no new entries "
                    "(route the conversation again)"
                )
            if release and fence is not None:
                del self._leases[fence.key]
            if not checked:
                return []
            stored = [
                replace(entry, session_id=session_id, seq=session.turn_count + n, created_at=at)
                for n, entry in enumerate(checked, start=1)
            ]
            self._ledger[session_id].extend(stored)
            self._sessions[session_id] = replace(
                session,
                turn_count=session.turn_count + len(stored),
                token_estimate=session.token_estimate + sum(e.token_estimate for e in stored),
                last_activity_at=at,
            )
            return [_entry_copy(e) for e in stored]

    async def entries(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """See `SessionStore.entries`."""
        async with self._open():
            ledger = self._ledger.get(session_id, [])
            # Seqs are dense from 1, so list positions are seq - 1.
            stop = len(ledger) if upto_seq is None else min(max(upto_seq, 0), len(ledger))
            start = min(max(after_seq, 0), stop)
            if limit is not None:
                stop = min(stop, start + max(limit, 0))
            return [_entry_copy(e) for e in ledger[start:stop]]

    # -- timers ------------------------------------------------------------------

    async def set_timer(self, timer: Timer) -> None:
        """See `TimerStore.set_timer`."""
        async with self._open():
            self._put_timers([intake.timer_to_set(timer)])

    async def claim_timers(
        self, owner: str, *, at: datetime, lease_seconds: float, limit: int = 100
    ) -> list[Timer]:
        """See `TimerStore.claim_timers`."""
        async with self._open():
            at = intake.utc(at, "claim time")
            expires = at + timedelta(seconds=lease_seconds)
            due = [
                t
                for t in self._timers.values()
                if t.due_at <= at and not lease_live(t.lease_expires_at, at)
            ]
            due.sort(key=lambda t: (t.due_at, t.session_id, t.kind))
            claimed = [
                replace(t, lease_owner=owner, lease_expires_at=expires)
                for t in due[: max(limit, 0)]
            ]
            for timer in claimed:
                self._timers[(timer.session_id, timer.kind)] = timer
            return claimed

    async def release_timer(
        self, session_id: str, kind: str, owner: str, *, reschedule_at: datetime | None = None
    ) -> bool:
        """See `TimerStore.release_timer`."""
        async with self._open():
            moved_to = None if reschedule_at is None else intake.utc(reschedule_at, "reschedule_at")
            timer = self._timers.get((session_id, kind))
            if timer is None or timer.lease_owner != owner:
                return False
            if moved_to is None:
                del self._timers[(session_id, kind)]
            else:
                self._timers[(session_id, kind)] = Timer(session_id, kind, moved_to)
            return True

    async def next_timer_due(self) -> datetime | None:
        """See `TimerStore.next_timer_due`."""
        async with self._open():
            return min((t.due_at for t in self._timers.values()), default=None)

    async def timers(self, session_id: str) -> list[Timer]:
        """See `TimerStore.timers`."""
        async with self._open():
            return sorted(
                (t for t in self._timers.values() if t.session_id == session_id),
                key=lambda t: t.kind,
            )

    # -- cursors -----------------------------------------------------------------

    async def get_cursor(self, provider: str, session_id: str) -> Cursor:
        """See `CursorStore.get_cursor`."""
        async with self._open():
            return self._cursors.get((provider, session_id), Cursor(provider, session_id))

    async def cursors(self, session_id: str) -> list[Cursor]:
        """See `CursorStore.cursors`."""
        async with self._open():
            return sorted(
                (c for c in self._cursors.values() if c.session_id == session_id),
                key=lambda c: c.provider,
            )

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
        async with self._open():
            at = intake.utc(at, "cursor time")
            cursor = self._checked_cursor(provider, session_id)
            if cursor.delivered_seq != expected_seq:
                return False
            self._cursors[(provider, session_id)] = replace(
                cursor, delivered_seq=delivered_seq, last_error=None, updated_at=at
            )
            return True

    async def record_commit(
        self, provider: str, session_id: str, *, epoch: int, committed_seq: int, at: datetime
    ) -> bool:
        """See `CursorStore.record_commit`."""
        async with self._open():
            at = intake.utc(at, "commit time")
            cursor = self._checked_cursor(provider, session_id)
            if cursor.commit_epoch != epoch - 1:
                return False
            self._cursors[(provider, session_id)] = replace(
                cursor,
                commit_epoch=epoch,
                committed_seq=committed_seq,
                last_commit_at=at,
                last_error=None,
                updated_at=at,
            )
            return True

    async def note_cursor_error(
        self, provider: str, session_id: str, error: str, *, at: datetime
    ) -> None:
        """See `CursorStore.note_cursor_error`."""
        async with self._open():
            at = intake.utc(at, "error time")
            cursor = self._checked_cursor(provider, session_id)
            self._cursors[(provider, session_id)] = replace(
                cursor, last_error=storable(error), updated_at=at
            )

    # -- checks (raise, write nothing) -------------------------------------------

    def _require_session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no session with id {session_id!r}")
        return session

    def _checked_end(self, end: EndRequest) -> EndRequest:
        """`end` checked and normalized; `NotFound` if its session is unknown."""
        checked = intake.end_request(end)
        self._require_session(checked.session_id)
        return checked

    def _end_allowed(self, end: EndRequest) -> bool:
        session = self._sessions[end.session_id]
        turns_match = end.expected_turns in (None, session.turn_count)
        return session.state in end.expected and turns_match

    def _check_route_free(self, key: str, end: EndRequest | None) -> None:
        """Routing compare-and-set: after `end`, `key` must route nowhere."""
        routed = self._routing.get(key)
        if routed is not None and (end is None or routed != end.session_id):
            raise Conflict(f"session key {key!r} already routes to session {routed}")

    def _entries_to_copy(self, source_id: str, upto_seq: int | None) -> list[Entry]:
        self._require_session(source_id)
        ledger = self._ledger[source_id]
        return list(ledger if upto_seq is None else ledger[: max(upto_seq, 0)])

    def _checked_cursor(self, provider: str, session_id: str) -> Cursor:
        check_text(provider, what="provider name")
        check_identifier(session_id, what="cursor session id")
        return self._cursors.get((provider, session_id), Cursor(provider, session_id))

    # -- mutations (cannot fail) -------------------------------------------------

    def _apply_end(self, end: EndRequest) -> None:
        session_id = end.session_id
        self._sessions[session_id] = replace(
            self._sessions[session_id],
            state=SessionState.ENDING,
            end_reason=end.reason,
            end_detail=end.detail,
            ended_at=end.at,
        )
        key = self._routed_key.pop(session_id, None)
        if key is not None:
            del self._routing[key]
        for timer_key in [k for k in self._timers if k[0] == session_id]:
            del self._timers[timer_key]
        self._put_jobs(end.jobs, end.at)
        self._finalize_if_done(session_id)

    def _finalize_if_done(self, session_id: str) -> None:
        """An `ending` session with no gating job left unfinished becomes `finalized`."""
        session = self._sessions.get(session_id)
        if session is None or session.state is not SessionState.ENDING:
            return
        for job_id in self._unfinished:
            job = self._jobs[job_id]
            if job.gates_finalize and job.session_id == session_id:
                return
        self._sessions[session_id] = replace(session, state=SessionState.FINALIZED)

    def _route(self, key: str, session_id: str) -> None:
        self._routing[key] = session_id
        self._routed_key[session_id] = key

    def _put_timers(self, timers: Sequence[Timer]) -> None:
        for timer in timers:
            self._timers[(timer.session_id, timer.kind)] = timer


def _states(end: EndRequest) -> str:
    return " or ".join(str(s) for s in end.expected)


def _entry_copy(entry: Entry) -> Entry:
    return replace(entry, parts=copy.deepcopy(entry.parts), meta=copy.deepcopy(entry.meta))


__all__ = ["MemoryStore"]
