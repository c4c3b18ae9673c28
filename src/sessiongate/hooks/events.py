"""The events hooks receive: their names, the `Event` value and its payload builders.

Payloads are a superset of the Hermes gateway's, so directory hooks written for
it keep working: every Hermes key is present under its Hermes name. On top of
them every payload carries `event_id` (chosen by the caller, deterministic, so
handlers can deduplicate at-least-once delivery), `session_id` and `session_key`
(None where no session is concerned); `session:*` events carry `reason`, and
rotations carry `old_session_id` and `new_session_id`. User and agent text is cut
to its first 500 characters, as Hermes does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sessiongate.errors import InvalidInput
from sessiongate.models import EndReason, Session, Source

GATEWAY_STARTUP = "gateway:startup"
SESSION_START = "session:start"
SESSION_END = "session:end"
SESSION_RESET = "session:reset"
SESSION_SWITCH = "session:switch"
SESSION_COMPRESS = "session:compress"
AGENT_START = "agent:start"
AGENT_END = "agent:end"
COMMAND_PREFIX = "command:"

#: Every event type except `command:<name>`, which is open-ended.
EVENT_TYPES = frozenset(
    {
        GATEWAY_STARTUP,
        SESSION_START,
        SESSION_END,
        SESSION_RESET,
        SESSION_SWITCH,
        SESSION_COMPRESS,
        AGENT_START,
        AGENT_END,
    }
)

#: How much of a user message or agent response an event carries.
TEXT_LIMIT = 500

_COMMAND_NAME = re.compile(r"[\w.-]+")


def command_event_type(name: str) -> str:
    """The event type of the slash command `name` (given without its slash)."""
    if not _COMMAND_NAME.fullmatch(name):
        raise InvalidInput(
            f"command name {name!r} must be letters, digits, '_', '.' or '-' (no slash, no space)"
        )
    return COMMAND_PREFIX + name


def is_command(event_type: str) -> bool:
    """Whether `event_type` is a `command:<name>` event."""
    return event_type.startswith(COMMAND_PREFIX)


def is_event_type(event_type: str) -> bool:
    """Whether sessiongate emits events of this type."""
    if is_command(event_type):
        return _COMMAND_NAME.fullmatch(event_type[len(COMMAND_PREFIX) :]) is not None
    return event_type in EVENT_TYPES


@functools.lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern[str]:
    parts = (".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern))
    return re.compile("".join(parts))


def event_matches(pattern: str, event_type: str) -> bool:
    """Whether a subscription pattern (`session:end`, `session:*`, `*`) covers `event_type`.

    `*` stands for any run of characters, everything else is literal.
    """
    return _pattern(pattern).fullmatch(event_type) is not None


@dataclass(frozen=True, slots=True)
class Event:
    """One event for the hooks: its type and its payload (read-only)."""

    type: str
    payload: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not is_event_type(self.type):
            raise InvalidInput(
                f"unknown event type {self.type!r}; known: {', '.join(sorted(EVENT_TYPES))} "
                "and command:<name>"
            )
        event_id = self.payload.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise InvalidInput(f"{self.type} event needs a non-empty string event_id")
        object.__setattr__(self, "payload", MappingProxyType(dict(self.payload)))

    @property
    def event_id(self) -> str:
        """The caller's deterministic id of this event; handlers dedupe by it."""
        return str(self.payload["event_id"])

    @property
    def session_id(self) -> str | None:
        """The session the event is about, if any."""
        value = self.payload.get("session_id")
        return None if value is None else str(value)

    def to_job_payload(self) -> dict[str, Any]:
        """The JSON-ready form an outbox job carries."""
        return {"event_type": self.type, "payload": dict(self.payload)}

    @classmethod
    def from_job_payload(cls, data: Mapping[str, Any]) -> Event:
        """The event an outbox job carries (the inverse of `to_job_payload`)."""
        event_type, payload = data.get("event_type"), data.get("payload")
        if not isinstance(event_type, str) or not isinstance(payload, Mapping):
            raise InvalidInput("a hook event job needs 'event_type' (text) and 'payload' (object)")
        return cls(event_type, payload)


def _truncate(text: str | None) -> str | None:
    return None if text is None else text[:TEXT_LIMIT]


def _session_fields(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "session_key": session.key,
        "platform": session.platform,
        "user_id": session.user_id,
        "user_name": session.user_name,
        "chat_id": session.chat_id,
        "chat_type": str(session.chat_type),
        "thread_id": session.thread_id,
    }


def _ending_fields(
    reason: EndReason | str,
    detail: str | None,
    old_session_id: str | None,
    new_session_id: str | None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"reason": str(reason), "reason_detail": detail}
    if old_session_id is not None or new_session_id is not None:
        fields["old_session_id"] = old_session_id
        fields["new_session_id"] = new_session_id
    return fields


def gateway_startup(*, event_id: str, platforms: Iterable[str]) -> Event:
    """The gateway has started with these platforms."""
    return Event(
        GATEWAY_STARTUP,
        {
            "event_id": event_id,
            "session_id": None,
            "session_key": None,
            "platforms": list(platforms),
        },
    )


def session_start(
    session: Session,
    *,
    event_id: str,
    reason: str,
    old_session_id: str | None = None,
) -> Event:
    """`session` has started (or been reopened); `reason` says why (new, reset, resume, …).

    When it continues another session (reset, resume, branch, compression), pass that
    one as `old_session_id`: the payload then names both sides of the rotation.
    """
    rotation: dict[str, Any] = {}
    if old_session_id is not None:
        rotation = {"old_session_id": old_session_id, "new_session_id": session.id}
    return Event(
        SESSION_START,
        {**_session_fields(session), "event_id": event_id, "reason": reason, **rotation},
    )


def session_end(
    session: Session,
    *,
    event_id: str,
    reason: EndReason | str,
    detail: str | None = None,
    new_session_id: str | None = None,
) -> Event:
    """`session` has ended for `reason` (the one catalogue); paired with its `session:start`.

    `detail` qualifies the reason (which policy fired for `auto_reset`); a rotation
    names the session that continues as `new_session_id`.
    """
    rotation = (None, None) if new_session_id is None else (session.id, new_session_id)
    return Event(
        SESSION_END,
        {
            **_session_fields(session),
            "event_id": event_id,
            **_ending_fields(reason, detail, *rotation),
        },
    )


def _rotation_event(
    event_type: str,
    session: Session,
    event_id: str,
    reason: EndReason | str,
    new_session_id: str,
    detail: str | None,
) -> Event:
    return Event(
        event_type,
        {
            **_session_fields(session),
            "event_id": event_id,
            **_ending_fields(reason, detail, session.id, new_session_id),
        },
    )


def session_reset(
    session: Session,
    *,
    event_id: str,
    new_session_id: str,
    reason: EndReason | str = EndReason.RESET,
    detail: str | None = None,
) -> Event:
    """The key of `session` (the one that ended) now routes to a fresh `new_session_id`.

    `session_id` is the ended session, unlike Hermes, which sent no id at all.
    """
    return _rotation_event(SESSION_RESET, session, event_id, reason, new_session_id, detail)


def session_switch(
    session: Session,
    *,
    event_id: str,
    new_session_id: str,
    reason: EndReason | str = EndReason.SWITCH,
    detail: str | None = None,
) -> Event:
    """The key of `session` (the one left) now routes to the earlier `new_session_id` (/resume)."""
    return _rotation_event(SESSION_SWITCH, session, event_id, reason, new_session_id, detail)


def session_compress(
    parent: Session,
    *,
    event_id: str,
    new_session_id: str,
    compression_count: int,
    in_place: bool = False,
) -> Event:
    """The conversation of `parent` continues, compressed, in `new_session_id`.

    As in Hermes, `session_id` is the session that continues and `old_session_id`
    the compressed one; `new_session_id` repeats the former for uniformity.
    """
    payload = _session_fields(parent)
    payload.update(
        event_id=event_id,
        session_id=new_session_id,
        reason=str(EndReason.COMPRESSION),
        reason_detail=None,
        old_session_id=parent.id,
        new_session_id=new_session_id,
        in_place=in_place,
        compression_count=compression_count,
    )
    return Event(SESSION_COMPRESS, payload)


def agent_start(session: Session, *, event_id: str, message: str) -> Event:
    """The agent starts working on a user `message` of `session`."""
    payload = {**_session_fields(session), "event_id": event_id, "message": _truncate(message)}
    return Event(AGENT_START, payload)


def agent_end(session: Session, *, event_id: str, message: str, response: str | None) -> Event:
    """The agent has answered `message` with `response` (None when it produced nothing)."""
    payload = {
        **_session_fields(session),
        "event_id": event_id,
        "message": _truncate(message),
        "response": _truncate(response),
    }
    return Event(AGENT_END, payload)


def command(
    name: str,
    *,
    event_id: str,
    source: Source,
    raw_command: str,
    raw_args: str = "",
    session: Session | None = None,
) -> Event:
    """A slash command: `name` normalised (`new`), `raw_command` as typed (`/New@bot`).

    `args` is `raw_args` without surrounding whitespace. `session` is the session the
    command's chat currently routes to, if any.
    """
    return Event(
        command_event_type(name),
        {
            "event_id": event_id,
            "session_id": None if session is None else session.id,
            "session_key": None if session is None else session.key,
            "platform": source.platform,
            "user_id": source.user_id,
            "user_name": source.user_name,
            "chat_id": source.chat_id,
            "chat_type": str(source.chat_type),
            "thread_id": source.thread_id,
            "command": name,
            "raw_command": raw_command,
            "args": raw_args.strip(),
            "raw_args": raw_args,
        },
    )


def finalize_payload(
    session: Session,
    *,
    event_id: str,
    reason: EndReason | str,
    detail: str | None = None,
    new_session_id: str | None = None,
) -> dict[str, Any]:
    """What `HookDispatcher.finalize` takes for the plugins' `on_session_finalize`."""
    rotation = (None, None) if new_session_id is None else (session.id, new_session_id)
    return {
        **_session_fields(session),
        "event_id": event_id,
        **_ending_fields(reason, detail, *rotation),
    }
