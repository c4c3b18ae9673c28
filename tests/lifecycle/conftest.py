"""A throwaway gateway over each store kind, with a real hook directory and two providers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.world import World, write_recording_hook
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock


@pytest.fixture
def world(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    hooks_dir = tmp_path / "hooks"
    events_path = tmp_path / "events.jsonl"
    write_recording_hook(hooks_dir, events_path)
    return World(store=store, clock=clock, hooks_dir=hooks_dir, events_path=events_path)
