"""Test doubles that ship with sessiongate, for your own tests of hooks, plugins and providers.

- `FakeClock`, `MemoryStore` and record factories (`new_session`, `new_entry`, `new_job`);
- `FakeProvider` (recording, fault-injecting) and `FaultyProvider` (faults around any provider);
- `ProviderConformance`: the suite every memory provider must pass;
- `CrashingStore` and the deterministic `simulate` of the lifecycle under faults and crashes.
"""

from __future__ import annotations

from sessiongate.store.memory import MemoryStore
from sessiongate.testing.clock import FakeClock
from sessiongate.testing.conformance import ProviderConformance
from sessiongate.testing.crash import CrashingStore, SimulatedCrash
from sessiongate.testing.provider import FakeProvider, Faults
from sessiongate.testing.proxy import FaultyProvider
from sessiongate.testing.records import new_entry, new_job, new_session
from sessiongate.testing.simulation import simulate

__all__ = [
    "CrashingStore",
    "FakeClock",
    "FakeProvider",
    "Faults",
    "FaultyProvider",
    "MemoryStore",
    "ProviderConformance",
    "SimulatedCrash",
    "new_entry",
    "new_job",
    "new_session",
    "simulate",
]
