"""A gateway process that can be thrown away: everything but the store and the 'remote' state.

`World` keeps only what outlives a process: the store, the fake clock, the fake
providers (remote servers), the hook directory with the JSON-lines file its
handler appends to, and the calls the plugin recorded. Every engine, worker,
dispatcher and memory sync is built fresh on demand and tracked by weak
reference, so a test can prove that none of them is alive between a turn and
the end of its session.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import textwrap
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sessiongate.clock import Clock
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.handlers import job_handlers
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.lifecycle.sweeper import Sweeper, SweeperSettings
from sessiongate.lifecycle.worker import JobHandler, Worker, WorkerSettings
from sessiongate.memory.sync import MemorySync
from sessiongate.models import ChatType, Role, Session, Source
from sessiongate.policy import ResetMode, ResetPolicy, ResetRules
from sessiongate.retry import RetryPolicies, RetryPolicy
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock
from sessiongate.testing.provider import FakeProvider

SOURCE = Source("telegram", "chat-42", ChatType.DM, user_id="u-42", user_name="Ada")
OTHER = Source("telegram", "chat-43", ChatType.DM, user_id="u-43", user_name="Bob")
IDLE_POLICY = ResetPolicy(mode=ResetMode.IDLE, idle=timedelta(minutes=30))
DAILY_POLICY = ResetPolicy(mode=ResetMode.DAILY, at_hour=4)
NO_RESET = ResetPolicy()
FAST_RETRY = RetryPolicies(
    default=RetryPolicy(base_delay=1.0, max_delay=5.0, max_attempts=5, max_age=3600.0)
)

HANDLER_SOURCE = """
import json
from pathlib import Path

LOG = Path({path!r})


def handle(event_type, context):
    with LOG.open("a", encoding="utf-8") as f:
        f.write(json.dumps({{"event_type": event_type, "context": context}}) + "\\n")
"""


def write_recording_hook(hooks_dir: Path, log: Path, *, name: str = "recorder") -> Path:
    """A real Hermes-layout hook: HOOK.yaml on `session:*` and a handler appending JSON lines."""
    directory = hooks_dir / name
    directory.mkdir(parents=True)
    (directory / "HOOK.yaml").write_text(
        f'name: {name}\ndescription: records every session event\nevents: ["session:*"]\n'
    )
    (directory / "handler.py").write_text(textwrap.dedent(HANDLER_SOURCE.format(path=str(log))))
    return directory


class FinalizeRecorder:
    """A plugin implementing `on_session_finalize`; its calls go to a list kept aside."""

    name = "finalize-recorder"

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self._calls = calls

    async def on_session_finalize(
        self,
        session_id: str,
        platform: str,
        reason: str,
        old_session_id: str | None = None,
        new_session_id: str | None = None,
        **context: Any,
    ) -> None:
        self._calls.append(
            {
                "session_id": session_id,
                "platform": platform,
                "reason": reason,
                "old_session_id": old_session_id,
                "new_session_id": new_session_id,
                "event_id": context.get("event_id"),
            }
        )


@dataclass
class World:
    """What survives a gateway process; builds the in-process objects anew on demand."""

    store: Store
    clock: FakeClock
    hooks_dir: Path
    events_path: Path
    reset: ResetRules = field(default_factory=ResetRules)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    providers: dict[str, FakeProvider] = field(
        default_factory=lambda: {
            # Small batches force several deliveries; "beta" has no idempotency keys.
            "alpha": FakeProvider(name="alpha", max_batch=2),
            "beta": FakeProvider(name="beta", max_batch=50, idempotent=False),
        }
    )
    finalized: list[dict[str, Any]] = field(default_factory=list)
    rand: random.Random = field(default_factory=lambda: random.Random(20260301))
    _built: list[weakref.ref[object]] = field(default_factory=list)

    # -- configuration -------------------------------------------------------------

    def use(self, policy: ResetPolicy) -> None:
        """Configure `policy` as the default reset policy from now on."""
        self.reset = ResetRules(default=policy)

    @property
    def settings(self) -> LifecycleSettings:
        # Rolling checkpoints are off here: these tests count an end's exact consumers
        # (test_checkpoints.py covers checkpoints, the simulation covers both together).
        return LifecycleSettings(
            reset=self.reset,
            tz=self.tz,
            providers=tuple(self.providers),
            checkpoint_every_turns=None,
            checkpoint_quiet=None,
        )

    # -- fresh in-process objects ---------------------------------------------------

    def _track(self, obj: object) -> None:
        self._built.append(weakref.ref(obj))

    def engine(self, *, clock: Clock | None = None) -> Engine:
        clock = clock or self.clock
        engine = Engine(self.store, self.settings, clock=clock, ids=IdGenerator(clock, self.rand))
        self._track(engine)
        return engine

    def sweeper(
        self,
        *,
        owner: str = "sweeper",
        clock: Clock | None = None,
        settings: SweeperSettings | None = None,
    ) -> Sweeper:
        """A sweeper with its own fresh engine; no pacing unless `settings` say so."""
        clock = clock or self.clock
        sweeper = Sweeper(
            self.engine(clock=clock),
            owner=owner,
            clock=clock,
            settings=settings or SweeperSettings(max_rate=None),
        )
        self._track(sweeper)
        return sweeper

    def dispatcher(self) -> HookDispatcher:
        dispatcher, problems = HookDispatcher.load(self.hooks_dir, entry_points=False)
        assert problems == []
        dispatcher.register(FinalizeRecorder(self.finalized))
        self._track(dispatcher)
        return dispatcher

    def handlers(self) -> dict[str, JobHandler]:
        sync = MemorySync(self.store, self.providers, clock=self.clock)
        self._track(sync)
        return dict(job_handlers(memory=sync, hooks=self.dispatcher()))

    def worker(
        self,
        *,
        owner: str = "worker",
        handlers: dict[str, JobHandler] | None = None,
        retry: RetryPolicies = FAST_RETRY,
        settings: WorkerSettings | None = None,
    ) -> Worker:
        worker = Worker(
            self.store,
            self.handlers() if handlers is None else handlers,
            owner=owner,
            clock=self.clock,
            rand=self.rand,
            retry=retry,
            settings=settings,
        )
        self._track(worker)
        return worker

    def assert_nothing_alive(self) -> None:
        """No engine, worker, sweeper, dispatcher or memory sync built so far is alive."""
        gc.collect()
        alive = [type(obj).__name__ for ref in self._built if (obj := ref()) is not None]
        assert alive == [], f"in-process objects still alive: {alive}"

    # -- doing things ---------------------------------------------------------------

    async def chat(self, source: Source, turns: int) -> Session:
        """Route `source` and record `turns` entries (user, assistant, …) with a fresh engine."""
        engine = self.engine()
        routed = await engine.route(source)
        for n in range(1, turns + 1):
            role = Role.USER if n % 2 else Role.ASSISTANT
            await engine.record(routed.session.id, role, f"turn {n} of {routed.session.id}")
        session = await self.store.get_session(routed.session.id)
        assert session is not None
        return session

    async def drain(
        self,
        *,
        rounds: int = 200,
        retry: RetryPolicies = FAST_RETRY,
        worker: Worker | None = None,
    ) -> int:
        """Run a worker (a fresh one by default) until nothing is pending or running.

        Time moves on to the next due job whenever nothing can run now (backoff).
        Returns how many jobs ran.
        """
        worker = worker or self.worker(retry=retry)
        ran = 0
        for _ in range(rounds):
            stats = await self.store.outbox_stats()
            if stats.pending + stats.running == 0:
                return ran
            done = await worker.run_once()
            ran += done
            if done == 0:
                due = await self.store.next_job_due()
                assert due is not None, f"jobs are stuck: {stats}"
                self.clock.advance(max((due - self.clock.now()).total_seconds(), 0.001))
        raise AssertionError(f"the outbox did not drain in {rounds} rounds")

    def events(self) -> list[dict[str, Any]]:
        """Every event the directory hook received, in arrival order: type plus context."""
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text(encoding="utf-8").splitlines()
        return [{"type": e["event_type"], **e["context"]} for e in map(json.loads, lines)]

    def events_of(self, session_id: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e for e in self.events() if e["type"] == event_type and e["session_id"] == session_id
        ]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 5.0, what: str = "condition"
) -> None:
    """Wait in real time (polling) until `check()` holds; fail after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not hold within {within} s")
        await asyncio.sleep(0.005)


class HalfRandom:
    """A random source whose `random()` is always 0.5: backoff delays become exact."""

    def __init__(self) -> None:
        self._bits = random.Random(5)

    def random(self) -> float:
        return 0.5

    def getrandbits(self, k: int, /) -> int:
        return self._bits.getrandbits(k)
