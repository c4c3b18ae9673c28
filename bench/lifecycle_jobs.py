"""Outbox jobs: throughput of several workers, and lease takeover after a worker dies.

Throughput: `--jobs` no-op jobs are enqueued first; then `--workers` `Worker`
instances with different owners (the real `SystemClock`, `WorkerSettings()`
defaults: 8 jobs at a time each, poll 1 s, lease 30 s) drain them together. The
rate is jobs over the time from starting the workers to the store reporting every
job `done` (polled every 20 ms). Each worker counts the jobs it ran, to show both
took part.

Takeover: worker A (lease `--lease`) claims `--held` jobs whose handler never
returns, then dies: its run task is cancelled with `drain_seconds=0`, so its job
tasks and their heartbeats stop without writing any outcome, which is what the
store sees of a killed process. Worker B, running with the same lease and the
default 1 s poll, takes them over once the leases expire. Takeover is the time from
A's death to B having completed them all; the expected value is the lease left at
death plus at most one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lifecycle_support import Backends, Report, wait_for
from sessiongate.clock import SystemClock, system_random
from sessiongate.lifecycle.worker import Worker, WorkerSettings
from sessiongate.models import Job, JobState, NewJob
from sessiongate.retry import RetryPolicies
from sessiongate.store import Store

NOOP = "bench.noop"
HELD = "bench.held"
_ENQUEUE_BATCH = 500

Handler = Callable[[Job], Awaitable[None]]


def _worker(
    store: Store, handlers: Mapping[str, Handler], owner: str, settings: WorkerSettings
) -> Worker:
    clock = SystemClock()
    return Worker(
        store,
        handlers,
        owner=owner,
        clock=clock,
        rand=system_random(),
        retry=RetryPolicies(),
        settings=settings,
    )


async def _enqueue(store: Store, kind: str, count: int) -> None:
    now = SystemClock().now()
    for start in range(0, count, _ENQUEUE_BATCH):
        jobs = [
            NewJob(kind=kind, idempotency_key=f"{kind}:{i}", payload={"n": i})
            for i in range(start, min(count, start + _ENQUEUE_BATCH))
        ]
        await store.enqueue(jobs, at=now)


async def _done(store: Store, kind: str) -> int:
    stats = await store.outbox_stats()
    return stats.by_kind.get(kind, {}).get(JobState.DONE.value, 0)


async def _stop(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def throughput(store: Store, *, jobs: int, workers: int) -> dict[str, Any]:
    """Drain `jobs` no-op jobs with `workers` workers; jobs/s and each worker's share."""
    await _enqueue(store, NOOP, jobs)
    ran: dict[str, int] = {}

    def counting(owner: str) -> Handler:
        async def handle(job: Job) -> None:
            ran[owner] = ran.get(owner, 0) + 1

        return handle

    stop = asyncio.Event()
    owners = [f"worker-{n + 1}" for n in range(workers)]
    pool = [_worker(store, {NOOP: counting(o)}, o, WorkerSettings()) for o in owners]
    started = time.perf_counter()
    tasks = [asyncio.create_task(w.run(stop)) for w in pool]

    async def drained() -> bool:
        return await _done(store, NOOP) >= jobs

    try:
        if not await wait_for(drained, within=600):
            raise RuntimeError(f"{jobs} jobs were not drained within 600 s")
        elapsed = time.perf_counter() - started
    finally:
        await _stop(stop, tasks)
    return {
        "jobs": jobs,
        "workers": workers,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        "ran_by": {owner: ran.get(owner, 0) for owner in owners},
    }


async def takeover(store: Store, *, lease: float, held: int) -> dict[str, Any]:
    """Kill a worker holding `held` jobs; how long until another one has completed them."""
    await _enqueue(store, HELD, held)
    clock = SystemClock()
    started: list[int] = []
    all_held = asyncio.Event()
    completed: list[float] = []

    async def hang(job: Job) -> None:
        started.append(job.id)
        if len(started) >= held:
            all_held.set()
        await asyncio.Event().wait()  # never returns: the worker dies holding the job

    async def finish(job: Job) -> None:
        completed.append(time.perf_counter())

    dying = _worker(
        store, {HELD: hang}, "dying", WorkerSettings(lease_seconds=lease, drain_seconds=0)
    )
    heir = _worker(store, {HELD: finish}, "heir", WorkerSettings(lease_seconds=lease))
    stop = asyncio.Event()
    dying_task = asyncio.create_task(dying.run(stop))
    await asyncio.wait_for(all_held.wait(), timeout=30)
    heir_task = asyncio.create_task(heir.run(stop))
    claimed = await store.list_jobs(kind=HELD, limit=held)
    dying_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying_task
    died = time.perf_counter()
    died_at = clock.now()
    expiries = [j.lease_expires_at for j in claimed if j.lease_expires_at is not None]
    lease_left = (min(expiries) - died_at).total_seconds() if expiries else float("nan")

    async def all_done() -> bool:
        return await _done(store, HELD) >= held

    try:
        if not await wait_for(all_done, within=10 * lease + 30, interval=0.01):
            raise RuntimeError(f"the {held} held jobs were not taken over in time")
        finished = time.perf_counter()
    finally:
        await _stop(stop, [heir_task])
    after = await store.list_jobs(kind=HELD, limit=held)
    return {
        "lease_s": lease,
        "poll_s": WorkerSettings().poll_seconds,
        "held": held,
        "lease_left_at_death_s": lease_left,
        "first_taken_over_s": min(completed) - died,
        "takeover_s": finished - died,
        "attempts": sorted({j.attempts for j in after}),
        "states": sorted({j.state.value for j in after}),
        "completed_by_heir": len(completed),
    }


async def bench(
    backends: Backends, *, jobs: int, workers: int, lease: float, held: int
) -> list[Report]:
    """Throughput and takeover on every backend, each on a fresh store."""
    rate = Report(
        title=f"job throughput: {workers} workers drain {jobs:,} no-op jobs",
        columns=["store", "workers", "jobs", "seconds", "jobs/s", "ran by each worker"],
    )
    lease_report = Report(
        title="lease takeover after a worker dies holding jobs",
        columns=[
            "store",
            "jobs held",
            "lease s",
            "poll s",
            "lease left at death s",
            "first job taken over s",
            "all taken over s",
            "attempts",
        ],
    )
    for backend in backends.names:
        async with backends.fresh(backend, "jobs") as target:
            figures = await throughput(target.store, jobs=jobs, workers=workers)
        rate.rows.append(
            [
                backend,
                str(workers),
                f"{jobs:,}",
                f"{figures['seconds']:.2f}",
                f"{figures['jobs_per_s']:,.0f}",
                " / ".join(f"{n:,}" for n in figures["ran_by"].values()),
            ]
        )
        rate.data.append({"backend": backend, **figures})
        async with backends.fresh(backend, "takeover") as target:
            taken = await takeover(target.store, lease=lease, held=held)
        lease_report.rows.append(
            [
                backend,
                str(held),
                f"{lease:g}",
                f"{taken['poll_s']:g}",
                f"{taken['lease_left_at_death_s']:.2f}",
                f"{taken['first_taken_over_s']:.2f}",
                f"{taken['takeover_s']:.2f}",
                ",".join(str(a) for a in taken["attempts"]),
            ]
        )
        lease_report.data.append({"backend": backend, **taken})
    rate.notes.append(
        f"worker defaults: {WorkerSettings()}; rate = jobs / (workers started → all done)."
    )
    lease_report.notes.append(
        "the dying worker is cancelled with drain_seconds=0: its jobs and heartbeats stop "
        "without an outcome (as after kill -9); expected takeover = lease left + ≤ 1 poll."
    )
    return [rate, lease_report]
