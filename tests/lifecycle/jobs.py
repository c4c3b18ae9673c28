"""Helpers of the worker tests: a worker with exact backoff, job lookups, a gated handler."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from lifecycle.world import FAST_RETRY, HalfRandom
from sessiongate.lifecycle.worker import JobHandler, Worker, WorkerSettings
from sessiongate.models import Job
from sessiongate.retry import RetryPolicies
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock, new_job

LEASE = 30.0


def make_worker(
    store: Store,
    clock: FakeClock,
    handlers: Mapping[str, JobHandler],
    *,
    owner: str,
    retry: RetryPolicies = FAST_RETRY,
    settings: WorkerSettings | None = None,
) -> Worker:
    """A worker with a `LEASE`-second lease whose backoff delays are exact (random() = 0.5)."""
    return Worker(
        store,
        handlers,
        owner=owner,
        clock=clock,
        rand=HalfRandom(),
        retry=retry,
        settings=settings or WorkerSettings(lease_seconds=LEASE),
    )


async def get_job(store: Store, job_id: int) -> Job:
    """The job, which must exist."""
    job = await store.get_job(job_id)
    assert job is not None
    return job


async def enqueue(store: Store, clock: FakeClock, key: str, kind: str = "work") -> int:
    """Enqueue one job due now; return its id."""
    [job_id] = await store.enqueue([new_job(key, kind=kind)], at=clock.now())
    return job_id


class Gate:
    """A handler that signals it started and then waits to be released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.started.set()
        await self.release.wait()
