"""What every store checks and normalizes before it writes a record.

The functions here raise `InvalidInput` naming the problem, and return the value
as the store will keep it: times in UTC, JSON values as a JSON round trip gives
them back, enums as enums. A store calls them before touching its data, so a
refused value leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sessiongate.errors import InvalidInput
from sessiongate.models import (
    ChatType,
    EndReason,
    EndRequest,
    Entry,
    Lineage,
    NewEntry,
    NewJob,
    Role,
    Session,
    SessionState,
    Timer,
    estimate_tokens,
)
from sessiongate.validation import check_identifier, check_json, check_text

# Placeholder time of an entry not yet appended (the store stamps the real one).
_UNSET = datetime.min.replace(tzinfo=UTC)


def utc(value: datetime, what: str) -> datetime:
    """`value` in UTC; refuses a naive datetime."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} {value.isoformat()} is naive; pass a timezone-aware time")
    return value.astimezone(UTC)


def json_value(value: Any, what: str) -> Any:
    """`value` checked, and as a JSON round trip returns it (tuples become lists)."""
    check_json(value, what=what)
    return json.loads(json.dumps(value))


def optional_text(value: str | None, what: str) -> None:
    """`check_text` for a value that may be absent."""
    if value is not None:
        check_text(value, what=what)


def session_to_insert(session: Session) -> Session:
    """A new session as stored: `active`, no end fields, counters at 0."""
    check_identifier(session.id, what="session id")
    check_identifier(session.key, what="session key")
    check_text(session.platform, what="platform")
    check_text(session.chat_id, what="chat id")
    for value, what in (
        (session.user_id, "user id"),
        (session.user_name, "user name"),
        (session.thread_id, "thread id"),
        (session.title, "title"),
        (session.parent_id, "parent session id"),
    ):
        optional_text(value, what)
    try:
        chat_type = ChatType(session.chat_type)
        lineage = None if session.lineage is None else Lineage(session.lineage)
    except ValueError as exc:
        raise InvalidInput(f"session {session.id}: {exc}") from None
    return replace(
        session,
        chat_type=chat_type,
        lineage=lineage,
        created_at=utc(session.created_at, "created_at"),
        last_activity_at=utc(session.last_activity_at, "last_activity_at"),
        state=SessionState.ACTIVE,
        end_reason=None,
        end_detail=None,
        ended_at=None,
        turn_count=0,
        token_estimate=0,
    )


def end_request(end: EndRequest) -> EndRequest:
    """An end request with its time in UTC and its jobs checked."""
    optional_text(end.detail, "end detail")
    try:
        reason = EndReason(end.reason)
        expected = tuple(SessionState(s) for s in end.expected)
    except ValueError as exc:
        raise InvalidInput(f"end of session {end.session_id}: {exc}") from None
    return replace(
        end,
        reason=reason,
        expected=expected,
        at=utc(end.at, "end time"),
        jobs=tuple(jobs_to_enqueue(end.jobs)),
    )


def jobs_to_enqueue(jobs: Sequence[NewJob]) -> list[NewJob]:
    """Jobs checked, with JSON payloads and UTC `run_after`."""
    checked: list[NewJob] = []
    for job in jobs:
        check_text(job.kind, what="job kind")
        check_text(job.idempotency_key, what="idempotency key")
        if not job.kind or not job.idempotency_key:
            raise InvalidInput("a job needs a non-empty kind and idempotency key")
        if job.session_id is not None:
            check_identifier(job.session_id, what="job session id")
        optional_text(job.ordering_key, "ordering key")
        payload = json_value(dict(job.payload), f"payload of job {job.idempotency_key!r}")
        run_after = None if job.run_after is None else utc(job.run_after, "run_after")
        checked.append(replace(job, payload=payload, run_after=run_after))
    return checked


def timer_to_set(timer: Timer) -> Timer:
    """A timer checked, due in UTC, without a lease."""
    check_identifier(timer.session_id, what="timer session id")
    check_identifier(timer.kind, what="timer kind")
    return Timer(timer.session_id, timer.kind, utc(timer.due_at, "timer due_at"))


_ROLES = {role.value: role for role in Role}
_MESSAGE_OF = {role: f"{role} message" for role in Role}


class CheckedEntry(NamedTuple):
    """The fields of an entry to append, checked and normalized by `check_entry`."""

    role: Role
    text: str
    parts: tuple[Any, ...]
    platform_message_id: str | None
    token_estimate: int
    meta: dict[str, Any]


def _json_or_empty(value: Any, kind: type[Any], what: str) -> Any:
    """`json_value(kind(value))`, without the JSON round trip when `value` is empty.

    Most entries carry no parts and no meta, and their JSON check would cost more than
    the rest of the append.
    """
    if type(value) in (tuple, list, dict) and not value:
        return kind()
    return json_value(kind(value), what)


def check_entry(entry: NewEntry) -> CheckedEntry:
    """An entry's fields checked, with its token estimate (the hot path of every append)."""
    try:
        role = _ROLES[entry.role]
    except (KeyError, TypeError):
        raise InvalidInput(f"{entry.role!r} is not a ledger role") from None
    check_text(entry.text, what=_MESSAGE_OF[role])
    optional_text(entry.platform_message_id, "platform message id")
    parts = _json_or_empty(entry.parts, list, "entry parts")
    meta = _json_or_empty(entry.meta, dict, "entry meta")
    tokens = entry.token_estimate
    if tokens is None:
        tokens = estimate_tokens(entry.text)
    elif isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise InvalidInput(f"token_estimate must be a non-negative integer, got {tokens!r}")
    return CheckedEntry(role, entry.text, tuple(parts), entry.platform_message_id, tokens, meta)


def entry_to_append(entry: NewEntry) -> Entry:
    """An entry checked, with its token estimate; session, seq and time are set on append."""
    checked = check_entry(entry)
    return Entry(
        session_id="",
        seq=0,
        role=checked.role,
        text=checked.text,
        created_at=_UNSET,
        token_estimate=checked.token_estimate,
        parts=checked.parts,
        platform_message_id=checked.platform_message_id,
        meta=checked.meta,
    )


def lease_length(seconds: float) -> timedelta:
    """A lease's length; refuses a negative or non-finite one."""
    if not seconds >= 0 or seconds == float("inf"):
        raise InvalidInput(f"lease of {seconds!r} seconds is not a finite, non-negative number")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidInput(f"lease of {seconds!r} seconds is too long") from None
