"""Plugins: checked against the one spec at registration, found through entry points."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hooks.hookdirs import make_session
from sessiongate.errors import HookError
from sessiongate.hooks import HookDispatcher, events, load_entry_point_plugins, make_plugin
from sessiongate.hooks.plugins import PLUGIN_GROUP
from sessiongate.models import EndReason


class Complete:
    """Implements every hook, each with a different parameter style."""

    name = "complete"

    def on_event(self, event_type: str, payload: Mapping[str, Any]) -> None:
        pass

    async def on_command(self, event_type: str, payload: Mapping[str, Any]) -> None:
        return None

    def on_session_reset(self, session_id: str, **rest: Any) -> None:
        pass

    async def on_session_finalize(
        self, session_id: str, reason: str, session_key: str | None = None
    ) -> None:
        pass


def test_a_good_plugin_registers_with_what_each_hook_takes() -> None:
    plugin = make_plugin(Complete())
    assert plugin.name == "complete"
    assert sorted(plugin.hooks) == [
        "on_command",
        "on_event",
        "on_session_finalize",
        "on_session_reset",
    ]
    finalize = plugin.hooks["on_session_finalize"]
    assert finalize.parameters == {"session_id", "reason", "session_key"}
    assert not finalize.takes_any
    assert plugin.hooks["on_session_reset"].takes_any
    assert finalize.label == "complete.on_session_finalize"
    available = {"session_id": "s", "platform": "p", "reason": "r", "user_id": "u"}
    assert finalize.arguments(available) == {"session_id": "s", "reason": "r"}
    assert plugin.hooks["on_session_reset"].arguments(available) == available


def test_a_module_is_a_plugin_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sg_module_plugin_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("def on_event(event_type, payload):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    try:
        plugin = make_plugin(module)
    finally:
        sys.modules.pop(name, None)
    assert plugin.name == name
    assert list(plugin.hooks) == ["on_event"]


class UnknownHook:
    def on_session_end(self, session_id: str) -> None:
        pass


class UnknownParameter:
    def on_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        pass


class ContextWithoutDefault:
    def on_session_finalize(self, session_id: str, session_key: str) -> None:
        pass


class PositionalOnly:
    def on_event(self, event_type: str, payload: Mapping[str, Any], /) -> None:
        pass


class NotCallable:
    on_event = "yes please"


class NoHooks:
    def handle(self, event_type: str, context: dict[str, Any]) -> None:
        pass


class Several:
    def on_event(self, kind: str) -> None:
        pass

    def on_turn(self) -> None:
        pass


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (UnknownHook(), "unknown hook 'on_session_end'.*on_session_finalize"),
        (UnknownParameter(), "on_event: unknown parameter 'body'.*event_type, payload"),
        (ContextWithoutDefault(), "'session_key' is not always provided; give it a default"),
        (PositionalOnly(), "positional-only"),
        (NotCallable(), "on_event is not callable"),
        (NoHooks(), "implements no hook"),
        (Several(), "unknown parameter 'kind'.*unknown hook 'on_turn'"),
        (Complete, "is a class; register an instance"),
    ],
)
def test_bad_plugins_are_rejected_with_a_clear_message(obj: object, expected: str) -> None:
    with pytest.raises(HookError, match=expected):
        make_plugin(obj)


def test_rejection_names_the_plugin() -> None:
    with pytest.raises(HookError, match="plugin 'audit' rejected"):
        make_plugin(UnknownParameter(), name="audit")


def test_dispatcher_refuses_bad_and_duplicate_plugins() -> None:
    dispatcher = HookDispatcher()
    dispatcher.register(Complete())
    with pytest.raises(HookError, match="already registered"):
        dispatcher.register(Complete())
    with pytest.raises(HookError, match="unknown hook"):
        dispatcher.register(UnknownHook(), name="other")
    assert [plugin.name for plugin in dispatcher.plugins] == ["complete"]


PLUGIN_MODULE = """
CALLS = []

class AuditPlugin:
    def on_event(self, event_type, payload):
        CALLS.append(("event", event_type, payload["event_id"]))

    async def on_session_finalize(self, session_id, platform, reason, new_session_id=None):
        CALLS.append(("finalize", session_id, platform, reason, new_session_id))

class BadPlugin:
    def on_session_end(self, session_id):
        pass

plugin = AuditPlugin()
"""


def write_distribution(site: Path, dist: str, entry_points: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed-looking site directory with two distributions offering plugins."""
    module = f"sg_audit_plugin_{uuid.uuid4().hex}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(PLUGIN_MODULE)
    write_distribution(
        site,
        "sg_fake_audit",
        f"""
        [{PLUGIN_GROUP}]
        audit = {module}:plugin
        audit-class = {module}:AuditPlugin
        bad-signature = {module}:BadPlugin
        missing = {module}_not_there:plugin
        [some.other.group]
        ignored = {module}:plugin
        """,
    )
    write_distribution(site, "sg_fake_other", f"[{PLUGIN_GROUP}]\naudit = {module}:plugin\n")
    monkeypatch.syspath_prepend(str(site))
    yield module
    sys.modules.pop(module, None)


def test_entry_point_plugins_load_and_broken_ones_are_reported(plugin_site: str) -> None:
    plugins, problems = load_entry_point_plugins()
    assert sorted(plugin.name for plugin in plugins) == ["audit", "audit-class"]
    reasons = {problem.name: problem.reason for problem in problems}
    assert set(reasons) == {"audit", "bad-signature", "missing"}
    assert "another plugin has this name" in reasons["audit"]
    assert "unknown hook 'on_session_end'" in reasons["bad-signature"]
    assert "ModuleNotFoundError" in reasons["missing"]
    assert all(problem.location.startswith("entry point") for problem in problems)


async def test_entry_point_plugins_receive_hooks(plugin_site: str) -> None:
    dispatcher, problems = HookDispatcher.load(None)
    assert len(problems) == 3
    session = make_session()
    event = events.session_end(session, event_id="s-1.0.session:end", reason=EndReason.NEW)
    outcomes = await dispatcher.notify(event)
    assert [(o.hook, o.ok) for o in outcomes] == [
        ("audit.on_event", True),
        ("audit-class.on_event", True),
    ]
    payload = events.finalize_payload(
        session, event_id="f", reason=EndReason.RESET, new_session_id="s-2"
    )
    assert all(o.ok for o in await dispatcher.finalize(payload))
    calls = sys.modules[plugin_site].CALLS
    assert calls.count(("event", "session:end", "s-1.0.session:end")) == 2
    assert calls.count(("finalize", "s-1", "telegram", "reset", "s-2")) == 2


def test_entry_points_can_be_left_out(plugin_site: str, tmp_path: Path) -> None:
    dispatcher, problems = HookDispatcher.load(tmp_path / "no-hooks", entry_points=False)
    assert (dispatcher.plugins, dispatcher.hooks, problems) == ((), (), [])
