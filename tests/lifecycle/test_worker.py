"""The outbox worker: leases, heartbeats, fencing, clean shutdown, isolation of failures."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from lifecycle.jobs import LEASE, Gate, enqueue, get_job, make_worker
from lifecycle.world import eventually
from sessiongate.errors import StoreUnavailable
from sessiongate.lifecycle.worker import Worker, WorkerSettings
from sessiongate.models import Job, JobState
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock, new_job

# -- leases, fencing, heartbeat ------------------------------------------------------


async def test_a_dead_workers_job_is_reclaimed_after_its_lease_and_its_late_outcome_refused(
    store: Store, clock: FakeClock
) -> None:
    job_id = await enqueue(store, clock, "job-1")
    [dead] = await store.claim_jobs("dead", at=clock.now(), lease_seconds=LEASE)
    tokens: list[int] = []

    async def work(job: Job) -> None:
        tokens.append(job.fencing_token)

    survivor = make_worker(store, clock, {"work": work}, owner="survivor")
    assert await survivor.run_once() == 0
    clock.advance(LEASE - 0.001)
    assert await survivor.run_once() == 0
    clock.advance(0.001)
    assert await survivor.run_once() == 1
    assert tokens == [dead.fencing_token + 1]
    job = await get_job(store, job_id)
    assert (job.state, job.attempts, job.lease_owner) == (JobState.DONE, 2, None)

    # The dead worker comes back and reports: every outcome with its old token is refused.
    at = clock.now()
    assert not await store.complete_job(job_id, dead.fencing_token, at=at)
    assert not await store.retry_job(job_id, dead.fencing_token, run_after=at, error="x", at=at)
    assert not await store.bury_job(job_id, dead.fencing_token, error="late", at=at)
    assert not await store.heartbeat(job_id, dead.fencing_token, at=at, lease_seconds=LEASE)
    assert await get_job(store, job_id) == job
    assert await store.dead_letters() == []


async def test_a_paused_worker_cannot_overwrite_its_successors_outcome(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = await enqueue(store, clock, "job-1")
    gate = Gate()

    async def stalled(job: Job) -> None:
        await gate(job)
        raise RuntimeError("woke up too late")

    # A paused process: its own clock stands still, so it never heartbeats.
    paused = make_worker(store, FakeClock(clock.now()), {"work": stalled}, owner="paused")
    task = asyncio.create_task(paused.run_once())
    await asyncio.wait_for(gate.started.wait(), 5)
    clock.advance(LEASE + 1)
    finished: list[int] = []

    async def work(job: Job) -> None:
        finished.append(job.id)

    assert await make_worker(store, clock, {"work": work}, owner="successor").run_once() == 1
    with caplog.at_level(logging.WARNING, logger="sessiongate.lifecycle.worker"):
        gate.release.set()
        assert await asyncio.wait_for(task, 5) == 1
    job = await get_job(store, job_id)
    assert finished == [job_id]
    assert (job.state, job.last_error, job.fencing_token) == (JobState.DONE, None, 2)
    assert "lost its lease" in caplog.text


async def test_a_heartbeat_keeps_a_long_jobs_lease(store: Store, clock: FakeClock) -> None:
    job_id = await enqueue(store, clock, "job-1")
    gate = Gate()
    holder = make_worker(store, clock, {"work": gate}, owner="holder")
    rival = make_worker(store, clock, {"work": gate}, owner="rival")
    task = asyncio.create_task(holder.run_once())
    await asyncio.wait_for(gate.started.wait(), 5)
    await asyncio.sleep(0.01)

    async def extended() -> bool:
        job = await get_job(store, job_id)
        return job.lease_expires_at == clock.now() + timedelta(seconds=LEASE)

    for _ in range(9):  # three times the lease
        clock.advance(LEASE / 3)
        await eventually(extended, what="the heartbeat's extension")
        assert await rival.run_once() == 0
    gate.release.set()
    assert await asyncio.wait_for(task, 5) == 1
    job = await get_job(store, job_id)
    assert (job.state, job.attempts, job.fencing_token) == (JobState.DONE, 1, 1)


class HiccupStore:
    """Forwards to a store; the first heartbeat fails as a dropped connection would."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.failures = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def heartbeat(
        self, job_id: int, token: int, *, at: datetime, lease_seconds: float
    ) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection reset by peer")
        return await self._inner.heartbeat(job_id, token, at=at, lease_seconds=lease_seconds)


async def test_a_store_hiccup_in_a_heartbeat_neither_loses_the_lease_nor_the_outcome(
    store: Store, clock: FakeClock
) -> None:
    job_id = await enqueue(store, clock, "job-1")
    gate = Gate()
    flaky = HiccupStore(store)
    worker = make_worker(cast(Store, flaky), clock, {"work": gate}, owner="holder")
    task = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(gate.started.wait(), 5)
    await asyncio.sleep(0.01)
    clock.advance(LEASE / 3)

    async def failed_once() -> bool:
        return flaky.failures == 0

    await eventually(failed_once, what="the failing heartbeat")
    await asyncio.sleep(0.01)
    clock.advance(LEASE / 3)

    async def extended() -> bool:
        job = await get_job(store, job_id)
        return job.lease_expires_at == clock.now() + timedelta(seconds=LEASE)

    await eventually(extended, what="the next heartbeat's extension")
    gate.release.set()
    assert await asyncio.wait_for(task, 5) == 1
    assert (await get_job(store, job_id)).state is JobState.DONE


# -- running and stopping ----------------------------------------------------------------


async def test_shutdown_waits_for_a_job_that_ends_within_the_drain_bound(
    store: Store, clock: FakeClock
) -> None:
    started = asyncio.Event()

    async def brief(job: Job) -> None:
        started.set()
        await asyncio.sleep(0.05)

    job_id = await enqueue(store, clock, "job-1")
    settings = WorkerSettings(lease_seconds=LEASE, drain_seconds=5.0)
    worker = make_worker(store, clock, {"work": brief}, owner="w", settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert (await get_job(store, job_id)).state is JobState.DONE


async def test_shutdown_cancels_a_handler_slower_than_the_bound_and_its_job_resumes_later(
    store: Store, clock: FakeClock
) -> None:
    started = asyncio.Event()
    cancelled: list[int] = []

    async def stuck(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    job_id = await enqueue(store, clock, "job-1")
    settings = WorkerSettings(lease_seconds=LEASE, drain_seconds=0.1)
    first = make_worker(store, clock, {"work": stuck}, owner="first", settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert 0.09 <= loop.time() - stopped_at < 2.0
    assert cancelled == [job_id]
    left = await get_job(store, job_id)
    assert (left.state, left.lease_owner) == (JobState.RUNNING, "first")

    finished: list[int] = []

    async def quick(job: Job) -> None:
        finished.append(job.id)

    successor = make_worker(store, clock, {"work": quick}, owner="successor")
    assert await successor.run_once() == 0
    clock.advance(LEASE)
    assert await successor.run_once() == 1
    assert finished == [job_id]
    done = await get_job(store, job_id)
    assert (done.state, done.attempts) == (JobState.DONE, 2)


async def test_a_failing_handler_never_stops_the_worker(store: Store, clock: FakeClock) -> None:
    ran: list[str] = []

    async def boom(job: Job) -> None:
        raise RuntimeError("handler bug")

    async def fine(job: Job) -> None:
        ran.append(job.idempotency_key)

    jobs = [
        new_job("boom-1", kind="boom"),
        new_job("ok-1", kind="ok"),
        new_job("boom-2", kind="boom"),
    ]
    jobs += [new_job("ok-2", kind="ok"), new_job("ok-3", kind="ok")]
    await store.enqueue(jobs, at=clock.now())
    settings = WorkerSettings(lease_seconds=LEASE, concurrency=2)
    worker = make_worker(store, clock, {"boom": boom, "ok": fine}, owner="w", settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def ran_all(count: int) -> bool:
        return len(ran) == count

    await eventually(lambda: ran_all(3), what="the healthy jobs")
    assert not task.done()
    await store.enqueue([new_job("ok-4", kind="ok")], at=clock.now())
    worker.wake()
    await eventually(lambda: ran_all(4), what="a job enqueued after the failures")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(ran) == ["ok-1", "ok-2", "ok-3", "ok-4"]
    for failed in await store.list_jobs(kind="boom"):
        assert (failed.state, failed.attempts) == (JobState.PENDING, 1)
        assert failed.last_error == "RuntimeError: handler bug"


class WakeDuringRead:
    """Forwards to a store; while the worker reads its next due time, a job arrives."""

    def __init__(self, inner: Store, clock: FakeClock) -> None:
        self._inner = inner
        self._clock = clock
        self.worker: Worker | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def next_job_due(self) -> datetime | None:
        due = await self._inner.next_job_due()
        if self.worker is not None:
            worker, self.worker = self.worker, None
            await self._inner.enqueue([new_job("late", kind="ok")], at=self._clock.now())
            worker.wake()
        return due  # read before the job arrived


async def test_a_wake_up_during_the_idle_read_is_not_lost(store: Store, clock: FakeClock) -> None:
    ran: list[str] = []

    async def fine(job: Job) -> None:
        ran.append(job.idempotency_key)

    racy = WakeDuringRead(store, clock)
    worker = make_worker(cast(Store, racy), clock, {"ok": fine}, owner="w")
    racy.worker = worker
    stop = asyncio.Event()
    # The fake clock never moves: only the wake-up can end the idle sleep.
    task = asyncio.create_task(worker.run(stop))
    try:

        async def ran_late() -> bool:
            return ran == ["late"]

        await eventually(ran_late, within=3.0, what="the job announced during the read")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
