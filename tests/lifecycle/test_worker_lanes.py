"""The worker's lanes: a lane at its share leaves the next free slot to the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from lifecycle.jobs import LEASE, make_worker
from lifecycle.world import eventually
from sessiongate.lifecycle.worker import Worker, WorkerSettings, lane_of
from sessiongate.models import Job, JobState, NewJob
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock, new_job


class SlowLane:
    """A handler that holds its slot until let go (one at a time, or all), counting holders."""

    def __init__(self) -> None:
        self._go = asyncio.Semaphore(0)
        self._all = asyncio.Event()
        self.holding = 0
        self.most = 0
        self.started = 0

    def let_one_go(self) -> None:
        self._go.release()

    def let_all_go(self) -> None:
        self._all.set()

    async def __call__(self, job: Job) -> None:
        self.started += 1
        self.holding += 1
        self.most = max(self.most, self.holding)
        try:
            one = asyncio.ensure_future(self._go.acquire())
            every = asyncio.ensure_future(self._all.wait())
            _, pending = await asyncio.wait([one, every], return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
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
    """The worker at work in the block; stopped (the slow lane let go) after it."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        slow.let_all_go()
        stop.set()
        await asyncio.wait_for(task, 5)


async def _until(what: str, check: Any) -> None:
    async def holds() -> bool:
        return bool(check())

    await eventually(holds, what=what)


async def _all_done(store: Store, kind: str, count: int) -> None:
    async def done() -> bool:
        return len(await store.list_jobs(kind=kind, state=JobState.DONE)) == count

    await eventually(done, what=f"the {count} {kind} jobs, once let go")


def _backlog(count: int) -> list[NewJob]:
    return [
        new_job(f"slow-{n}", kind="slow", ordering_key=f"memory:slow:s-{n}") for n in range(count)
    ]


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
    backlog_started_before: dict[str, int] = {}

    async def quick(job: Job) -> None:
        ran.append(job.idempotency_key)
        backlog_started_before[job.idempotency_key] = slow.started

    backlog = _backlog(12)
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
        # The oldest jobs first: the backlog takes every slot before anything else is seen.
        await _until("the backlog in every slot", lambda: slow.holding == 4)
        slow.let_one_go()
        await _until("the other lanes' jobs, through the slot freed", lambda: len(ran) == 5)
        # The backlog, past its share, never took that slot back while others were due.
        assert set(backlog_started_before.values()) == {4}
        await _until("the backlog in the slot nobody else needs", lambda: slow.holding == 4)

        # Every slot is the backlog's now; a job of another lane takes the next one freed.
        await store.enqueue(
            [new_job("late", kind="quick", ordering_key="events:s-9")], at=clock.now()
        )
        worker.wake()
        started = slow.started
        slow.let_one_go()
        await _until("the late job in the freed slot", lambda: "late" in ran)
        assert backlog_started_before["late"] == started  # the backlog did not take it first
        await _until("the backlog back in every slot", lambda: slow.holding == 4)
        slow.let_all_go()
        await _all_done(store, "slow", len(backlog))
    assert sorted(ran) == sorted([job.idempotency_key for job in others] + ["late"])
    assert slow.most == 4
    assert slow.started == len(backlog)


async def test_a_lane_alone_takes_every_slot_and_the_worker_then_sleeps(
    store: Store, clock: FakeClock
) -> None:
    slow = SlowLane()
    backlog = _backlog(6)
    await store.enqueue(backlog, at=clock.now())
    counting = CountingClaims(store)
    settings = WorkerSettings(concurrency=4, lane_slots=2, lease_seconds=LEASE)
    worker = make_worker(cast(Store, counting), clock, {"slow": slow}, owner="w", settings=settings)
    # The fake clock never moves: only a finished job (or a wake-up) ends the idle sleep.
    async with _running(worker, slow):
        await _until("every slot taken by the only lane with work", lambda: slow.holding == 4)
        claims = counting.claims
        await asyncio.sleep(0.3)
        assert counting.claims == claims, "it kept claiming with every slot taken"
        slow.let_all_go()
        await _all_done(store, "slow", len(backlog))
    assert slow.most == 4
