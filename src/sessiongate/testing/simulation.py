"""A deterministic simulation of the lifecycle core under faults and crashes.

One seeded random source drives everything: which user talks, which command
runs, when time jumps, when a provider goes down or loses an acknowledgement,
and at which store await the process "crashes". A crash throws away every
in-process object (engine, workers, sweeper) and boots new ones on the same
store, as a restart would; the fake providers survive, like remote servers.
After the run, `settle` heals every fault, ends every live session and lets the
workers drain; `check` then asserts the invariants and returns what it found.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sessiongate.errors import Conflict, InvalidInput, NotFound, SessionClosed
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.consumers import HOOK_EVENT, HOOK_FINALIZE
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.handlers import job_handlers
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.lifecycle.sweeper import Sweeper, SweeperSettings
from sessiongate.lifecycle.worker import Worker, WorkerSettings
from sessiongate.memory.sync import EpochLimits, MemorySync
from sessiongate.models import ChatType, EndReason, Job, JobState, Role, SessionState, Source
from sessiongate.policy import ResetMode, ResetPolicy, ResetRules
from sessiongate.retry import RetryPolicies, RetryPolicy
from sessiongate.store.base import Store
from sessiongate.testing.clock import FakeClock
from sessiongate.testing.crash import CrashingStore, SimulatedCrash
from sessiongate.testing.provider import FakeProvider, Faults

LEASE_SECONDS = 30.0
EPOCH_LIMITS = EpochLimits(max_entries=5, max_tokens=40)


@dataclass
class SimulationReport:
    """What a run did, for assertions and for reading a failing seed."""

    seed: int
    steps: int = 0
    crashes: int = 0
    accepted: int = 0
    sessions: int = 0
    events: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


class Simulation:
    """The lifecycle core on one store, driven by one seed."""

    def __init__(self, store: Store, seed: int, *, users: int = 4, idle_minutes: int = 30) -> None:
        self.rand = random.Random(seed)
        self.clock = FakeClock()
        self.store = CrashingStore(store)
        self.providers = [
            FakeProvider(name="keyed", max_batch=3, idempotent=True, rand=self.rand),
            FakeProvider(name="counted", max_batch=4, idempotent=False, rand=self.rand),
        ]
        reset = ResetRules(
            default=ResetPolicy(mode=ResetMode.IDLE, idle=timedelta(minutes=idle_minutes))
        )
        # Small checkpoints and epochs, so rolling commits and epoch splitting run often.
        self.settings = LifecycleSettings(
            checkpoint_every_turns=6, reset=reset, providers=tuple(p.name for p in self.providers)
        )
        self.sources = [
            Source(platform="sim", chat_id=f"chat{i}", chat_type=ChatType.DM, user_id=f"u{i}")
            for i in range(users)
        ]
        self.report = SimulationReport(seed=seed)
        # Texts the engine acknowledged as durable, by session id.
        self.accepted: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.events: list[dict[str, Any]] = []
        self.finalized_hooks: list[str] = []
        self._boot()

    # -- the simulated process -------------------------------------------------
    def _boot(self) -> None:
        """Build every in-process object anew, as a fresh process would."""
        store: Any = self.store
        self.engine = Engine(
            store, self.settings, clock=self.clock, ids=IdGenerator(self.clock, self.rand)
        )
        sync = MemorySync(
            store,
            {p.name: p for p in self.providers},
            clock=self.clock,
            limits=EPOCH_LIMITS,
        )
        retry = RetryPolicies(
            default=RetryPolicy(
                base_delay=1.0, max_delay=60.0, max_attempts=1000, max_age=365 * 86400.0
            )
        )
        handlers = {
            **job_handlers(memory=sync, hooks=HookDispatcher()),
            # Events are recorded for the pairing checks instead of going to hooks.
            HOOK_EVENT: self._on_event,
            HOOK_FINALIZE: self._on_finalize,
        }
        owner = f"sim-{self.report.crashes}"
        self.worker = Worker(
            store,
            handlers,
            owner=owner,
            clock=self.clock,
            rand=self.rand,
            retry=retry,
            settings=WorkerSettings(lease_seconds=LEASE_SECONDS),
        )
        self.sweeper = Sweeper(
            self.engine, owner=owner, clock=self.clock, settings=SweeperSettings(max_rate=None)
        )

    async def _on_event(self, job: Job) -> None:
        self.events.append({"type": job.payload["event_type"], **job.payload["payload"]})

    async def _on_finalize(self, job: Job) -> None:
        self.finalized_hooks.append(str(job.payload["event_id"]))

    # -- steps -------------------------------------------------------------------
    async def step(self) -> None:
        """One scheduler step chosen by the seed; a crash restarts the process."""
        self.report.steps += 1
        if self.rand.random() < 0.08:
            self.store.arm(self.rand.randint(1, 6), after=self.rand.random() < 0.5)
        await self.guarded(self._one_action())

    async def guarded(self, action: Awaitable[None]) -> None:
        """Run one action of the simulated process; a crash restarts the process."""
        try:
            await action
        except SimulatedCrash:
            self.report.crashes += 1
            self._boot()
        finally:
            self.store.disarm()

    async def work(self) -> None:
        """Let this process's worker and sweeper do what is due now."""
        await self.worker.run_once()
        await self.sweeper.sweep_once()

    async def _one_action(self) -> None:
        roll = self.rand.random()
        source = self.rand.choice(self.sources)
        if roll < 0.45:
            await self.chat(source, f"message {self.report.steps} from {source.user_id}")
        elif roll < 0.55:
            await self.command(source, self.rand.randrange(6))
        elif roll < 0.70:
            self.clock.advance(self.rand.choice([1, 5, 40, 600, 2400]))
        elif roll < 0.90:
            await self.work()
        else:
            self.weather(
                self.rand.choice(self.providers),
                down=self.rand.random() < 0.3,
                flaky=self.rand.random() < 0.5,
            )

    async def chat(self, source: Source, text: str) -> None:
        """A user message and the agent's reply, both written ahead."""
        routed = await self.engine.route(source)
        try:
            user = await self.engine.record(routed.session.id, Role.USER, text)
            self.accepted[routed.session.id].append((user.seq, text))
            reply = await self.engine.record(routed.session.id, Role.ASSISTANT, f"re: {text}")
            self.accepted[routed.session.id].append((reply.seq, f"re: {text}"))
        except (SessionClosed, InvalidInput):
            return

    async def command(self, source: Source, choice: int) -> None:
        """One of the session commands: new, branch, compress, resume, admin end, forget."""
        try:
            if choice == 0:
                await self.engine.new_session(source, reason=EndReason.NEW)
            elif choice == 1:
                await self.engine.branch(source)
            elif choice == 2:
                await self.engine.compress(source, "summary so far")
            elif choice == 3:
                await self._resume(source)
            else:
                current = await self.store.routed_session(self.engine.key_of(source))
                if current is not None and choice == 4:
                    await self.engine.end_session(current.id, EndReason.ADMIN)
                elif current is not None:
                    await self.engine.forget(current.id)
        except (NotFound, Conflict, InvalidInput):
            return

    async def _resume(self, source: Source) -> None:
        earlier = await self.store.list_sessions(user_id=source.user_id, chat_id=source.chat_id)
        ended = [s for s in earlier if s.state is not SessionState.ACTIVE]
        if ended:
            await self.engine.resume(source, self.rand.choice(ended).id)

    def weather(self, provider: FakeProvider, *, down: bool, flaky: bool) -> None:
        """Take a provider down or up, and make it drop calls and acknowledgements."""
        provider.down = down
        provider.faults = (
            Faults(error=0.2, lost_ack=0.2, commit_failed_after_accept=0.2) if flaky else Faults()
        )

    # -- the end -----------------------------------------------------------------
    async def settle(self, *, rounds: int = 400) -> None:
        """Heal every fault, end every live session, and let the workers drain."""
        self.store.disarm()
        for provider in self.providers:
            provider.down, provider.faults = False, Faults()
        self.clock.advance(LEASE_SECONDS + 1)  # a crashed worker's leases expire
        for session in await self.store.list_sessions(state=SessionState.ACTIVE, limit=10_000):
            await self.engine.end_session(session.id, EndReason.ADMIN)
        for _ in range(rounds):
            if not await self._pending():
                return
            await self.worker.run_once()
            due = await self.store.next_job_due()
            if due is not None and due > self.clock.now():
                self.clock.advance((due - self.clock.now()).total_seconds())

    async def _forgotten_problems(self, session_id: str) -> list[str]:
        problems = (
            [f"{session_id}: forgotten but its ledger remains"]
            if (await self.store.entries(session_id))
            else []
        )
        for provider in self.providers:
            if provider.seqs(session_id) or provider.committed_upto(session_id):
                problems.append(f"{provider.name}/{session_id}: forgotten but still held")
        return problems

    async def _pending(self) -> bool:
        stats = await self.store.outbox_stats()
        return bool(stats.pending + stats.running > 0)

    async def check(self) -> SimulationReport:
        """Assert every invariant; problems are listed in the report."""
        report, problems = self.report, self.report.problems
        sessions = await self.store.list_sessions(limit=100_000)
        report.sessions = len(sessions)
        report.accepted = sum(len(v) for v in self.accepted.values())
        forgotten = {s.id for s in sessions if s.end_reason is EndReason.FORGET}
        for sid, accepted in self.accepted.items():
            if sid in forgotten:
                continue
            stored = {e.seq: e.text for e in await self.store.entries(sid)}
            problems += [
                f"{sid}: accepted seq {seq} lost"
                for seq, text in accepted
                if stored.get(seq) != text
            ]
        for session in sessions:
            if session.state is not SessionState.FINALIZED:
                problems.append(f"{session.id}: {session.state} after settling")
            if session.id in forgotten:
                problems += await self._forgotten_problems(session.id)
                continue
            for provider in self.providers:
                problems += _provider_problems(provider, session.id, session.turn_count)
        problems += [
            f"dead letter: {d.kind} {d.last_error}"
            for d in await self.store.dead_letters(limit=1000)
        ]
        problems += _pairing_problems(self.events)
        report.events = Counter(e["type"] for e in {e["event_id"]: e for e in self.events}.values())
        if await self.store.list_jobs(state=JobState.PENDING, limit=1):
            problems.append("jobs still pending after settling")
        return report


def _provider_problems(provider: FakeProvider, session_id: str, turns: int) -> list[str]:
    problems = []
    seqs = provider.seqs(session_id)
    if seqs != list(range(1, turns + 1)):
        problems.append(f"{provider.name}/{session_id}: holds seqs {seqs}, ledger has {turns}")
    if provider.committed_upto(session_id) != turns and turns:
        problems.append(
            f"{provider.name}/{session_id}: committed up to "
            f"{provider.committed_upto(session_id)} of {turns}"
        )
    commits = [c for c in provider.commits if c.session_id == session_id]
    expected_first = 1
    for number, commit in enumerate(commits, start=1):
        if commit.epoch != number or commit.first_seq != expected_first:
            problems.append(f"{provider.name}/{session_id}: commit {commit} out of sequence")
        if commit.last_seq - commit.first_seq + 1 > EPOCH_LIMITS.max_entries:
            problems.append(f"{provider.name}/{session_id}: epoch {commit} exceeds the limit")
        expected_first = commit.last_seq + 1
    return problems


def _pairing_problems(events: list[dict[str, Any]]) -> list[str]:
    """Every session:start has exactly one session:end (per session and epoch)."""
    unique = {e["event_id"]: e for e in events}.values()
    starts = Counter(
        e["event_id"].rsplit(".", 1)[0] for e in unique if e["type"] == "session:start"
    )
    ends = Counter(e["event_id"].rsplit(".", 1)[0] for e in unique if e["type"] == "session:end")
    problems = [
        f"{k}: {starts[k]} start(s), {ends[k]} end(s)"
        for k in starts.keys() | ends.keys()
        if starts[k] != 1 or ends[k] != 1
    ]
    for e in unique:
        for key in ("event_id", "session_id", "session_key", "reason"):
            if e["type"] in {"session:start", "session:end"} and key not in e:
                problems.append(f"{e['event_id']}: {e['type']} lacks {key}")
    return problems


async def simulate(store: Store, seed: int, *, steps: int = 200) -> SimulationReport:
    """Run one seeded simulation on `store` and return its checked report."""
    sim = Simulation(store, seed)
    for _ in range(steps):
        await sim.step()
    await sim.settle()
    return await sim.check()
