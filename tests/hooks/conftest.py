"""Real hook directories written under tmp_path, and a log their handlers append to."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from hooks.hookdirs import CallLog, WriteHook


@pytest.fixture
def call_log(tmp_path: Path) -> CallLog:
    return CallLog(tmp_path / "calls.jsonl")


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hooks"
    path.mkdir()
    return path


@pytest.fixture
def write_hook(hooks_dir: Path) -> WriteHook:
    """Write `<hooks_dir>/<directory>/HOOK.yaml` and `handler.py` (None: leave it out)."""

    def write(
        directory: str,
        *,
        events: Sequence[str] = ("*",),
        handler: str | None = "def handle(event_type, context):\n    pass\n",
        manifest: str | None = None,
        name: str | None = None,
    ) -> Path:
        path = hooks_dir / directory
        path.mkdir()
        if manifest is None:
            listed = ", ".join(json.dumps(e) for e in events)
            manifest = f"name: {name or directory}\ndescription: test hook\nevents: [{listed}]\n"
        (path / "HOOK.yaml").write_text(manifest)
        if handler is not None:
            (path / "handler.py").write_text(handler)
        return path

    return write
