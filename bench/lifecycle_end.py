"""End → commit: from `Engine.end_session` returning to the provider holding the commit.

Wired as the gateway wires it: one `Engine` whose `on_change` callback wakes one
`Worker` (the real `SystemClock`, `WorkerSettings()` defaults: poll 1 s, lease 30 s,
8 jobs at a time), the lifecycle's own job handlers (`job_handlers`: `MemorySync`
for the commit, a `HookDispatcher` with no hooks for the events), and a healthy,
idempotent `FakeProvider` whose `commit` notes the moment it has taken the commit.

Sessions are opened with `route` and given a few turns with `record`; the outbox is
drained of their `session:start` events; then every session is ended with reason
`idle`, either paced (one end every `1/rate` seconds) or in one burst (all at once,
concurrently). The latency of a session is from its `end_session` call returning to
the provider's commit for it; the commit job first delivers the turns the cursor
has not reached, so the figure includes that delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from lifecycle_support import Backends, Report, ms, outbox_idle, percentile, wait_for
from sessiongate.clock import SystemClock, system_random
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.handlers import job_handlers
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.lifecycle.worker import Worker, WorkerSettings
from sessiongate.memory.provider import CommitOutcome, ProviderSession
from sessiongate.memory.sync import MemorySync
from sessiongate.models import ChatType, EndReason, Role, SessionState, Source
from sessiongate.retry import RetryPolicies
from sessiongate.store import Store
from sessiongate.testing.provider import FakeProvider

PROVIDER = "fake"
USER_TEXT = "remind me to book the train to Porto for the conference next week"
ASSISTANT_TEXT = "Noted: book the train to Porto for next week's conference."
# Sessions per setup batch: keeps the opening concurrent without one huge gather.
_SETUP_BATCH = 50


@dataclass
class TimedProvider(FakeProvider):
    """A healthy `FakeProvider` that notes when it took each session's first commit."""

    committed_at: dict[str, float] = field(default_factory=dict)

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        outcome = await super().commit(
            session,
            epoch=epoch,
            first_seq=first_seq,
            last_seq=last_seq,
            idempotency_key=idempotency_key,
        )
        self.committed_at.setdefault(session.session_id, time.perf_counter())
        return outcome


@dataclass
class Run:
    """One mode on one backend: per-session latencies and what the store says after."""

    backend: str
    mode: str
    sessions: int
    latencies: list[float]
    end_call: list[float]
    finalized: int
    committed: int
    commit_calls: int

    def row(self) -> list[str]:
        lat = self.latencies
        return [
            self.backend,
            self.mode,
            f"{self.sessions:,}",
            ms(percentile(lat, 0.50)),
            ms(percentile(lat, 0.95)),
            ms(max(lat)),
            ms(percentile(self.end_call, 0.50)),
            f"{self.committed:,}",
            f"{self.finalized:,}",
        ]

    def figures(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "backend": self.backend,
            "mode": self.mode,
            "sessions": self.sessions,
            "p50_s": percentile(lat, 0.50),
            "p95_s": percentile(lat, 0.95),
            "max_s": max(lat),
            "end_session_call_p50_s": percentile(self.end_call, 0.50),
            "committed": self.committed,
            "finalized": self.finalized,
            "provider_commit_calls": self.commit_calls,
        }


def source(run: str, index: int) -> Source:
    """A Telegram DM of chat number `index` of this run."""
    chat = f"{run}{index:06d}"
    return Source("telegram", chat, ChatType.DM, user_id=chat, user_name=f"user{index}")


async def _open_sessions(engine: Engine, run: str, count: int, exchanges: int) -> list[str]:
    async def one(index: int) -> str:
        routed = await engine.route(source(run, index))
        for _ in range(exchanges):
            await engine.record(routed.session.id, Role.USER, USER_TEXT)
            await engine.record(routed.session.id, Role.ASSISTANT, ASSISTANT_TEXT)
        return routed.session.id

    ids: list[str] = []
    for start in range(0, count, _SETUP_BATCH):
        batch = range(start, min(count, start + _SETUP_BATCH))
        ids += await asyncio.gather(*(one(i) for i in batch))
    return ids


async def _end_paced(
    engine: Engine, ids: list[str], rate: float
) -> tuple[dict[str, float], list[float]]:
    ended: dict[str, float] = {}
    calls: list[float] = []
    started = time.perf_counter()
    for number, session_id in enumerate(ids):
        # An absolute schedule, so the time the calls take does not slow the rate.
        await asyncio.sleep(max(0.0, started + number / rate - time.perf_counter()))
        called = time.perf_counter()
        await engine.end_session(session_id, EndReason.IDLE)
        ended[session_id] = time.perf_counter()
        calls.append(ended[session_id] - called)
    return ended, calls


async def _end_burst(engine: Engine, ids: list[str]) -> tuple[dict[str, float], list[float]]:
    ended: dict[str, float] = {}
    calls: list[float] = []

    async def one(session_id: str) -> None:
        called = time.perf_counter()
        await engine.end_session(session_id, EndReason.IDLE)
        ended[session_id] = time.perf_counter()
        calls.append(ended[session_id] - called)

    await asyncio.gather(*(one(session_id) for session_id in ids))
    return ended, calls


async def measure(
    store: Store, backend: str, mode: str, *, sessions: int, exchanges: int, rate: float
) -> Run:
    """Open, fill and end `sessions` sessions under a running worker; time each commit."""
    clock = SystemClock()
    rand = system_random()
    provider = TimedProvider(name=PROVIDER)
    handlers = job_handlers(
        memory=MemorySync(store, {PROVIDER: provider}, clock=clock), hooks=HookDispatcher()
    )
    worker = Worker(
        store,
        handlers,
        owner=f"bench-{mode}",
        clock=clock,
        rand=rand,
        retry=RetryPolicies(),
        settings=WorkerSettings(),
    )
    settings = LifecycleSettings(providers=(PROVIDER,))
    # As the gateway does: whatever the engine writes wakes this process's worker.
    engine = Engine(
        store, settings, clock=clock, ids=IdGenerator(clock, rand), on_change=worker.wake
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop), name="bench-worker")
    try:
        ids = await _open_sessions(engine, mode[0], sessions, exchanges)
        if not await wait_for(lambda: outbox_idle(store), within=120):
            raise RuntimeError("the session:start events were not delivered within 120 s")
        if mode == "paced":
            ended, calls = await _end_paced(engine, ids, rate)
        else:
            ended, calls = await _end_burst(engine, ids)

        async def all_committed() -> bool:
            return len(provider.committed_at) >= len(ids)

        if not await wait_for(all_committed, within=120):
            raise RuntimeError(
                f"only {len(provider.committed_at)} of {len(ids)} commits within 120 s"
            )
        await wait_for(lambda: outbox_idle(store), within=60)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finalized = await store.list_sessions(state=SessionState.FINALIZED, limit=10 * sessions)
    latencies = [provider.committed_at[sid] - ended[sid] for sid in ids]
    return Run(
        backend=backend,
        mode=mode,
        sessions=sessions,
        latencies=latencies,
        end_call=calls,
        finalized=len(finalized),
        committed=len(provider.commits),
        commit_calls=provider.commit_calls,
    )


async def bench(
    backends: Backends, *, sessions: int, exchanges: int, rate: float, target: float
) -> Report:
    """Both modes on every backend, each on a fresh store."""
    report = Report(
        title="end → commit accepted by a healthy provider (Engine.end_session → Worker)",
        columns=[
            "store",
            "ends",
            "sessions",
            "p50 ms",
            "p95 ms",
            "max ms",
            "end_session p50 ms",
            "commits",
            "finalized",
        ],
    )
    for backend in backends.names:
        for mode in ("paced", "burst"):
            async with backends.fresh(backend, f"end-{mode}") as target_store:
                run = await measure(
                    target_store.store,
                    backend,
                    mode,
                    sessions=sessions,
                    exchanges=exchanges,
                    rate=rate,
                )
            report.rows.append(run.row())
            report.data.append(run.figures())
            p95 = percentile(run.latencies, 0.95)
            verdict = "met" if p95 <= target else "MISSED"
            report.notes.append(
                f"{backend}, {mode}: p95 {p95:.3f} s against the target ≤ {target:g} s: {verdict}"
            )
    report.notes.append(
        f"paced: one end every {1 / rate * 1000:.0f} ms; burst: all {sessions} ends at once. "
        f"Each session had {2 * exchanges} entries; worker defaults: {WorkerSettings()}."
    )
    report.notes.append(
        "Hermes gateway 0.19.0 (documented, not measured): idle/daily expiry is handled by "
        "GatewayRunner._session_expiry_watcher(interval=300) in gateway/run.py: first pass "
        "60 s after start, then a pass every 300 s, so an expired session waits up to ~300 s "
        "(about 150 s on average) before its provider's end-of-session runs, and that runs "
        "only if the session's AIAgent is still in _agent_cache or _running_agents; "
        "otherwise the session is marked finalized with no memory commit."
    )
    return report
