"""Job lanes: how long other jobs wait while one memory provider works off a backlog.

One `Worker` (the real `SystemClock`, 8 slots) on a fresh SQLite store. First
`--backlog` jobs of one provider's lane (`memory:slow:<session>`) are enqueued:
their handler takes `--slow-ms` behind a limit of 4 calls at once, as a provider
behind its guard does (OpenViking's limit is 4). Right after them come `--others`
quick jobs of other lanes (another provider's commits, hook events; 5 ms each).
As many quick jobs again arrive `--late` seconds later, when the backlog holds
every slot (no other lane had work). The figures are the wait of each quick job,
from its enqueue to its end, for both groups, and the time to work off the
backlog. It is measured with `workers.lane_slots` at its default (half the
slots) and at 8 (one lane may take every slot: how the worker ran before lanes),
alternately, `--rounds` times each.

The price: `--drain` sessions' end jobs at once (a hook event and two local memory
commits each, 2 ms apiece), drained by the same worker with and without lanes;
jobs per second. Usage:

    uv run python bench/job_lanes.py [--backlog 200] [--others 40] [--late 2] [--drain 3000]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lifecycle_support import outbox_idle, wait_for
from sessiongate.clock import SystemClock, system_random
from sessiongate.lifecycle.worker import JobHandler, Worker, WorkerSettings
from sessiongate.models import Job, JobState, NewJob
from sessiongate.retry import RetryPolicies
from sessiongate.store import Store, open_store

CONCURRENCY = 8
PROVIDER_LIMIT = 4


@dataclass
class Round:
    """The figures of one run of the scenario."""

    lane_slots: int
    others_p50_s: float
    others_max_s: float
    late_p50_s: float
    late_max_s: float
    backlog_s: float


async def one_round(workdir: Path, lane_slots: int, args: argparse.Namespace) -> Round:
    """Run the scenario once on a fresh store; its figures."""
    store = await open_store(f"sqlite:///{workdir / f'lanes-{lane_slots}-{time.time_ns()}.db'}")
    guard = asyncio.Semaphore(PROVIDER_LIMIT)
    enqueued: dict[str, float] = {}
    waits: dict[str, float] = {}

    async def slow(job: Job) -> None:
        async with guard:
            await asyncio.sleep(args.slow_ms / 1000)

    async def quick(job: Job) -> None:
        await asyncio.sleep(0.005)
        waits[job.idempotency_key] = time.perf_counter() - enqueued[job.idempotency_key]

    clock = SystemClock()
    backlog = [
        NewJob(kind="slow", idempotency_key=f"slow-{n}", ordering_key=f"memory:slow:s-{n}")
        for n in range(args.backlog)
    ]
    others = _quick_jobs("quick", args.others)
    late = _quick_jobs("late", args.others)
    await store.enqueue(backlog, at=clock.now())
    started = time.perf_counter()
    await store.enqueue(others, at=clock.now())
    for job in others:
        enqueued[job.idempotency_key] = started
    worker = _worker(store, {"slow": slow, "quick": quick}, lane_slots)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(args.late)
    arrived = time.perf_counter()
    await store.enqueue(late, at=clock.now())
    for job in late:
        enqueued[job.idempotency_key] = arrived
    worker.wake()
    drained = await wait_for(lambda: outbox_idle(store), within=3600)
    backlog_s = time.perf_counter() - started
    stop.set()
    await task
    total = args.backlog + 2 * args.others
    done = await store.list_jobs(state=JobState.DONE, limit=total + 1)
    assert drained, "the outbox did not drain"
    assert len(done) == total, "every job must be done"
    await store.close()
    first = [waits[job.idempotency_key] for job in others]
    then = [waits[job.idempotency_key] for job in late]
    return Round(
        lane_slots,
        statistics.median(first),
        max(first),
        statistics.median(then),
        max(then),
        backlog_s,
    )


async def drain_round(workdir: Path, lane_slots: int, sessions: int) -> float:
    """Jobs per second draining `sessions` sessions' end jobs, two lanes, at once."""
    store = await open_store(f"sqlite:///{workdir / f'drain-{lane_slots}-{time.time_ns()}.db'}")
    clock = SystemClock()
    jobs: list[NewJob] = []
    for n in range(sessions):
        jobs.append(NewJob(kind="work", idempotency_key=f"e{n}", ordering_key=f"events:s{n}"))
        for step in (1, 2):
            key = f"m{step}-{n}"
            jobs.append(NewJob(kind="work", idempotency_key=key, ordering_key=f"memory:local:s{n}"))
    for start in range(0, len(jobs), 500):
        await store.enqueue(jobs[start : start + 500], at=clock.now())

    async def work(job: Job) -> None:
        await asyncio.sleep(0.002)

    worker = _worker(store, {"work": work}, lane_slots)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    drained = await wait_for(lambda: outbox_idle(store), within=3600)
    rate = len(jobs) / (time.perf_counter() - started)
    stop.set()
    await task
    await store.close()
    assert drained, "the outbox did not drain"
    return rate


def _worker(store: Store, handlers: Mapping[str, JobHandler], lane_slots: int) -> Worker:
    return Worker(
        store,
        handlers,
        owner="bench",
        clock=SystemClock(),
        rand=system_random(),
        retry=RetryPolicies(),
        settings=WorkerSettings(concurrency=CONCURRENCY, lane_slots=lane_slots, poll_seconds=1),
    )


def _quick_jobs(prefix: str, count: int) -> list[NewJob]:
    """Quick jobs of other lanes: another provider's commits and hook events, by turns."""
    return [
        NewJob(
            kind="quick",
            idempotency_key=f"{prefix}-{n}",
            ordering_key=f"memory:local:{prefix}-{n}" if n % 2 else f"events:{prefix}-{n}",
        )
        for n in range(count)
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=200, help="jobs of the slow lane")
    parser.add_argument("--others", type=int, default=40, help="quick jobs of other lanes")
    parser.add_argument("--slow-ms", type=float, default=250.0, help="one slow call")
    parser.add_argument("--late", type=float, default=2.0, help="seconds until the late group")
    parser.add_argument("--drain", type=int, default=3000, help="sessions' end jobs to drain")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rounds: list[Round] = []
    drains: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="sessiongate-lanes-") as scratch:
        for _ in range(args.rounds):
            for lane_slots in (CONCURRENCY, CONCURRENCY // 2):
                result = await one_round(Path(scratch), lane_slots, args)
                rounds.append(result)
                print(
                    f"lane_slots={result.lane_slots}: other jobs waited p50 "
                    f"{result.others_p50_s:.3f} s, max {result.others_max_s:.3f} s; "
                    f"late ones p50 {result.late_p50_s:.3f} s, max {result.late_max_s:.3f} s; "
                    f"backlog worked off in {result.backlog_s:.2f} s",
                    flush=True,
                )
        for _ in range(args.rounds):
            for lane_slots in (CONCURRENCY, CONCURRENCY // 2):
                rate = await drain_round(Path(scratch), lane_slots, args.drain)
                drains.append((lane_slots, rate))
                print(f"lane_slots={lane_slots}: drained {rate:,.0f} jobs/s", flush=True)
    if args.json:
        figures = {"rounds": [asdict(r) for r in rounds], "drains": drains}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
