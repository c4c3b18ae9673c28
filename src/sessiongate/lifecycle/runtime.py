"""The lifecycle wired together: one engine, its worker and its sweeper over one store.

Each replica (process) runs one `Lifecycle`. Replicas coordinate only through
the store; the in-process wake-ups here are a latency optimisation, never
needed for correctness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sessiongate.clock import Clock, RandomSource, SystemClock, system_random
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.handlers import default_retry_policies, job_handlers
from sessiongate.lifecycle.reaper import Reaper
from sessiongate.lifecycle.retention import Retention
from sessiongate.lifecycle.settings import LifecycleSettings, RetentionPolicy
from sessiongate.lifecycle.sweeper import Sweeper, SweeperSettings
from sessiongate.lifecycle.worker import Worker, WorkerSettings
from sessiongate.memory.guard import GuardedProvider, GuardSettings
from sessiongate.memory.provider import MemoryProvider
from sessiongate.memory.sync import MemorySync
from sessiongate.owners import replica_name
from sessiongate.retry import RetryPolicies
from sessiongate.store.base import Store


class Lifecycle:
    """The engine, worker and sweeper of one replica."""

    def __init__(
        self,
        store: Store,
        settings: LifecycleSettings,
        *,
        providers: Mapping[str, MemoryProvider],
        hooks: HookDispatcher,
        clock: Clock | None = None,
        rand: RandomSource | None = None,
        retry: RetryPolicies | None = None,
        worker: WorkerSettings | None = None,
        sweeper: SweeperSettings | None = None,
        guard: GuardSettings | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.rand = rand or system_random()
        self.owner = replica_name(self.rand)
        self.engine = Engine(
            store,
            settings,
            clock=self.clock,
            ids=IdGenerator(self.clock, self.rand),
            on_change=self._changed,
        )
        # Each provider behind its own concurrency limit and circuit breaker, so a
        # slow or down one never holds up the others; recall shares these guards.
        self.providers: dict[str, MemoryProvider] = {
            name: GuardedProvider(provider, guard, clock=self.clock)
            for name, provider in providers.items()
        }
        memory = MemorySync(store, self.providers, clock=self.clock)
        self.worker = Worker(
            store,
            job_handlers(memory=memory, hooks=hooks),
            owner=self.owner,
            clock=self.clock,
            rand=self.rand,
            retry=retry or default_retry_policies(),
            settings=worker,
        )
        self.sweeper = Sweeper(self.engine, owner=self.owner, clock=self.clock, settings=sweeper)
        self.reaper = Reaper(store, clock=self.clock, on_reaped=self._changed)
        # Off unless given: the gateway process passes the configured policy.
        self.retention = Retention(
            self.engine, retention or RetentionPolicy(every=None), clock=self.clock
        )

    def _changed(self) -> None:
        self.worker.wake()
        self.sweeper.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the worker, the sweeper, retention and the reaper until `stop` is set.

        The worker drains its jobs when `stop` is set.
        """
        async with asyncio.TaskGroup() as group:
            group.create_task(self.worker.run(stop))
            group.create_task(self.sweeper.run(stop))
            group.create_task(self.retention.run(stop))
            group.create_task(self.reaper.run(stop))

    async def drain(self, *, rounds: int = 100) -> int:
        """Run every job that is due now until none is left; return how many ran."""
        total = 0
        for _ in range(rounds):
            ran = await self.worker.run_once()
            total += ran
            if ran == 0:
                break
        return total
