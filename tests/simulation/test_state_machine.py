"""The lifecycle core as a hypothesis state machine: hypothesis picks the schedule.

Every rule is an action of the simulated process (a chat turn, a command, a
clock jump, the workers running, a provider outage, an armed crash). At the end
every fault is healed, every live session ended, and the invariants checked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sessiongate.store.memory import MemoryStore
from sessiongate.testing.simulation import Simulation

EXAMPLES = int(os.environ.get("SESSIONGATE_SIM_EXAMPLES", "25"))


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim = Simulation(MemoryStore(), seed=0)

    def run(self, action: Coroutine[Any, Any, None]) -> None:
        self.loop.run_until_complete(self.sim.guarded(action))

    @rule(user=st.integers(0, 3), text=st.text(min_size=1, max_size=40))
    def chat(self, user: int, text: str) -> None:
        self.run(self.sim.chat(self.sim.sources[user], text))

    @rule(user=st.integers(0, 3), choice=st.integers(0, 4))
    def command(self, user: int, choice: int) -> None:
        self.run(self.sim.command(self.sim.sources[user], choice))

    @rule(seconds=st.sampled_from([1, 30, 600, 1801, 7200]))
    def advance(self, seconds: int) -> None:
        self.sim.clock.advance(seconds)

    @rule()
    def work(self) -> None:
        self.run(self.sim.work())

    @rule(provider=st.integers(0, 1), down=st.booleans(), flaky=st.booleans())
    def weather(self, provider: int, down: bool, flaky: bool) -> None:
        self.sim.weather(self.sim.providers[provider], down=down, flaky=flaky)

    @rule(calls=st.integers(1, 6), after=st.booleans(), user=st.integers(0, 3))
    def crash_during_a_turn(self, calls: int, after: bool, user: int) -> None:
        self.sim.store.arm(calls, after=after)
        self.run(self.sim.chat(self.sim.sources[user], "during a crash"))

    @rule(calls=st.integers(1, 6), after=st.booleans())
    def crash_during_work(self, calls: int, after: bool) -> None:
        self.sim.store.arm(calls, after=after)
        self.run(self.sim.work())

    @invariant()
    def accepted_turns_are_in_the_ledger(self) -> None:
        async def check() -> None:
            for session_id, accepted in self.sim.accepted.items():
                stored = {e.seq: e.text for e in await self.sim.store.inner.entries(session_id)}
                for seq, text in accepted:
                    assert stored.get(seq) == text, f"{session_id} lost seq {seq}"

        self.loop.run_until_complete(check())

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.sim.settle())
            report = self.loop.run_until_complete(self.sim.check())
            assert report.problems == [], report.problems[:10]
        finally:
            self.loop.close()


LifecycleMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycle = LifecycleMachine.TestCase
