"""The records sessiongate keeps: sessions, ledger entries, jobs, timers, cursors.

These are plain frozen values. The store creates and returns them; nothing
else mutates them (use `dataclasses.replace` to derive a changed copy).
All datetimes are timezone-aware and in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JSON = dict[str, Any]


class ChatType(StrEnum):
    """What kind of chat a message came from."""

    DM = "dm"
    GROUP = "group"
    CHANNEL = "channel"
    THREAD = "thread"


class SessionState(StrEnum):
    """Where a session is in its life.

    `active` takes turns; `ending` has been ended and waits for every consumer of
    the end (deliveries, commits, events, hooks) to succeed; `finalized` is done.
    """

    ACTIVE = "active"
    ENDING = "ending"
    FINALIZED = "finalized"


class EndReason(StrEnum):
    """The one catalogue of reasons a session ends. Shutdown and crash are not here."""

    NEW = "new"
    RESET = "reset"
    IDLE = "idle"
    DAILY = "daily"
    AUTO_RESET = "auto_reset"
    SWITCH = "switch"
    BRANCH = "branch"
    COMPRESSION = "compression"
    SUSPENDED = "suspended"
    PRUNE = "prune"
    FORGET = "forget"
    ADMIN = "admin"


class Lineage(StrEnum):
    """How a session relates to its parent."""

    BRANCH = "branch"
    COMPRESSION = "compression"
    RESUME = "resume"


class Role(StrEnum):
    """Who wrote a ledger entry."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class JobState(StrEnum):
    """Where an outbox job is. `dead` jobs have a dead letter and wait for a redrive."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from."""

    platform: str
    chat_id: str
    chat_type: ChatType = ChatType.DM
    user_id: str | None = None
    user_name: str | None = None
    thread_id: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """One conversation, with an immutable id."""

    id: str
    key: str
    platform: str
    chat_id: str
    chat_type: ChatType
    created_at: datetime
    last_activity_at: datetime
    state: SessionState = SessionState.ACTIVE
    user_id: str | None = None
    user_name: str | None = None
    thread_id: str | None = None
    title: str | None = None
    parent_id: str | None = None
    lineage: Lineage | None = None
    end_reason: EndReason | None = None
    # Free text qualifying the end reason, e.g. which policy fired for `auto_reset`.
    end_detail: str | None = None
    ended_at: datetime | None = None
    # Number of ledger entries; equals the highest seq because seqs are dense from 1.
    turn_count: int = 0
    token_estimate: int = 0
    # Commit epoch counter: bumped when a session is reopened (resume), so later
    # turns form a new epoch.
    epoch: int = 0

    @property
    def source(self) -> Source:
        return Source(
            platform=self.platform,
            chat_id=self.chat_id,
            chat_type=self.chat_type,
            user_id=self.user_id,
            user_name=self.user_name,
            thread_id=self.thread_id,
        )


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A ledger entry to append; the store assigns `seq` and `created_at`."""

    role: Role
    text: str
    parts: Sequence[JSON] = ()
    platform_message_id: str | None = None
    token_estimate: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entry:
    """One durable ledger entry of a session, numbered by `seq` from 1."""

    session_id: str
    seq: int
    role: Role
    text: str
    created_at: datetime
    token_estimate: int
    parts: tuple[JSON, ...] = ()
    platform_message_id: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewJob:
    """An outbox job to enqueue.

    `idempotency_key` is unique across the outbox: enqueueing a key that exists
    is a no-op. Jobs with the same `ordering_key` run strictly one after
    another in enqueue order: a job is claimable only when every earlier job of
    its ordering key is `done`. `gates_finalize` jobs must all be done before
    their session moves from `ending` to `finalized`.
    """

    kind: str
    idempotency_key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    ordering_key: str | None = None
    gates_finalize: bool = False
    run_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """An outbox job as stored."""

    id: int
    kind: str
    idempotency_key: str
    payload: Mapping[str, Any]
    state: JobState
    attempts: int
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    session_id: str | None = None
    ordering_key: str | None = None
    gates_finalize: bool = False
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    # Bumped at every claim; an outcome is recorded only with the current token.
    fencing_token: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that exhausted its retry policy, kept until redriven or dropped."""

    job_id: int
    kind: str
    idempotency_key: str
    payload: Mapping[str, Any]
    attempts: int
    last_error: str
    died_at: datetime
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable due time for one session and kind (unique per pair)."""

    session_id: str
    kind: str
    due_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far one provider has got with one session."""

    provider: str
    session_id: str
    delivered_seq: int = 0
    committed_seq: int = 0
    commit_epoch: int = 0
    last_commit_at: datetime | None = None
    last_error: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EndRequest:
    """What `end_session` needs: which session, why, and what consumes the end.

    The transition happens only if the session's current state is one of
    `expected` and, when `expected_turns` is given, its `turn_count` equals it
    (compare-and-set).
    """

    session_id: str
    reason: EndReason
    at: datetime
    detail: str | None = None
    jobs: Sequence[NewJob] = ()
    expected: tuple[SessionState, ...] = (SessionState.ACTIVE,)
    # Compare-and-set on the ledger too: when given, the session must still hold
    # exactly this many entries, so the jobs built from that snapshot cover them all.
    expected_turns: int | None = None
    # When given, the end is written only while this lease still holds the session's
    # key (a replica that lost the conversation cannot end it any more).
    fence: Lease | None = None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Outbox depth for operators and metrics."""

    pending: int
    running: int
    dead: int
    done: int
    oldest_pending_at: datetime | None
    by_kind: Mapping[str, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Aggregates over the sessions, cursors and dead letters kept, for metrics.

    Counted in the database at the moment of the call; "live" sessions are the
    `active` and `ending` ones (an ending session may still owe deliveries).
    """

    # Session counts by state name (every state present, zero included).
    sessions: Mapping[str, int]
    # Sessions whose current end reason is this (reopened sessions have none).
    ended: Mapping[str, int]
    # The sum of every kept session's `turn_count`, and of the live ones'.
    turns: int
    live_turns: int
    # Per provider, the sum of `delivered_seq` over the cursors of live sessions.
    live_delivered: Mapping[str, int]
    # Per provider, how many cursors carry a `last_error` (its last attempt failed).
    failing_cursors: Mapping[str, int]
    # Dead letters by (kind, provider named in the payload, or "" when none).
    dead_letters: Mapping[tuple[str, str], int]
    # Seconds from `ended_at` to the last `last_commit_at` of the session's cursors,
    # for finalized sessions ended since the time asked for (newest first, capped).
    commit_delays: tuple[float, ...]
    # Bytes the database takes on disk, or None where that means nothing (memory).
    size_bytes: int | None


@dataclass(frozen=True, slots=True)
class Lease:
    """A conversation lease: `owner` handles session key `key` until `expires_at`.

    `token` fences the holder's writes: a write made with a lease is refused once
    another owner has taken the key (which hands out a new, larger token), even
    if the old holder does not know yet that its lease expired.
    """

    key: str
    owner: str
    token: int
    acquired_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """What `Store.prune` may remove; a cutoff of None keeps that artefact forever.

    - finalized sessions that ended before `sessions_ended_before`, with their
      ledgers, cursors, timers, jobs and dead letters, when every provider in
      `providers` has received all their turns and nothing of theirs is pending,
      running, or dead with a letter that is not old enough to go;
    - done jobs last changed before `jobs_done_before`;
    - dead letters (and their dead jobs) that died before `dead_letters_before`,
      unless their session is still live (it may be redriven);
    - lease rows expired before `leases_expired_before` (left by a dead holder).

    A session whose key is held by a live lease (a message being handled) is kept.
    At most `limit` of each artefact go in one call.
    """

    sessions_ended_before: datetime | None
    jobs_done_before: datetime | None
    dead_letters_before: datetime | None
    leases_expired_before: datetime | None
    providers: tuple[str, ...] = ()
    limit: int = 500


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one `Store.prune` call removed (or, in a dry run, would remove)."""

    sessions: tuple[str, ...] = ()
    entries: int = 0
    jobs: int = 0
    dead_letters: tuple[int, ...] = ()
    leases: int = 0

    def __add__(self, other: PruneReport) -> PruneReport:
        return PruneReport(
            sessions=self.sessions + other.sessions,
            entries=self.entries + other.entries,
            jobs=self.jobs + other.jobs,
            dead_letters=self.dead_letters + other.dead_letters,
            leases=self.leases + other.leases,
        )

    @property
    def empty(self) -> bool:
        """True when nothing went."""
        return not (self.sessions or self.entries or self.jobs or self.dead_letters or self.leases)


def estimate_tokens(text: str) -> int:
    """A cheap, deterministic token estimate: about four characters a token."""
    return (len(text) + 3) // 4
