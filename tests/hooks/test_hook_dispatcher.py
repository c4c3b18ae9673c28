"""Dispatching to real hook directories and plugins: isolation, timeouts, decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hooks.hookdirs import CallLog, WriteHook, make_session, recording_handler
from sessiongate.errors import InvalidInput
from sessiongate.hooks import DecisionKind, HandlerStatus, HookDispatcher, events
from sessiongate.hooks.events import Event
from sessiongate.models import ChatType, EndReason, Source

SESSION = make_session()
SOURCE = Source("telegram", "42", ChatType.DM, user_id="u-7")


def end_event() -> Event:
    return events.session_end(SESSION, event_id="s-1.0.session:end", reason=EndReason.IDLE)


def command_event(name: str = "new", raw_args: str = "") -> Event:
    return events.command(
        name, event_id=f"cmd.{name}", source=SOURCE, raw_command=f"/{name}", raw_args=raw_args
    )


def load(
    hooks_dir: Path, *, timeout: float = 10.0, decision_timeout: float = 2.0
) -> HookDispatcher:
    dispatcher, problems = HookDispatcher.load(
        hooks_dir, entry_points=False, timeout=timeout, decision_timeout=decision_timeout
    )
    assert problems == []
    return dispatcher


async def test_sync_and_async_handlers_get_matching_events(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog
) -> None:
    write_hook("all", events=["*"], handler=recording_handler(call_log))
    write_hook(
        "lifecycle", events=["session:*"], handler=recording_handler(call_log, is_async=True)
    )
    write_hook("agent", events=["agent:end"], handler=recording_handler(call_log))
    dispatcher = load(hooks_dir)

    outcomes = await dispatcher.notify(end_event())

    assert [(o.hook, o.status) for o in outcomes] == [
        ("all", HandlerStatus.OK),
        ("lifecycle", HandlerStatus.OK),
    ]
    calls = call_log.calls()
    assert sorted(call["hook"] for call in calls) == ["all", "lifecycle"]
    for call in calls:
        assert call["event_type"] == "session:end"
        assert call["context"] == dict(end_event().payload)

    await dispatcher.notify(events.agent_end(SESSION, event_id="a", message="m", response="r"))
    assert sorted(call_log.hooks()) == ["agent", "all", "all", "lifecycle"]


async def test_a_raising_handler_is_isolated_and_reported(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog, caplog: pytest.LogCaptureFixture
) -> None:
    write_hook("a-fails", handler=recording_handler(call_log, body="raise KeyError('gone')"))
    write_hook("b-fine", handler=recording_handler(call_log, is_async=True))
    dispatcher = load(hooks_dir)

    with caplog.at_level(logging.ERROR, logger="sessiongate.hooks"):
        outcomes = await dispatcher.notify(end_event())

    assert [(o.hook, o.status) for o in outcomes] == [
        ("a-fails", HandlerStatus.FAILED),
        ("b-fine", HandlerStatus.OK),
    ]
    assert outcomes[0].error == "KeyError: 'gone'"
    assert sorted(call_log.hooks()) == ["a-fails", "b-fine"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "a-fails" in message
    assert "session:end" in message
    assert "s-1" in message
    assert record.exc_info is not None


async def test_slow_handlers_time_out_without_holding_up_the_rest(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog, caplog: pytest.LogCaptureFixture
) -> None:
    write_hook(
        "a-slow-async",
        handler=recording_handler(
            call_log, is_async=True, body="import asyncio\nawait asyncio.sleep(60)"
        ),
    )
    write_hook(
        "b-slow-sync",
        handler=recording_handler(call_log, body="import time\ntime.sleep(1.0)"),
    )
    write_hook("c-quick", handler=recording_handler(call_log))
    dispatcher = load(hooks_dir, timeout=0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sessiongate.hooks"):
        outcomes = await dispatcher.notify(end_event())
    elapsed = time.monotonic() - started
    task.cancel()

    assert [(o.hook, o.status) for o in outcomes] == [
        ("a-slow-async", HandlerStatus.TIMED_OUT),
        ("b-slow-sync", HandlerStatus.TIMED_OUT),
        ("c-quick", HandlerStatus.OK),
    ]
    assert outcomes[0].error == "timed out after 0.3 s"
    # Concurrent and bounded by the timeout, not by the slowest handler.
    assert elapsed < 0.9
    # The sync sleeper ran in a thread: the event loop kept running meanwhile.
    assert ticks >= 10
    timed_out = [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]
    assert any("a-slow-async" in m and "session:end" in m and "s-1" in m for m in timed_out)


async def test_each_handler_gets_its_own_copy_of_the_context(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog
) -> None:
    write_hook(
        "a-mutates",
        handler=recording_handler(call_log, body="context.clear()\ncontext['x'] = 1"),
    )
    write_hook("b-reads", handler=recording_handler(call_log))
    dispatcher = load(hooks_dir)
    event = end_event()
    await dispatcher.notify(event)
    await dispatcher.notify(event)
    reads = [c["context"] for c in call_log.calls() if c["hook"] == "b-reads"]
    assert reads == [dict(event.payload)] * 2
    assert "x" not in event.payload


def decision_handler(returned: str, *, is_async: bool = False) -> str:
    header = "async def handle" if is_async else "def handle"
    return f"{header}(event_type, context):\n    return {returned}\n"


async def test_no_decision_hooks_means_allow(hooks_dir: Path) -> None:
    decision = await load(hooks_dir).decide(command_event())
    assert decision.kind is DecisionKind.ALLOW
    assert decision.hook is None


async def test_first_non_allow_decision_wins_and_stops(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog
) -> None:
    write_hook("a-logs", events=["command:*"], handler=recording_handler(call_log))
    write_hook("b-none", events=["command:new"], handler=decision_handler("True"))
    write_hook(
        "c-denies",
        events=["command:new"],
        handler=decision_handler("{'decision': 'deny', 'message': 'not today'}", is_async=True),
    )
    write_hook(
        "d-never-runs",
        events=["command:*"],
        handler=recording_handler(call_log, body="return {'decision': 'handled'}"),
    )
    dispatcher = load(hooks_dir)

    decision = await dispatcher.decide(command_event("new"))
    assert (decision.kind, decision.message, decision.hook) == (
        DecisionKind.DENY,
        "not today",
        "c-denies",
    )
    assert call_log.hooks() == ["a-logs"]

    other = await dispatcher.decide(command_event("status"))  # c-denies is not subscribed
    assert (other.kind, other.hook) == (DecisionKind.HANDLED, "d-never-runs")


async def test_rewrite_and_handled(write_hook: WriteHook, hooks_dir: Path) -> None:
    write_hook(
        "rewriter",
        events=["command:reset"],
        handler=decision_handler(
            "{'decision': 'rewrite', 'command_name': 'new', 'raw_args': context['raw_args']}"
        ),
    )
    write_hook(
        "handler",
        events=["command:status"],
        handler=decision_handler("{'decision': 'handled', 'message': 'all good'}"),
    )
    dispatcher = load(hooks_dir)
    rewrite = await dispatcher.decide(command_event("reset", raw_args=" trip"))
    assert (rewrite.kind, rewrite.command_name, rewrite.raw_args) == (
        DecisionKind.REWRITE,
        "new",
        " trip",
    )
    handled = await dispatcher.decide(command_event("status"))
    assert (handled.kind, handled.message) == (DecisionKind.HANDLED, "all good")


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        ("def handle(event_type, context):\n    raise RuntimeError('db down')\n", "db down"),
        (
            "import asyncio\nasync def handle(event_type, context):\n    await asyncio.sleep(60)\n",
            "timed out after 0.2 s",
        ),
        (decision_handler("{'decision': 'maybe'}"), "unknown decision 'maybe'"),
        (decision_handler("{'decision': 'rewrite'}"), "needs a command_name"),
        (decision_handler("{'decision': 'deny', 'message': 42}"), "message must be text"),
        (
            decision_handler("{'decision': 'rewrite', 'command_name': 'two words'}"),
            "command name",
        ),
    ],
)
async def test_a_broken_decision_hook_denies_naming_itself(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog, handler: str, error: str
) -> None:
    write_hook("a-guard", events=["command:*"], handler=handler)
    write_hook("b-after", events=["command:*"], handler=recording_handler(call_log))
    decision = await load(hooks_dir, decision_timeout=0.2).decide(command_event())
    assert decision.kind is DecisionKind.DENY
    assert decision.hook == "a-guard"
    assert decision.message is not None
    assert "a-guard" in decision.message
    assert decision.error is not None
    assert error in decision.error
    assert call_log.calls() == []  # fail fast: nothing after it ran


async def test_decide_takes_only_commands(hooks_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="command"):
        await load(hooks_dir).decide(end_event())


class Recorder:
    """A plugin recording what it is called with."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def on_event(self, event_type: str, payload: Mapping[str, Any]) -> None:
        self.calls.append(("on_event", {"event_type": event_type, **payload}))

    def on_session_reset(
        self, session_id: str, reason: str, new_session_id: str | None = None
    ) -> None:
        self.calls.append(("reset", {"session_id": session_id, "new": new_session_id}))

    def on_session_finalize(
        self,
        session_id: str,
        platform: str,
        reason: str,
        old_session_id: str | None = None,
        new_session_id: str | None = None,
        session_key: str | None = None,
    ) -> None:
        self.calls.append(
            (
                "finalize",
                {
                    "session_id": session_id,
                    "platform": platform,
                    "reason": reason,
                    "old": old_session_id,
                    "new": new_session_id,
                    "key": session_key,
                },
            )
        )

    def on_command(self, event_type: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        if payload["command"] == "forget":
            return {"decision": "deny", "message": "ask an operator"}
        return {}


class Failing:
    name = "failing"

    def on_session_finalize(self, session_id: str) -> None:
        raise ConnectionError(f"cannot reach the archive for {session_id}")


async def test_plugins_get_events_resets_and_commands(
    write_hook: WriteHook, hooks_dir: Path, call_log: CallLog
) -> None:
    write_hook("dir-hook", events=["session:*"], handler=recording_handler(call_log))
    dispatcher = load(hooks_dir)
    recorder = Recorder()
    dispatcher.register(recorder)

    reset = events.session_reset(SESSION, event_id="r", new_session_id="s-2")
    outcomes = await dispatcher.notify(reset)
    assert [o.hook for o in outcomes] == [
        "dir-hook",
        "recorder.on_event",
        "recorder.on_session_reset",
    ]
    assert all(o.ok for o in outcomes)
    assert recorder.calls[0][1]["event_type"] == "session:reset"
    assert recorder.calls[1] == ("reset", {"session_id": "s-1", "new": "s-2"})

    denied = await dispatcher.decide(command_event("forget"))
    assert (denied.kind, denied.hook, denied.message) == (
        DecisionKind.DENY,
        "recorder.on_command",
        "ask an operator",
    )
    allowed = await dispatcher.decide(command_event("new"))
    assert allowed.kind is DecisionKind.ALLOW


async def test_finalize_calls_every_plugin_isolated(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    dispatcher = HookDispatcher(timeout=1.0)
    dispatcher.register(Failing())
    dispatcher.register(recorder)
    payload = events.finalize_payload(
        SESSION, event_id="f", reason=EndReason.SWITCH, new_session_id="s-0"
    )

    with caplog.at_level(logging.ERROR, logger="sessiongate.hooks"):
        outcomes = await dispatcher.finalize(payload)

    assert [(o.hook, o.status) for o in outcomes] == [
        ("failing.on_session_finalize", HandlerStatus.FAILED),
        ("recorder.on_session_finalize", HandlerStatus.OK),
    ]
    assert outcomes[0].error == "ConnectionError: cannot reach the archive for s-1"
    assert recorder.calls == [
        (
            "finalize",
            {
                "session_id": "s-1",
                "platform": "telegram",
                "reason": "switch",
                "old": "s-1",
                "new": "s-0",
                "key": "agent:main:telegram:dm:42",
            },
        )
    ]
    assert any(
        "failing.on_session_finalize" in r.getMessage() and "s-1" in r.getMessage()
        for r in caplog.records
    )
    without_rotation = events.finalize_payload(SESSION, event_id="g", reason=EndReason.IDLE)
    await dispatcher.finalize(without_rotation)
    assert recorder.calls[-1][1]["old"] is None
    with pytest.raises(InvalidInput, match="reason"):
        await dispatcher.finalize({"session_id": "s-1", "platform": "telegram"})


async def test_hooks_and_plugins_loaded_together(write_hook: WriteHook, hooks_dir: Path) -> None:
    write_hook("good")
    write_hook("broken", handler=None)
    dispatcher, problems = HookDispatcher.load(hooks_dir, entry_points=False)
    assert [hook.name for hook in dispatcher.hooks] == ["good"]
    assert [problem.name for problem in problems] == ["broken"]
    with pytest.raises(InvalidInput, match="timeouts"):
        HookDispatcher(timeout=0)
