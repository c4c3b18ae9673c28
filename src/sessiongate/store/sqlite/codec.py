"""Conversions between sessiongate's records and SQLite values.

Times are stored as INTEGER microseconds since the Unix epoch, UTC; JSON
values as TEXT. This is the only place either conversion happens.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sessiongate.errors import InvalidInput
from sessiongate.models import (
    ChatType,
    Cursor,
    DeadLetter,
    EndReason,
    EndRequest,
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
)
from sessiongate.store import intake

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime, *, what: str = "time") -> int:
    """An aware datetime as integer microseconds since the epoch; refuses a naive one."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} {value.isoformat()} has no timezone; pass an aware datetime")
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime."""
    # Positional arguments: measurably cheaper than `microseconds=`, on every row read.
    return _EPOCH + timedelta(0, 0, value)


def maybe_datetime(value: int | None) -> datetime | None:
    """`from_micros`, passing None through."""
    return None if value is None else from_micros(value)


def lease_micros(seconds: float) -> int:
    """A lease length in whole microseconds; refuses a negative or non-finite one."""
    return intake.lease_length(seconds) // _MICROSECOND


# Enum members by value: a dict lookup costs far less than calling the enum on every row.
_CHAT_TYPES = {member.value: member for member in ChatType}
_STATES = {member.value: member for member in SessionState}
_ROLES = {member.value: member for member in Role}

# `session_from_row` builds a `Session` positionally, which costs half as much as twenty
# keywords on every read; a change to the record's fields must not go unnoticed.
_SESSION_FIELDS = (
    "id",
    "key",
    "platform",
    "chat_id",
    "chat_type",
    "created_at",
    "last_activity_at",
    "state",
    "user_id",
    "user_name",
    "thread_id",
    "title",
    "parent_id",
    "lineage",
    "end_reason",
    "end_detail",
    "ended_at",
    "turn_count",
    "token_estimate",
    "epoch",
)
if tuple(f.name for f in fields(Session)) != _SESSION_FIELDS:
    raise RuntimeError("the fields of Session changed: update codec.session_from_row to match")


def session_from_row(row: Sequence[Any]) -> Session:
    """A `Session` from a row of `SESSION_COLUMNS`, read by position (in that order)."""
    (
        id_,
        key,
        state,
        end_reason,
        end_detail,
        parent_id,
        lineage,
        title,
        platform,
        chat_id,
        chat_type,
        thread_id,
        user_id,
        user_name,
        created_at,
        last_activity_at,
        ended_at,
        turn_count,
        token_estimate,
        epoch,
    ) = row
    return Session(  # in the order of _SESSION_FIELDS
        id_,
        key,
        platform,
        chat_id,
        _CHAT_TYPES.get(chat_type) or ChatType(chat_type),
        from_micros(created_at),
        from_micros(last_activity_at),
        _STATES.get(state) or SessionState(state),
        user_id,
        user_name,
        thread_id,
        title,
        parent_id,
        None if lineage is None else Lineage(lineage),
        None if end_reason is None else EndReason(end_reason),
        end_detail,
        None if ended_at is None else from_micros(ended_at),
        turn_count,
        token_estimate,
        epoch,
    )


def _json_array(text: str) -> tuple[Any, ...]:
    return () if text == "[]" else tuple(json.loads(text))


def _json_object(text: str) -> dict[str, Any]:
    if text == "{}":
        return {}
    value: dict[str, Any] = json.loads(text)
    return value


def entry_from_row(row: Sequence[Any]) -> Entry:
    """An `Entry` from a row of `ENTRY_COLUMNS`, read by position (in that order)."""
    session_id, seq, role, text, parts, platform_message_id, token_estimate, meta, created_at = row
    return Entry(
        session_id=session_id,
        seq=seq,
        role=_ROLES.get(role) or Role(role),
        text=text,
        created_at=from_micros(created_at),
        token_estimate=token_estimate,
        parts=_json_array(parts),
        platform_message_id=platform_message_id,
        meta=_json_object(meta),
    )


def job_from_row(row: sqlite3.Row) -> Job:
    """A `Job` from a row of `JOB_COLUMNS`."""
    return Job(
        id=row["id"],
        kind=row["kind"],
        idempotency_key=row["idempotency_key"],
        payload=json.loads(row["payload"]),
        state=JobState(row["state"]),
        attempts=row["attempts"],
        run_after=from_micros(row["run_after"]),
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        session_id=row["session_id"],
        ordering_key=row["ordering_key"],
        gates_finalize=bool(row["gates_finalize"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=maybe_datetime(row["lease_expires_at"]),
        fencing_token=row["fencing_token"],
        last_error=row["last_error"],
    )


def dead_letter_from_row(row: sqlite3.Row) -> DeadLetter:
    """A `DeadLetter` from a row of `dead_letters`."""
    return DeadLetter(
        job_id=row["job_id"],
        kind=row["kind"],
        idempotency_key=row["idempotency_key"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        died_at=from_micros(row["died_at"]),
        session_id=row["session_id"],
    )


def timer_from_row(row: sqlite3.Row) -> Timer:
    """A `Timer` from a row of `TIMER_COLUMNS`."""
    return Timer(
        session_id=row["session_id"],
        kind=row["kind"],
        due_at=from_micros(row["due_at"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=maybe_datetime(row["lease_expires_at"]),
    )


def cursor_from_row(row: sqlite3.Row) -> Cursor:
    """A `Cursor` from a row of `CURSOR_COLUMNS`."""
    return Cursor(
        provider=row["provider"],
        session_id=row["session_id"],
        delivered_seq=row["delivered_seq"],
        committed_seq=row["committed_seq"],
        commit_epoch=row["commit_epoch"],
        last_commit_at=maybe_datetime(row["last_commit_at"]),
        last_error=row["last_error"],
        updated_at=maybe_datetime(row["updated_at"]),
    )


# -- records to statement parameters --------------------------------------------------------
# Each record first goes through `sessiongate.store.intake`, the checks every store shares,
# so nothing unstorable reaches a statement.


def at_micros(value: datetime, what: str) -> int:
    """A time passed to an operation, checked and in microseconds."""
    if type(value) is datetime and value.tzinfo is UTC:
        return (value - _EPOCH) // _MICROSECOND  # already checked and in UTC: the common case
    return to_micros(intake.utc(value, what))


def maybe_at_micros(value: datetime | None, what: str) -> int | None:
    """`at_micros`, passing None through."""
    return None if value is None else at_micros(value, what)


def _json_text(value: Any) -> str:
    # Already checked and normalized by `intake`: plain JSON values only.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def session_params(session: Session) -> dict[str, Any]:
    """Parameters of `INSERT_SESSION` for a new session."""
    fresh = intake.session_to_insert(session)
    return {
        "id": fresh.id,
        "key": fresh.key,
        "platform": fresh.platform,
        "chat_id": fresh.chat_id,
        "chat_type": fresh.chat_type.value,
        "thread_id": fresh.thread_id,
        "user_id": fresh.user_id,
        "user_name": fresh.user_name,
        "title": fresh.title,
        "parent_id": fresh.parent_id,
        "lineage": None if fresh.lineage is None else fresh.lineage.value,
        "created_at": to_micros(fresh.created_at),
        "last_activity_at": to_micros(fresh.last_activity_at),
        "turn_count": fresh.turn_count,
        "token_estimate": fresh.token_estimate,
        "epoch": fresh.epoch,
    }


def jobs_params(jobs: Sequence[NewJob], *, at: datetime) -> list[dict[str, Any]]:
    """Parameters of `ENQUEUE_JOB` for each job; `run_after` defaults to `at`."""
    at_us = at_micros(at, "enqueue time")
    return [
        {
            "kind": job.kind,
            "payload": _json_text(job.payload),
            "idempotency_key": job.idempotency_key,
            "session_id": job.session_id,
            "ordering_key": job.ordering_key,
            "gates_finalize": 1 if job.gates_finalize else 0,
            "run_after": at_us if job.run_after is None else to_micros(job.run_after),
            "at": at_us,
        }
        for job in intake.jobs_to_enqueue(jobs)
    ]


def timer_params(timer: Timer) -> dict[str, Any]:
    """Parameters of `SET_TIMER`."""
    checked = intake.timer_to_set(timer)
    return {
        "session_id": checked.session_id,
        "kind": checked.kind,
        "due_at": to_micros(checked.due_at),
    }


def end_params(end: EndRequest) -> dict[str, Any]:
    """What `sessions.end` needs for an `EndRequest`, its jobs included."""
    checked = intake.end_request(end)
    return {
        "id": checked.session_id,
        "reason": checked.reason.value,
        "detail": checked.detail,
        "at": to_micros(checked.at),
        "expected": json.dumps([state.value for state in checked.expected]),
        "turns": checked.expected_turns,
        "jobs": jobs_params(checked.jobs, at=checked.at),
        "fence": None
        if checked.fence is None
        else {"key": checked.fence.key, "token": int(checked.fence.token)},
    }


class EntryParams(NamedTuple):
    """An entry to append: its fields checked, and its JSON columns as text."""

    entry: intake.CheckedEntry
    parts: str
    meta: str


def entry_params(entry: NewEntry) -> EntryParams:
    """What `sessions.append` needs of one entry: checked by `intake`, JSON encoded."""
    checked = intake.check_entry(entry)
    return EntryParams(
        checked,
        _json_text(list(checked.parts)) if checked.parts else "[]",
        _json_text(checked.meta) if checked.meta else "{}",
    )
