"""The deterministic simulation, run over a fixed set of seeds on every store.

`SESSIONGATE_SIM_SEEDS=5000 pytest tests/simulation` runs thousands of seeds on
the memory store; CI runs the default set within a few minutes.
"""

from __future__ import annotations

import os

import pytest

from sessiongate.store import Store
from sessiongate.store.memory import MemoryStore
from sessiongate.testing.simulation import simulate

MEMORY_SEEDS = int(os.environ.get("SESSIONGATE_SIM_SEEDS", "40"))
STORE_SEEDS = (1, 2)


@pytest.mark.parametrize("seed", range(MEMORY_SEEDS))
async def test_invariants_hold_on_the_memory_store(seed: int) -> None:
    report = await simulate(MemoryStore(), seed, steps=200)
    assert report.problems == [], f"seed {seed}: {report.problems[:10]}"
    # The run must have exercised what it claims to: turns, ends and crashes.
    assert report.accepted > 0
    # One start/end pair per session and epoch (a resumed session has several).
    assert report.events["session:end"] == report.events["session:start"] >= report.sessions


@pytest.mark.parametrize("seed", STORE_SEEDS)
async def test_invariants_hold_on_every_store(store: Store, seed: int) -> None:
    report = await simulate(store, seed, steps=120)
    assert report.problems == [], f"seed {seed}: {report.problems[:10]}"
    assert report.sessions > 0
    assert report.accepted > 0


async def test_the_simulation_crashes_and_injects_faults() -> None:
    reports = [await simulate(MemoryStore(), seed, steps=200) for seed in range(5)]
    assert sum(r.crashes for r in reports) > 0
    assert all(r.problems == [] for r in reports)


async def test_a_seed_replays_identically() -> None:
    first = await simulate(MemoryStore(), 7, steps=150)
    second = await simulate(MemoryStore(), 7, steps=150)
    assert (first.crashes, first.accepted, first.sessions, first.events) == (
        second.crashes,
        second.accepted,
        second.sessions,
        second.events,
    )
