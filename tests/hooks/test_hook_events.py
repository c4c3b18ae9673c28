"""Event names, wildcard matching, and payloads: the Hermes keys and ours."""

from __future__ import annotations

import json

import pytest

from hooks.hookdirs import make_session
from sessiongate.errors import InvalidInput
from sessiongate.hooks import events
from sessiongate.hooks.events import Event, event_matches
from sessiongate.models import ChatType, EndReason, Source

# The Hermes payload keys (see the reference table); ours must be a superset.
HERMES_KEYS = {
    "gateway:startup": {"platforms"},
    "session:start": {"platform", "user_id", "session_id", "session_key"},
    "session:end": {"platform", "user_id", "session_key"},
    "session:reset": {"platform", "user_id", "session_key"},
    "agent:start": {
        "platform", "user_id", "chat_id", "thread_id", "chat_type", "session_id", "message",
    },
    "agent:end": {
        "platform", "user_id", "chat_id", "thread_id", "chat_type", "session_id", "message",
        "response",
    },
    "session:compress": {
        "platform", "session_id", "old_session_id", "in_place", "compression_count",
    },
    "command:new": {"platform", "user_id", "command", "raw_command", "args", "raw_args"},
}  # fmt: skip
OURS = {"event_id", "session_id", "session_key"}
LIFECYCLE = {"reason"}
ROTATION = {"old_session_id", "new_session_id"}

SESSION = make_session(thread_id="t-9")
SOURCE = Source("telegram", "42", ChatType.DM, user_id="u-7", user_name="Ada")


def every_event() -> dict[str, Event]:
    return {
        "gateway:startup": events.gateway_startup(event_id="boot.1", platforms=["telegram"]),
        "session:start": events.session_start(SESSION, event_id="e1", reason="new"),
        "session:end": events.session_end(SESSION, event_id="e2", reason=EndReason.IDLE),
        "session:reset": events.session_reset(SESSION, event_id="e3", new_session_id="s-2"),
        "session:switch": events.session_switch(SESSION, event_id="e4", new_session_id="s-0"),
        "session:compress": events.session_compress(
            SESSION, event_id="e5", new_session_id="s-3", compression_count=2
        ),
        "agent:start": events.agent_start(SESSION, event_id="e6", message="hi"),
        "agent:end": events.agent_end(SESSION, event_id="e7", message="hi", response="hello"),
        "command:new": events.command(
            "new", event_id="e8", source=SOURCE, raw_command="/new", raw_args=" My title "
        ),
    }


@pytest.mark.parametrize("event_type", sorted(every_event()))
def test_payload_is_a_superset_of_hermes_plus_ours(event_type: str) -> None:
    event = every_event()[event_type]
    assert event.type == event_type
    keys = set(event.payload)
    assert HERMES_KEYS.get(event_type, set()) <= keys
    assert keys >= OURS
    if event_type.startswith("session:"):
        assert keys >= LIFECYCLE
    if event_type in {"session:reset", "session:switch", "session:compress"}:
        assert keys >= ROTATION
    json.dumps(dict(event.payload))  # it travels through the outbox as JSON


def test_every_emitted_type_is_in_the_catalogue() -> None:
    built = {event.type for event in every_event().values()} - {"command:new"}
    assert built == events.EVENT_TYPES


def test_lifecycle_payload_values() -> None:
    end = events.session_end(
        SESSION, event_id="s-1.0.end", reason=EndReason.AUTO_RESET, detail="idle"
    )
    assert end.payload["session_id"] == "s-1"
    assert end.payload["session_key"] == "agent:main:telegram:dm:42"
    assert end.payload["reason"] == "auto_reset"
    assert end.payload["reason_detail"] == "idle"
    assert end.payload["thread_id"] == "t-9"
    assert "old_session_id" not in end.payload
    rotated = events.session_end(
        SESSION, event_id="x", reason=EndReason.RESET, new_session_id="s-2"
    )
    assert (rotated.payload["old_session_id"], rotated.payload["new_session_id"]) == (
        "s-1",
        "s-2",
    )
    reset = events.session_reset(SESSION, event_id="r", new_session_id="s-2")
    assert reset.payload["session_id"] == "s-1"
    assert reset.payload["reason"] == "reset"
    assert reset.payload["new_session_id"] == "s-2"
    started = events.session_start(
        make_session(id="s-2"), event_id="st", reason="reset", old_session_id="s-1"
    )
    assert (started.payload["old_session_id"], started.payload["new_session_id"]) == (
        "s-1",
        "s-2",
    )


def test_compress_names_the_continuing_session_as_hermes_does() -> None:
    event = events.session_compress(
        SESSION, event_id="c", new_session_id="s-3", compression_count=4
    )
    assert event.payload["session_id"] == "s-3"
    assert event.payload["old_session_id"] == "s-1"
    assert event.payload["new_session_id"] == "s-3"
    assert event.payload["compression_count"] == 4
    assert event.payload["in_place"] is False
    assert event.payload["reason"] == "compression"


def test_message_and_response_are_cut_to_500_characters() -> None:
    long = "é" * 499 + "xyz"
    start = events.agent_start(SESSION, event_id="a", message=long)
    end = events.agent_end(SESSION, event_id="b", message=long, response="r" * 2000)
    assert start.payload["message"] == long[:500]
    assert len(end.payload["response"]) == 500
    short = events.agent_end(SESSION, event_id="c", message="hi", response=None)
    assert (short.payload["message"], short.payload["response"]) == ("hi", None)


def test_command_payload() -> None:
    event = events.command(
        "title",
        event_id="cmd",
        source=SOURCE,
        raw_command="/Title@bot",
        raw_args="  Trip plans ",
        session=SESSION,
    )
    assert event.type == "command:title"
    assert event.payload["command"] == "title"
    assert event.payload["raw_command"] == "/Title@bot"
    assert event.payload["args"] == "Trip plans"
    assert event.payload["raw_args"] == "  Trip plans "
    assert event.payload["session_id"] == "s-1"
    unrouted = events.command("new", event_id="c2", source=SOURCE, raw_command="/new")
    assert unrouted.payload["session_id"] is None
    with pytest.raises(InvalidInput, match="command name"):
        events.command("bad name", event_id="c3", source=SOURCE, raw_command="/bad name")


def test_event_ids_come_from_the_caller() -> None:
    first, second = every_event(), every_event()
    assert first == second
    assert first["session:end"].event_id == "e2"
    assert first["session:end"].session_id == "s-1"
    assert first["gateway:startup"].session_id is None


def test_events_are_read_only_and_checked() -> None:
    event = every_event()["agent:start"]
    with pytest.raises(TypeError):
        event.payload["message"] = "changed"  # type: ignore[index]
    with pytest.raises(InvalidInput, match="unknown event type"):
        Event("session:ended", {"event_id": "x"})
    with pytest.raises(InvalidInput, match="event_id"):
        Event("session:end", {"session_id": "s"})
    with pytest.raises(InvalidInput, match="event_id"):
        Event("session:end", {"event_id": ""})


def test_job_payload_round_trip_through_json() -> None:
    for event in every_event().values():
        wire = json.loads(json.dumps(event.to_job_payload()))
        assert Event.from_job_payload(wire) == event
    with pytest.raises(InvalidInput):
        Event.from_job_payload({"event_type": "session:end"})


def test_finalize_payload() -> None:
    payload = events.finalize_payload(
        SESSION, event_id="f", reason=EndReason.COMPRESSION, new_session_id="s-3"
    )
    assert payload["session_id"] == "s-1"
    assert payload["platform"] == "telegram"
    assert payload["reason"] == "compression"
    assert (payload["old_session_id"], payload["new_session_id"]) == ("s-1", "s-3")
    assert payload["event_id"] == "f"


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "session:end", True),
        ("*", "command:new", True),
        ("session:*", "session:end", True),
        ("session:*", "session:compress", True),
        ("session:*", "agent:start", False),
        ("session:end", "session:end", True),
        ("session:end", "session:ended", False),
        ("command:*", "command:new", True),
        ("command:new", "command:newer", False),
        ("*:end", "agent:end", True),
        ("session:[ab]", "session:a", False),  # only `*` is special
        ("session.end", "sessionxend", False),
    ],
)
def test_wildcards(pattern: str, event_type: str, expected: bool) -> None:
    assert event_matches(pattern, event_type) is expected
