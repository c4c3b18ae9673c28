"""The `Store` protocol: every durable fact of sessiongate goes through it.

Each operation is one transaction named by its intention. Every state change
is a compare-and-set in the database (`WHERE state = :expected`), never a read
in Python followed by a write, so several replicas sharing one database stay
correct. All times passed in are timezone-aware (a naive datetime raises
`InvalidInput`); all times returned are UTC, to the microsecond.

Writes validate before writing: ids and session keys pass
`validation.check_identifier`, texts (entry text, titles, source fields,
details, idempotency and ordering keys) pass `validation.check_text`, and JSON
values (entry parts and meta, job payloads) pass `validation.check_json`;
otherwise `InvalidInput` is raised and nothing is written. JSON values come
back as JSON would return them (tuples as lists). Error texts of jobs and
cursors are diagnostics, never refused: they are stored through
`validation.storable`. A failed operation writes nothing. After `close`, every
operation raises `StoreError`.

Three implementations share one contract suite (`tests/store/`): SQLite (the
embedded default), PostgreSQL (several replicas) and an in-memory reference
(`sessiongate.store.memory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

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


class SessionStore(Protocol):
    """Sessions, routing (session key -> current session) and the ledger."""

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
        """Insert `session` (state `active`) and route its key to it, in one transaction.

        With `end`, first ends that session exactly as `end_session` does
        (`NotFound` if it does not exist); if its compare-and-set fails, raise
        `Conflict` and write nothing. Routing is a compare-and-set too: if, after
        that end, the key still routes to some session, raise `Conflict` and write
        nothing (two replicas racing to open a conversation must not leave an
        unrouted, never-ending session behind). With
        `copy_entries_from`, copy that session's ledger entries (seq 1 to
        `copy_upto_seq`, or all) into the new session with the same seqs and the
        counters to match (branch); `NotFound` if that session does not exist. Also
        sets `timers` (upsert) and enqueues `jobs` at `session.created_at`
        (duplicates by idempotency key skipped). Raises `Conflict` if the id exists.
        Of `session`, the store keeps the id, key, source fields, title, parent,
        lineage, times and epoch; state is `active`, end fields are empty and the
        counters are 0 (or those of the copy). Returns the session as stored.
        With `fence`, raises `LeaseLost` and writes nothing unless that lease still
        holds its key (see `LeaseStore`); `end.fence` is checked as `end_session` does.
        """
        ...

    async def end_session(self, end: EndRequest) -> bool:
        """The one funnel: end a session, in one transaction.

        If the session's state is not in `end.expected`, or `end.expected_turns` is
        given and differs from its `turn_count`, return False and write nothing.
        Otherwise: state -> `ending` with `end_reason`, `end_detail`, `ended_at`; delete
        every routing row that points at this session; delete its timers; enqueue
        `end.jobs` at `end.at`. If the session then has no gating job (a
        `gates_finalize` job whose `session_id` is this session) that is not `done`, it
        goes straight to `finalized`. Returns True. Raises `NotFound` for an unknown id,
        and `LeaseLost` (nothing written) when `end.fence` no longer holds its key.
        """
        ...

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
        """Resume an ended session (`ending` or `finalized`) in one transaction.

        Optionally ends `end` first (as `start_session`). Then: state -> `active`,
        end reason/detail/ended_at cleared, `epoch` + 1, `last_activity_at` = `at`,
        its key routed to it; timers set, jobs enqueued at `at`. Raises `Conflict` (nothing
        written) if the session is active or was forgotten (end reason `forget`),
        `end`'s compare-and-set fails, or its key
        still routes to another session after `end`,
        `NotFound` for an unknown id, `LeaseLost` (nothing written) when `fence` no
        longer holds its key.
        """
        ...

    async def get_session(self, session_id: str) -> Session | None:
        """The session with this id, or None."""
        ...

    async def routed_session(self, key: str) -> Session | None:
        """The session the routing row of `key` points to, or None."""
        ...

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
        """Sessions matching every given filter, newest first (created_at, then id, descending)."""
        ...

    async def set_title(self, session_id: str, title: str | None) -> Session:
        """Set a session's title; raises `NotFound`."""
        ...

    async def append_entries(
        self,
        session_id: str,
        entries: Sequence[NewEntry],
        *,
        at: datetime,
        fence: Lease | None = None,
        release: bool = False,
    ) -> list[Entry]:
        """Append entries to an active session's ledger, in one transaction.

        Seqs continue densely from `turn_count + 1`. An entry without
        `token_estimate` gets `sessiongate.models.estimate_tokens(text)`. The
        session's `turn_count`, `token_estimate` and `last_activity_at` (= `at`)
        are updated; entries are created at `at`. Raises `SessionClosed` if the
        session is not active, `NotFound` if it does not exist (checked even for no
        entries, which write nothing). With `fence`, raises `LeaseLost` (nothing
        written) unless that lease still holds its key; with `release` too, the
        lease is given up in the same transaction (the last write of a handled
        message costs no transaction of its own). Returns the stored entries.
        """
        ...

    async def erase_session(self, session_id: str) -> int:
        """Forget a session's transcript: delete its ledger entries and cursors.

        One transaction. The session row stays as a tombstone (ended, so no key
        routes to it again). Returns how many entries were deleted. Raises
        `Conflict` if the session is active (end it first), `NotFound` if unknown.
        """
        ...

    async def entries(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Ledger entries with `after_seq < seq <= upto_seq`, ascending, at most `limit`.

        An unknown session has no entries (an empty list, not `NotFound`).
        """
        ...


class Outbox(Protocol):
    """Durable jobs with leases, fencing tokens, retries and dead letters.

    A lease is live while `at < lease_expires_at` and expired from
    `lease_expires_at` on. A job is "held with `token`" while it is `running` and
    its `fencing_token` equals `token`: only a new claim (which bumps the token)
    takes it away, so an expired lease nobody reclaimed can still be completed.
    Every change to a job sets `updated_at` to the operation's `at`;
    `complete_job`, `retry_job` and `bury_job` clear the lease owner and expiry.
    Fencing tokens never decrease, not even on redrive.
    """

    async def enqueue(self, jobs: Sequence[NewJob], *, at: datetime) -> list[int]:
        """Insert jobs (run_after defaults to `at`); return the ids of the new ones.

        A job whose idempotency key already exists is skipped (not an error).
        """
        ...

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
        """Atomically claim up to `limit` due jobs for `owner`.

        Claimable: `pending` with `run_after <= at`, or `running` with an expired
        lease (its worker is presumed dead); and no job with the same
        `ordering_key` and a smaller id is in any state but `done`. Claiming sets
        `running`, the lease (`owner`, `at + lease_seconds`), `attempts + 1` and
        `fencing_token + 1`; `run_after` is unchanged. Oldest `run_after` first,
        then id. With `kinds`, only jobs of those kinds are claimed (ordering keys
        still block across kinds). Jobs whose ordering key starts with one of
        `skip_lanes` are left for later (see `lane_of`). Safe under concurrent
        claimers: a job is returned to one claimer only per lease.
        """
        ...

    async def heartbeat(
        self, job_id: int, token: int, *, at: datetime, lease_seconds: float
    ) -> bool:
        """Extend the lease of a running job held with `token`; False if it was lost."""
        ...

    async def complete_job(self, job_id: int, token: int, *, at: datetime) -> bool:
        """Mark a running job held with `token` as `done`; False if the lease was lost.

        In the same transaction, a gating job whose session is `ending` and has no
        other gating job left that is not `done` moves that session to `finalized`.
        """
        ...

    async def retry_job(
        self, job_id: int, token: int, *, run_after: datetime, error: str, at: datetime
    ) -> bool:
        """Put a running job held with `token` back to `pending` until `run_after`.

        Records `error` as `last_error`; `attempts` is unchanged. False if not held.
        """
        ...

    async def bury_job(self, job_id: int, token: int, *, error: str, at: datetime) -> bool:
        """Move a running job held with `token` to `dead` and write its dead letter.

        The job's `last_error` and the letter's are `error`; the letter keeps the
        job's attempts and `died_at` = `at`. False if not held.
        """
        ...

    async def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        ...

    async def list_jobs(
        self,
        *,
        session_id: str | None = None,
        state: JobState | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs matching every given filter, by id ascending."""
        ...

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first (died_at, then job id)."""
        ...

    async def redrive(self, job_ids: Sequence[int] | None, *, at: datetime) -> int:
        """Send dead jobs (these ids, or all when None) back to `pending` now.

        `run_after` = `at`; attempts restart from 0; `last_error` and the fencing
        token are kept; their dead letters are removed. Ids of jobs that are not
        dead are ignored. Returns how many jobs were sent back.
        """
        ...

    async def drop_dead_job(self, job_id: int) -> bool:
        """Discard a dead job for good: delete it and its dead letter, in one transaction.

        Later jobs of its ordering key are no longer held behind it. Returns False,
        writing nothing, if the job is unknown or not dead. Raises `Conflict`,
        writing nothing, if it gates its session's finalization: a finalized
        session's consumers all succeeded, so such a job can only be redriven.
        """
        ...

    async def next_job_due(self) -> datetime | None:
        """The earliest `run_after` of a pending job or lease expiry of a running one.

        Pending jobs blocked by their ordering key (an earlier job of the key is not
        `done`) are left out: they cannot run before that job changes, and counting
        them would make an idle worker spin behind a dead job.
        """
        ...

    async def outbox_stats(self) -> OutboxStats:
        """Counts per state and per kind, and the oldest pending job's run_after.

        `by_kind` maps each kind to its non-zero counts by state name.
        """
        ...


class TimerStore(Protocol):
    """Durable due times (idle and daily boundaries), unique per session and kind."""

    async def set_timer(self, timer: Timer) -> None:
        """Insert or move the timer of (session, kind); any lease on it is cleared."""
        ...

    async def claim_timers(
        self, owner: str, *, at: datetime, lease_seconds: float, limit: int = 100
    ) -> list[Timer]:
        """Atomically lease up to `limit` timers with `due_at <= at` and no live lease.

        A lease is live while `at < lease_expires_at`. Earliest due first (then
        session id, then kind), through an index on `due_at` (never a full scan).
        """
        ...

    async def release_timer(
        self, session_id: str, kind: str, owner: str, *, reschedule_at: datetime | None = None
    ) -> bool:
        """Delete a timer leased by `owner`, or move it to `reschedule_at` unleased.

        False, writing nothing, if the timer is gone or its `lease_owner` is not
        `owner` (`set_timer` or another claim took it over).
        """
        ...

    async def next_timer_due(self) -> datetime | None:
        """The earliest `due_at` of any timer, or None."""
        ...

    async def timers(self, session_id: str) -> list[Timer]:
        """The timers of one session, by kind."""
        ...


class CursorStore(Protocol):
    """Per (provider, session): what was delivered and committed.

    Every write of a cursor sets its `updated_at` to the operation's `at`.
    """

    async def get_cursor(self, provider: str, session_id: str) -> Cursor:
        """The cursor, or a zero cursor if none was written yet."""
        ...

    async def cursors(self, session_id: str) -> list[Cursor]:
        """Every written cursor of a session, by provider name."""
        ...

    async def advance_cursor(
        self,
        provider: str,
        session_id: str,
        *,
        expected_seq: int,
        delivered_seq: int,
        at: datetime,
    ) -> bool:
        """Set `delivered_seq` if it currently equals `expected_seq` (absent = 0).

        Clears `last_error`; creates the cursor if absent. False, writing nothing,
        if the precondition fails.
        """
        ...

    async def record_commit(
        self, provider: str, session_id: str, *, epoch: int, committed_seq: int, at: datetime
    ) -> bool:
        """Record commit `epoch` if the current `commit_epoch` is `epoch - 1`.

        Sets `commit_epoch`, `committed_seq` and `last_commit_at`, clears
        `last_error`; `delivered_seq` is unchanged; creates the cursor if absent.
        False, writing nothing, if the precondition fails.
        """
        ...

    async def note_cursor_error(
        self, provider: str, session_id: str, error: str, *, at: datetime
    ) -> None:
        """Record the last error seen for this provider and session (creating the cursor)."""
        ...


class LeaseStore(Protocol):
    """Conversation leases: one replica handles a session key at a time.

    A lease is live while `at < expires_at`. Tokens come from one counter per
    database that never decreases, so every acquisition (of any key) gets a
    token larger than all before it. A lease "holds its key" while the key's
    row carries its token: only a new acquisition takes that away, so an expired
    lease nobody took over still fences correctly.
    """

    async def acquire_lease(
        self,
        key: str,
        owner: str,
        *,
        at: datetime,
        lease_seconds: float,
        replacing: str | None = None,
    ) -> Lease | None:
        """Take `key` for `owner` until `at + lease_seconds`, with a new token.

        Succeeds when nobody holds the key or its lease has expired (whoever held
        it, `owner` included), or when it is held by `replacing` (a holder known to
        be dead); None, writing nothing, while another lease is live.
        """
        ...

    async def renew_lease(
        self, lease: Lease, *, at: datetime, lease_seconds: float
    ) -> Lease | None:
        """Extend a lease that still holds its key to `at + lease_seconds`; None if lost."""
        ...

    async def release_lease(self, lease: Lease) -> bool:
        """Give the key up if this lease still holds it; False if it had been taken."""
        ...

    async def lease_of(self, key: str) -> Lease | None:
        """The lease row of `key` (live or expired), or None."""
        ...

    async def lease_holders(self, *, at: datetime) -> list[str]:
        """The owners holding a live lease at `at`: of a running job, a timer or a key."""
        ...

    async def expire_leases_of(self, owner: str, *, at: datetime) -> int:
        """End every live lease of `owner` at `at` (a holder known to be dead).

        Its running jobs, leased timers and held keys become claimable by anyone at
        once, exactly as when their leases run out; a job's `updated_at` is set to
        `at`. Fencing is unchanged: the next claim or acquisition bumps the token, so
        the old holder can write nothing more. Returns how many leases ended.
        """
        ...


class RetentionStore(Protocol):
    """What retention reads and removes (see `RetentionRules`)."""

    async def stale_sessions(
        self, *, idle_before: datetime, at: datetime, limit: int
    ) -> list[Session]:
        """Active sessions idle since before `idle_before`, oldest activity first.

        Sessions whose key is held by a live lease at `at` are left out.
        """
        ...

    async def prune(
        self, rules: RetentionRules, *, at: datetime, dry_run: bool = False
    ) -> PruneReport:
        """Remove what `rules` allow, in one transaction; report exactly what went.

        With `dry_run`, nothing is written and the report names what would go: the
        same conditions select both. Deleting a session deletes its ledger,
        cursors, timers, jobs and any routing row pointing at it; a conversation
        whose session was pruned starts a new session on its next message.
        """
        ...


class Store(SessionStore, Outbox, TimerStore, CursorStore, LeaseStore, RetentionStore, Protocol):
    """Everything durable. Open one with `sessiongate.store.open_store(url)`."""

    async def stats(self, *, ended_since: datetime, limit: int = 1000) -> StoreStats:
        """Aggregates for metrics, counted in the database (never row by row in Python).

        `commit_delays` covers at most `limit` finalized sessions with
        `ended_at >= ended_since`, newest end first: for each, the seconds from
        `ended_at` to the latest `last_commit_at` of its cursors, left out when no
        cursor was committed at or after the end. See `StoreStats` for the rest.
        """
        ...

    async def schema_version(self) -> int:
        """The schema version the database is at (0 when empty)."""
        ...

    async def migrate(self) -> int:
        """Apply pending migrations (idempotent); return the version reached.

        Raises `SchemaError` if the database is newer than this code.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards.

        Closing twice is harmless.
        """
        ...
