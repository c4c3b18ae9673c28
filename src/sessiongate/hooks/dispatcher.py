"""Running hooks: notifications isolated with a timeout, command decisions inline.

The outbox worker calls `notify` for each `hook.event` job and `finalize` for each
`hook.finalize` job, and decides on a retry from the outcomes; the gateway calls
`decide` before running a slash command. Sync handlers run in a worker thread
(`asyncio.to_thread`), so a slow one never stalls the event loop; a thread cannot
be killed, so a timed-out sync handler keeps its thread until it returns, but
nobody waits for it.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sessiongate.errors import HookError, InvalidInput
from sessiongate.hooks.decision import Decision, DecisionKind, parse_decision
from sessiongate.hooks.directory import DirectoryHook, load_directory_hooks
from sessiongate.hooks.events import SESSION_RESET, Event, is_command
from sessiongate.hooks.plugins import (
    PLUGIN_GROUP,
    HookImpl,
    Plugin,
    load_entry_point_plugins,
    make_plugin,
)
from sessiongate.hooks.problem import HookProblem

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
DEFAULT_DECISION_TIMEOUT = 2.0

# Arguments every lifecycle plugin hook gets, even when the payload lacks them.
_LIFECYCLE_REQUIRED = ("session_id", "platform", "reason")
_LIFECYCLE_OPTIONAL = ("old_session_id", "new_session_id")


class HandlerStatus(StrEnum):
    """How one handler's run ended."""

    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """One handler's run: directory hooks by name, plugin hooks as `<plugin>.<hook>`."""

    hook: str
    status: HandlerStatus
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is HandlerStatus.OK


@dataclass(frozen=True, slots=True)
class _Call:
    label: str
    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


async def _invoke(call: _Call) -> Any:
    if inspect.iscoroutinefunction(call.function):
        result = await call.function(*call.args, **call.kwargs)
    else:
        result = await asyncio.to_thread(call.function, *call.args, **call.kwargs)
    if inspect.isawaitable(result):  # a sync callable handing back a coroutine
        result = await result
    return result


def _lifecycle_arguments(payload: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in _LIFECYCLE_REQUIRED if payload.get(key) is None]
    if missing:
        raise InvalidInput(f"lifecycle hook payload lacks {', '.join(missing)}")
    arguments = copy.deepcopy(dict(payload))
    for key in _LIFECYCLE_OPTIONAL:
        arguments.setdefault(key, None)
    return arguments


class HookDispatcher:
    """The loaded directory hooks and plugins, and the three ways to run them."""

    def __init__(
        self,
        hooks: Sequence[DirectoryHook] = (),
        plugins: Sequence[Plugin] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        decision_timeout: float = DEFAULT_DECISION_TIMEOUT,
    ) -> None:
        if timeout <= 0 or decision_timeout <= 0:
            raise InvalidInput("hook timeouts must be > 0 seconds")
        self._hooks = list(hooks)
        self._plugins: list[Plugin] = []
        self.timeout = timeout
        self.decision_timeout = decision_timeout
        for plugin in plugins:
            self._add(plugin)

    @classmethod
    def load(
        cls,
        hooks_dir: Path | None,
        *,
        entry_points: bool = True,
        group: str = PLUGIN_GROUP,
        timeout: float = DEFAULT_TIMEOUT,
        decision_timeout: float = DEFAULT_DECISION_TIMEOUT,
    ) -> tuple[HookDispatcher, list[HookProblem]]:
        """Load the directory hooks of `hooks_dir` and the entry-point plugins.

        Returns the dispatcher and every hook or plugin skipped, with why.
        """
        hooks, problems = ([], []) if hooks_dir is None else load_directory_hooks(hooks_dir)
        plugins: list[Plugin] = []
        if entry_points:
            plugins, plugin_problems = load_entry_point_plugins(group)
            problems.extend(plugin_problems)
        dispatcher = cls(hooks, plugins, timeout=timeout, decision_timeout=decision_timeout)
        return dispatcher, problems

    @property
    def hooks(self) -> tuple[DirectoryHook, ...]:
        return tuple(self._hooks)

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        return tuple(self._plugins)

    def register(self, obj: object, *, name: str | None = None) -> Plugin:
        """Register a plugin object (checked against the spec); raise `HookError` if refused."""
        plugin = obj if isinstance(obj, Plugin) else make_plugin(obj, name=name)
        self._add(plugin)
        return plugin

    def _add(self, plugin: Plugin) -> None:
        if any(known.name == plugin.name for known in self._plugins):
            raise HookError(f"a plugin named {plugin.name!r} is already registered")
        self._plugins.append(plugin)

    def _impls(self, hook: str) -> list[HookImpl]:
        return [plugin.hooks[hook] for plugin in self._plugins if hook in plugin.hooks]

    def _handler_calls(self, event: Event) -> list[_Call]:
        # Each handler gets its own copy: one cannot change what the next one sees.
        return [
            _Call(hook.name, hook.handle, (event.type, copy.deepcopy(dict(event.payload))))
            for hook in self._hooks
            if hook.matches(event.type)
        ]

    def _plugin_calls(self, hook: str, available: Mapping[str, Any]) -> list[_Call]:
        return [
            _Call(impl.label, impl.function, kwargs=copy.deepcopy(impl.arguments(available)))
            for impl in self._impls(hook)
        ]

    async def _run(
        self, call: _Call, *, event_type: str, session_id: str | None, seconds: float
    ) -> tuple[HandlerOutcome, Any]:
        """Run one handler, isolated: its failure or slowness becomes an outcome."""
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return HandlerOutcome(call.label, HandlerStatus.OK), await _invoke(call)
        except Exception as exc:
            # Isolation point: a handler's bug or slowness is reported, never propagated.
            if isinstance(exc, TimeoutError) and scope.expired():
                error = f"timed out after {seconds:g} s"
                logger.warning(
                    "hook %s %s on %s (session %s)", call.label, error, event_type, session_id
                )
                return HandlerOutcome(call.label, HandlerStatus.TIMED_OUT, error), None
            error = f"{type(exc).__name__}: {exc}"
            logger.error(
                "hook %s failed on %s (session %s): %s",
                call.label, event_type, session_id, error,
                exc_info=True,
            )  # fmt: skip
            return HandlerOutcome(call.label, HandlerStatus.FAILED, error), None

    async def _run_all(
        self, calls: Sequence[_Call], *, event_type: str, session_id: str | None
    ) -> list[HandlerOutcome]:
        runs = [
            self._run(call, event_type=event_type, session_id=session_id, seconds=self.timeout)
            for call in calls
        ]
        return [outcome for outcome, _ in await asyncio.gather(*runs)]

    async def notify(self, event: Event) -> list[HandlerOutcome]:
        """Deliver a notification event to every matching handler, concurrently.

        Directory hooks subscribed to its type, every plugin's `on_event`, and for
        `session:reset` every plugin's `on_session_reset`. Each runs isolated with
        the timeout; the outcomes come back in that order, failures included.
        """
        calls = self._handler_calls(event)
        calls += self._plugin_calls(
            "on_event", {"event_type": event.type, "payload": dict(event.payload)}
        )
        if event.type == SESSION_RESET:
            calls += self._plugin_calls("on_session_reset", _lifecycle_arguments(event.payload))
        return await self._run_all(calls, event_type=event.type, session_id=event.session_id)

    async def decide(self, event: Event) -> Decision:
        """Ask the decision hooks about a `command:<name>` event, one at a time.

        Matching directory hooks in load order, then plugins' `on_command`; the
        first answer other than allow wins and the rest do not run. A handler that
        fails, times out (short timeout) or answers nonsense denies the command.
        """
        if not is_command(event.type):
            raise InvalidInput(f"decide() takes command:<name> events, not {event.type}")
        calls = self._handler_calls(event)
        calls += self._plugin_calls(
            "on_command", {"event_type": event.type, "payload": dict(event.payload)}
        )
        for call in calls:
            outcome, result = await self._run(
                call,
                event_type=event.type,
                session_id=event.session_id,
                seconds=self.decision_timeout,
            )
            if not outcome.ok:
                return Decision.failed(call.label, outcome.error or outcome.status)
            try:
                decision = parse_decision(result, hook=call.label)
            except InvalidInput as exc:
                logger.error("hook %s answered %s with %s", call.label, event.type, exc)
                return Decision.failed(call.label, f"invalid decision: {exc}")
            if decision.kind is not DecisionKind.ALLOW:
                return decision
        return Decision.allow()

    async def finalize(self, payload: Mapping[str, Any]) -> list[HandlerOutcome]:
        """Call every plugin's `on_session_finalize` for one ended session, concurrently.

        `payload` is what `events.finalize_payload` builds; `session_id`, `platform`
        and `reason` are required (`InvalidInput` otherwise).
        """
        arguments = _lifecycle_arguments(payload)
        calls = self._plugin_calls("on_session_finalize", arguments)
        return await self._run_all(
            calls, event_type="finalize", session_id=str(arguments["session_id"])
        )
