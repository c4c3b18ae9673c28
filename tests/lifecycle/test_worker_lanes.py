"""The worker's lanes: a backlog in one lane leaves slots to the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from lifecycle.jobs import LEASE, make_worker
from lifecycle.world import eventually
from sessiongate.lifecycle.worker import Worker, WorkerSettings, lane_of
from sessiongate.models import Job, JobState
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock, new_job


class SlowLane:
    """A handler that holds its slot until released, counting how many hold one at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0
        self.most = 0
        self.started = 0

    async def __call__(self, job: Job) -> None:
        self.started += 1
        self.holding += 1
        self.most = max(self.most, self.holding)
        try:
            await self.release.wait()
        finally:
            self.holding -= 1


class CountingClaims:
    """Forwards to a store, counting the claims."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def claim_jobs(self, owner: str, **kwargs: Any) -> list[Job]:
        self.claims += 1
        return await self._inner.claim_jobs(owner, **kwargs)


@asynccontextmanager
async def _running(worker: Worker, slow: SlowLane) -> AsyncIterator[None]:
    """The worker at work in the block; stopped (the slow lane released) after it."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        slow.release.set()
        stop.set()
        await asyncio.wait_for(task, 5)


async def _all_done(store: Store, kind: str, count: int) -> None:
    async def done() -> bool:
        return len(await store.list_jobs(kind=kind, state=JobState.DONE)) == count

    await eventually(done, what=f"the {count} {kind} jobs, once released")


@pytest.mark.parametrize(
    ("ordering_key", "lane"),
    [
        ("memory:openviking:s-1", "memory:openviking:"),
        ("events:s-1", "events:"),
        ("plain", None),
        (None, None),
    ],
)
def test_a_jobs_lane_is_its_ordering_key_without_the_session(
    ordering_key: str | None, lane: str | None
) -> None:
    assert lane_of(ordering_key) == lane


async def test_a_lane_with_a_backlog_leaves_slots_to_the_others(
    store: Store, clock: FakeClock
) -> None:
    slow = SlowLane()
    ran: list[str] = []

    async def quick(job: Job) -> None:
        ran.append(job.idempotency_key)

    backlog = [
        new_job(f"slow-{n}", kind="slow", ordering_key=f"memory:slow:s-{n}") for n in range(12)
    ]
    others = [
        new_job(f"local-{n}", kind="quick", ordering_key=f"memory:local:s-{n}") for n in range(3)
    ]
    others += [
        new_job("event", kind="quick", ordering_key="events:s-0"),
        new_job("free", kind="quick"),
    ]
    await store.enqueue(backlog + others, at=clock.now())  # the backlog is older: first in line
    settings = WorkerSettings(concurrency=4, lease_seconds=LEASE)
    worker = make_worker(store, clock, {"slow": slow, "quick": quick}, owner="w", settings=settings)
    async with _running(worker, slow):

        async def others_done() -> bool:
            return len(ran) == len(others)

        await eventually(others_done, what="the other lanes' jobs, beside the backlog")
        assert slow.holding == 2  # half of the slots, held all along
        slow.release.set()
        await _all_done(store, "slow", len(backlog))
    assert sorted(ran) == sorted(job.idempotency_key for job in others)
    assert slow.most == 2
    assert slow.started == len(backlog)


async def test_a_worker_whose_due_jobs_are_all_held_back_sleeps(
    store: Store, clock: FakeClock
) -> None:
    slow = SlowLane()
    backlog = [
        new_job(f"slow-{n}", kind="slow", ordering_key=f"memory:slow:s-{n}") for n in range(6)
    ]
    await store.enqueue(backlog, at=clock.now())
    counting = CountingClaims(store)
    settings = WorkerSettings(concurrency=4, lane_slots=3, lease_seconds=LEASE)
    worker = make_worker(cast(Store, counting), clock, {"slow": slow}, owner="w", settings=settings)
    # The fake clock never moves: only a finished job (or a wake-up) ends the idle sleep.
    async with _running(worker, slow):

        async def lane_full() -> bool:
            return slow.holding == 3

        await eventually(lane_full, what="the lane's three slots taken")
        claims = counting.claims
        await asyncio.sleep(0.3)
        assert counting.claims == claims, "it kept claiming while only held-back jobs were due"
        slow.release.set()
        await _all_done(store, "slow", len(backlog))
    assert slow.most == 3
