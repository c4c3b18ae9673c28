"""Loading Hermes-layout hook directories: good ones load, broken ones are named and skipped."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from hooks.hookdirs import WriteHook
from sessiongate.hooks import load_directory_hooks

ASYNC_HANDLER = "async def handle(event_type, context):\n    return None\n"


def test_good_and_broken_hooks_side_by_side(
    hooks_dir: Path, write_hook: WriteHook, caplog: pytest.LogCaptureFixture
) -> None:
    write_hook("a-sync", events=["session:*", "agent:end"])
    write_hook("b-async", events=["*"], handler=ASYNC_HANDLER)
    write_hook("c-bad-yaml", manifest="name: c\nevents: [session:end\n")
    write_hook("d-no-handler", handler=None)
    write_hook("e-import-error", handler="import module_that_does_not_exist_anywhere\n")
    write_hook("f-no-handle", handler="def other(event_type, context):\n    pass\n")
    write_hook("g-no-events", manifest="name: g\ndescription: forgot them\n")
    write_hook("h-raises", handler="raise RuntimeError('boom at import')\n")
    write_hook("i-wrong-args", handler="def handle(context):\n    pass\n")
    write_hook("j-syntax", handler="def handle(event_type, context)\n    pass\n")
    write_hook("k-not-a-mapping", manifest="- just\n- a list\n")
    (hooks_dir / "README.md").write_text("not a hook")
    (hooks_dir / ".cache").mkdir()

    with caplog.at_level(logging.WARNING, logger="sessiongate.hooks"):
        hooks, problems = load_directory_hooks(hooks_dir)

    assert [hook.name for hook in hooks] == ["a-sync", "b-async"]
    assert hooks[0].events == ("session:*", "agent:end")
    assert hooks[0].description == "test hook"
    reasons = {problem.name: problem.reason for problem in problems}
    assert set(reasons) == {
        "c-bad-yaml",  # unreadable manifests are named after their directory
        "d-no-handler",
        "e-import-error",
        "f-no-handle",
        "g",
        "h-raises",
        "i-wrong-args",
        "j-syntax",
        "k-not-a-mapping",
    }
    assert "not valid YAML" in reasons["c-bad-yaml"]
    assert "no handler.py" in reasons["d-no-handler"]
    assert "ModuleNotFoundError" in reasons["e-import-error"]
    assert "module_that_does_not_exist_anywhere" in reasons["e-import-error"]
    assert "no 'handle'" in reasons["f-no-handle"]
    assert "'events'" in reasons["g"]
    assert "RuntimeError: boom at import" in reasons["h-raises"]
    assert "(event_type, context)" in reasons["i-wrong-args"]
    assert "SyntaxError" in reasons["j-syntax"]
    assert "mapping" in reasons["k-not-a-mapping"]
    for problem in problems:
        assert Path(problem.location).parent == hooks_dir
        assert any(problem.name in record.getMessage() for record in caplog.records)


def test_matching_uses_the_event_patterns(write_hook: WriteHook, hooks_dir: Path) -> None:
    write_hook("lifecycle", events=["session:*"])
    write_hook("commands", events=["command:*", "gateway:startup"])
    hooks, problems = load_directory_hooks(hooks_dir)
    assert problems == []
    by_name = {hook.name: hook for hook in hooks}
    assert by_name["lifecycle"].matches("session:end")
    assert not by_name["lifecycle"].matches("agent:end")
    assert by_name["commands"].matches("command:reset")
    assert by_name["commands"].matches("gateway:startup")
    assert not by_name["commands"].matches("session:start")


def test_handlers_import_under_unique_names_without_touching_sys_path(
    tmp_path: Path,
) -> None:
    path_before = list(sys.path)
    loaded = []
    for root in ("one", "two"):
        hook_dir = tmp_path / root / "same-name"
        hook_dir.mkdir(parents=True)
        (hook_dir / "HOOK.yaml").write_text("name: same-name\nevents: ['*']\n")
        # A sibling module, importable while the handler loads (as Hermes users expect).
        (hook_dir / f"helper_{root}.py").write_text(f"WHERE = {root!r}\n")
        (hook_dir / "handler.py").write_text(
            f"from helper_{root} import WHERE\n\ndef handle(event_type, context):\n"
            "    return WHERE\n"
        )
        hooks, problems = load_directory_hooks(tmp_path / root)
        assert problems == []
        loaded.extend(hooks)
    assert sys.path == path_before
    first, second = loaded
    assert first.handle("x", {}) == "one"
    assert second.handle("x", {}) == "two"
    assert first.handle.__module__ != second.handle.__module__
    assert first.handle.__module__ in sys.modules


def test_failed_import_leaves_no_module_behind(write_hook: WriteHook, hooks_dir: Path) -> None:
    modules_before = set(sys.modules)
    write_hook("explodes", handler="raise ValueError('no')\n")
    _, problems = load_directory_hooks(hooks_dir)
    assert [problem.name for problem in problems] == ["explodes"]
    assert {m for m in set(sys.modules) - modules_before if "explodes" in m} == set()


def test_duplicate_hook_names(write_hook: WriteHook, hooks_dir: Path) -> None:
    write_hook("first", name="twin")
    write_hook("second", name="twin")
    hooks, problems = load_directory_hooks(hooks_dir)
    assert [hook.path.name for hook in hooks] == ["first"]
    assert [(problem.name, problem.location) for problem in problems] == [
        ("twin", str(hooks_dir / "second"))
    ]
    assert "another hook has this name" in problems[0].reason


def test_missing_hooks_dir_means_no_hooks(tmp_path: Path) -> None:
    assert load_directory_hooks(tmp_path / "absent") == ([], [])


def test_hooks_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hooks"
    path.write_text("")
    hooks, problems = load_directory_hooks(path)
    assert hooks == []
    assert "not a directory" in problems[0].reason


def test_invalid_event_names_are_reported(write_hook: WriteHook, hooks_dir: Path) -> None:
    write_hook("spaces", manifest="name: spaces\nevents: ['session end', 3]\n")
    hooks, problems = load_directory_hooks(hooks_dir)
    assert hooks == []
    assert problems[0].name == "spaces"
    assert "invalid event names" in problems[0].reason
