"""What every session start and end enqueues: the consumers of the lifecycle.

This is the one place that decides which jobs a boundary produces, so every
path (idle, /new, resume, compression, …) gets the same consumers and differs
only in the reason. Idempotency keys are derived from the session id and its
epoch, so re-running the same boundary can never enqueue a consumer twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sessiongate.hooks import events
from sessiongate.hooks.events import Event
from sessiongate.models import EndReason, NewJob, Session

# Job kinds, the contract between the engine and the worker's handlers.
MEMORY_COMMIT = "memory.commit"
MEMORY_FORGET = "memory.forget"
LEDGER_ERASE = "ledger.erase"
HOOK_EVENT = "hook.event"
HOOK_FINALIZE = "hook.finalize"


def events_ordering_key(session_id: str) -> str:
    """Events of one session are delivered in order (start before end)."""
    return f"events:{session_id}"


def memory_ordering_key(provider: str, session_id: str) -> str:
    """One provider's work on one session runs in order (deliveries, then commit)."""
    return f"memory:{provider}:{session_id}"


def event_id(session: Session, name: str) -> str:
    """A deterministic event id: handlers deduplicate at-least-once delivery by it."""
    return f"{session.id}.{session.epoch}.{name}"


@dataclass(frozen=True, slots=True)
class Rotation:
    """The two sides of a rotation (reset, switch, branch, compression)."""

    old_session_id: str
    new_session_id: str


def _job(session: Session, event: Event, *, gates_finalize: bool) -> NewJob:
    """A notification event for the hooks, delivered through the outbox."""
    return NewJob(
        kind=HOOK_EVENT,
        idempotency_key=f"event:{event.event_id}",
        payload=event.to_job_payload(),
        session_id=session.id,
        ordering_key=events_ordering_key(session.id),
        gates_finalize=gates_finalize,
    )


def notification_job(session: Session, event: Event) -> NewJob:
    """A notification event about a live session (agent:start, agent:end, …) for the outbox."""
    return _job(session, event, gates_finalize=False)


def start_jobs(session: Session, *, reason: str, old_session_id: str | None = None) -> list[NewJob]:
    """What a session start (or reopening) enqueues: its `session:start` event."""
    event = events.session_start(
        session, event_id=event_id(session, "start"), reason=reason, old_session_id=old_session_id
    )
    return [_job(session, event, gates_finalize=False)]


def _rotation_event(
    session: Session, reason: EndReason, rotation: Rotation, detail: str | None
) -> Event | None:
    ident = event_id(session, "rotation")
    new_id = rotation.new_session_id
    if reason in (EndReason.NEW, EndReason.RESET, EndReason.AUTO_RESET, EndReason.ADMIN):
        return events.session_reset(
            session, event_id=ident, new_session_id=new_id, reason=reason, detail=detail
        )
    if reason is EndReason.SWITCH:
        return events.session_switch(
            session, event_id=ident, new_session_id=new_id, reason=reason, detail=detail
        )
    if reason is EndReason.COMPRESSION:
        return events.session_compress(
            session, event_id=ident, new_session_id=new_id, compression_count=1
        )
    return None


def end_jobs(
    session: Session,
    reason: EndReason,
    *,
    providers: Sequence[str],
    detail: str | None = None,
    rotation: Rotation | None = None,
) -> list[NewJob]:
    """Every consumer of one session end; all of them gate its finalization.

    Per provider one commit job (it first delivers what the cursor has not
    reached yet, then commits: a data dependency, not a timing one); the
    `session:end` event; the rotation's own event when there is one; the
    `on_session_finalize` plugin hook. An end for `forget` commits nothing: its
    memory consumers erase the session at every provider, and then its ledger.
    """
    new_id = rotation.new_session_id if rotation else None
    if reason is EndReason.FORGET:
        jobs = forget_jobs(session, providers=providers)
    else:
        jobs = _commit_jobs(session, providers)
    end = events.session_end(
        session,
        event_id=event_id(session, "end"),
        reason=reason,
        detail=detail,
        new_session_id=new_id,
    )
    jobs.append(_job(session, end, gates_finalize=True))
    announced = None if rotation is None else _rotation_event(session, reason, rotation, detail)
    if announced is not None:
        jobs.append(_job(session, announced, gates_finalize=True))
    ident = event_id(session, "finalize")
    jobs.append(
        NewJob(
            kind=HOOK_FINALIZE,
            idempotency_key=f"finalize:{ident}",
            payload=events.finalize_payload(
                session, event_id=ident, reason=reason, detail=detail, new_session_id=new_id
            ),
            session_id=session.id,
            gates_finalize=True,
        )
    )
    return jobs


def checkpoint_jobs(session_id: str, upto_seq: int, *, providers: Sequence[str]) -> list[NewJob]:
    """A rolling commit of a live session up to `upto_seq`, at every provider.

    Not gating: a live session is not ending. Ordered with the session's other
    memory work, so checkpoints and the final commit form consecutive epochs.
    """
    return [
        NewJob(
            kind=MEMORY_COMMIT,
            idempotency_key=f"checkpoint:{session_id}:{upto_seq}:{provider}",
            payload={"provider": provider, "session_id": session_id, "upto_seq": upto_seq},
            session_id=session_id,
            ordering_key=memory_ordering_key(provider, session_id),
        )
        for provider in providers
    ]


def forget_jobs(session: Session, *, providers: Sequence[str]) -> list[NewJob]:
    """Forgetting a session: erase it at every provider, then erase its ledger here."""
    jobs = [
        NewJob(
            kind=MEMORY_FORGET,
            idempotency_key=f"forget:{session.id}.{session.epoch}:{provider}",
            payload={"provider": provider, "session_id": session.id, "user_id": None},
            session_id=session.id,
            ordering_key=memory_ordering_key(provider, session.id),
            gates_finalize=True,
        )
        for provider in providers
    ]
    jobs.append(
        NewJob(
            kind=LEDGER_ERASE,
            idempotency_key=f"erase:{session.id}.{session.epoch}",
            payload={"session_id": session.id},
            session_id=session.id,
            gates_finalize=True,
        )
    )
    return jobs


def forget_user_jobs(user_id: str, *, providers: Sequence[str], stamp: str) -> list[NewJob]:
    """Forgetting a user: erase everything of theirs at every provider."""
    return [
        NewJob(
            kind=MEMORY_FORGET,
            idempotency_key=f"forget-user:{user_id}:{provider}:{stamp}",
            payload={"provider": provider, "session_id": None, "user_id": user_id},
        )
        for provider in providers
    ]


def backfill_jobs(session: Session, provider: str) -> list[NewJob]:
    """Commit an ended session to a newly added `provider`: the same job its end enqueues.

    Same idempotency key as the end's, so a backfill run twice (or racing a redrive)
    commits once. Not gating: the session may be finalized already.
    """
    return [replace(job, gates_finalize=False) for job in _commit_jobs(session, [provider])]


def _commit_jobs(session: Session, providers: Sequence[str]) -> list[NewJob]:
    return [
        NewJob(
            kind=MEMORY_COMMIT,
            idempotency_key=f"commit:{session.id}.{session.epoch}:{provider}",
            payload={
                "provider": provider,
                "session_id": session.id,
                # The end compare-and-sets the turn count, so this is the ledger's
                # last seq for this end: the epoch's range is fixed before any retry.
                "upto_seq": session.turn_count,
            },
            session_id=session.id,
            ordering_key=memory_ordering_key(provider, session.id),
            gates_finalize=True,
        )
        for provider in providers
    ]
