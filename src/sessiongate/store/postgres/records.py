"""Between rows and records: checks on values going in, models coming out.

Values are checked before any statement runs, so a refused value leaves
nothing written. PostgreSQL cannot hold NUL in text or JSONB, so NUL and lone
surrogates are refused (`InvalidInput`) rather than mangled; error messages,
which come from arbitrary failures, are made storable instead of refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from sessiongate.errors import InvalidInput
from sessiongate.models import (
    ChatType,
    Cursor,
    DeadLetter,
    EndReason,
    Entry,
    Job,
    JobState,
    Lineage,
    NewEntry,
    NewJob,
    Role,
    Session,
    SessionState,
    Timer,
    estimate_tokens,
)
from sessiongate.validation import check_identifier, check_json, check_text, storable

E = TypeVar("E", bound=Enum)
Row = Mapping[str, Any]
Params = dict[str, Any]


# --- values going in ---------------------------------------------------------------------


def aware(value: datetime, what: str) -> datetime:
    """Refuse a naive datetime: it would be read in the server's zone, silently."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidInput(f"{what} {value.isoformat()} is naive; pass a timezone-aware time")
    return value


def text(value: str | None, what: str) -> str | None:
    """Check an optional text value (no NUL, no lone surrogate) and pass it through."""
    if value is not None:
        check_text(value, what=what)
    return value


def identifier(value: str | None, what: str) -> str | None:
    """Check an optional id or key (`check_identifier`) and pass it through."""
    if value is not None:
        check_identifier(value, what=what)
    return value


def json_text(value: Any, what: str) -> str:
    """Serialize a JSON value for a JSONB column, refusing what JSONB cannot hold."""
    check_json(value, what=what)
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def enum(kind: type[E], value: Any, what: str) -> E:
    """`value` as a member of `kind`; `InvalidInput` naming it if it is none."""
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a valid {what}") from None


def session_params(session: Session) -> Params:
    """Parameters of `INSERT_SESSION`, checked."""
    check_text(session.platform, what="platform")
    check_text(session.chat_id, what="chat id")
    return {
        "id": identifier(session.id, "session id"),
        "key": identifier(session.key, "session key"),
        "parent_id": text(session.parent_id, "parent session id"),
        "lineage": enum(Lineage, session.lineage, "lineage").value if session.lineage else None,
        "title": text(session.title, "title"),
        "platform": session.platform,
        "chat_id": session.chat_id,
        "chat_type": enum(ChatType, session.chat_type, "chat type").value,
        "thread_id": text(session.thread_id, "thread id"),
        "user_id": text(session.user_id, "user id"),
        "user_name": text(session.user_name, "user name"),
        "created_at": aware(session.created_at, "created_at"),
        "last_activity_at": aware(session.last_activity_at, "last_activity_at"),
        "epoch": session.epoch,
    }


def entry_params(entry: NewEntry) -> Params:
    """Parameters of `INSERT_ENTRY` except session, seq and time, checked."""
    role = enum(Role, entry.role, "ledger role")
    check_text(entry.text, what=f"{role} message")
    tokens = entry.token_estimate
    if tokens is None:
        tokens = estimate_tokens(entry.text)
    elif isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise InvalidInput(f"token_estimate must be a non-negative integer, got {tokens!r}")
    return {
        "role": role.value,
        "text": entry.text,
        "parts": json_text(list(entry.parts), "entry parts"),
        "platform_message_id": text(entry.platform_message_id, "platform message id"),
        "token_estimate": tokens,
        "meta": json_text(dict(entry.meta), "entry meta"),
    }


def job_params(job: NewJob, at: datetime) -> Params:
    """Parameters of `ENQUEUE_JOB`, checked; `run_after` defaults to `at`."""
    check_text(job.kind, what="job kind")
    check_text(job.idempotency_key, what="idempotency key")
    if not job.kind or not job.idempotency_key:
        raise InvalidInput("a job needs a non-empty kind and idempotency key")
    return {
        "kind": job.kind,
        "payload": json_text(dict(job.payload), f"payload of job {job.idempotency_key!r}"),
        "idempotency_key": job.idempotency_key,
        "session_id": identifier(job.session_id, "job session id"),
        "ordering_key": text(job.ordering_key, "ordering key"),
        "gates_finalize": bool(job.gates_finalize),
        "run_after": aware(job.run_after or at, "run_after"),
        "at": aware(at, "at"),
    }


def timer_params(timer: Timer) -> Params:
    """Parameters of `SET_TIMER`, checked."""
    return {
        "session_id": identifier(timer.session_id, "timer session id"),
        "kind": identifier(timer.kind, "timer kind"),
        "due_at": aware(timer.due_at, "timer due_at"),
    }


def states(values: Sequence[SessionState]) -> list[str]:
    """Session states as the text stored in the database."""
    return [enum(SessionState, value, "session state").value for value in values]


def storable_error(error: str) -> str:
    """An error text as stored: diagnostics are never refused (`validation.storable`)."""
    return storable(error)


# --- rows coming out ---------------------------------------------------------------------


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware datetime in `datetime.UTC`."""
    return value.astimezone(UTC) if value is not None else None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def session_from(row: Row) -> Session:
    """A `Session` from a `sessions` row."""
    return Session(
        id=row["id"],
        key=row["key"],
        platform=row["platform"],
        chat_id=row["chat_id"],
        chat_type=ChatType(row["chat_type"]),
        created_at=_utc(row["created_at"]),
        last_activity_at=_utc(row["last_activity_at"]),
        state=SessionState(row["state"]),
        user_id=row["user_id"],
        user_name=row["user_name"],
        thread_id=row["thread_id"],
        title=row["title"],
        parent_id=row["parent_id"],
        lineage=Lineage(row["lineage"]) if row["lineage"] else None,
        end_reason=EndReason(row["end_reason"]) if row["end_reason"] else None,
        end_detail=row["end_detail"],
        ended_at=utc(row["ended_at"]),
        turn_count=row["turn_count"],
        token_estimate=row["token_estimate"],
        epoch=row["epoch"],
    )


def entry_from(row: Row) -> Entry:
    """An `Entry` from a `ledger` row."""
    return Entry(
        session_id=row["session_id"],
        seq=row["seq"],
        role=Role(row["role"]),
        text=row["text"],
        created_at=_utc(row["created_at"]),
        token_estimate=row["token_estimate"],
        parts=tuple(row["parts"]),
        platform_message_id=row["platform_message_id"],
        meta=row["meta"],
    )


def stored_entry(session_id: str, seq: int, params: Params, at: datetime) -> Entry:
    """The `Entry` an `INSERT_ENTRY` with `params` stored, without reading it back."""
    return Entry(
        session_id=session_id,
        seq=seq,
        role=Role(params["role"]),
        text=params["text"],
        created_at=_utc(at),
        token_estimate=params["token_estimate"],
        parts=tuple(json.loads(params["parts"])),
        platform_message_id=params["platform_message_id"],
        meta=json.loads(params["meta"]),
    )


def job_from(row: Row) -> Job:
    """A `Job` from a `jobs` row."""
    return Job(
        id=row["id"],
        kind=row["kind"],
        idempotency_key=row["idempotency_key"],
        payload=row["payload"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        run_after=_utc(row["run_after"]),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        session_id=row["session_id"],
        ordering_key=row["ordering_key"],
        gates_finalize=row["gates_finalize"],
        lease_owner=row["lease_owner"],
        lease_expires_at=utc(row["lease_expires_at"]),
        fencing_token=row["fencing_token"],
        last_error=row["last_error"],
    )


def dead_letter_from(row: Row) -> DeadLetter:
    """A `DeadLetter` from a `dead_letters` row."""
    return DeadLetter(
        job_id=row["job_id"],
        kind=row["kind"],
        idempotency_key=row["idempotency_key"],
        payload=row["payload"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        died_at=_utc(row["died_at"]),
        session_id=row["session_id"],
    )


def timer_from(row: Row) -> Timer:
    """A `Timer` from a `timers` row."""
    return Timer(
        session_id=row["session_id"],
        kind=row["kind"],
        due_at=_utc(row["due_at"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=utc(row["lease_expires_at"]),
    )


def cursor_from(row: Row) -> Cursor:
    """A `Cursor` from a `cursors` row."""
    return Cursor(
        provider=row["provider"],
        session_id=row["session_id"],
        delivered_seq=row["delivered_seq"],
        committed_seq=row["committed_seq"],
        commit_epoch=row["commit_epoch"],
        last_commit_at=utc(row["last_commit_at"]),
        last_error=row["last_error"],
        updated_at=utc(row["updated_at"]),
    )
