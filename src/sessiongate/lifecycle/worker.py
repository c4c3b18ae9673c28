"""The outbox worker: claim due jobs with leases, run them, persist the outcome.

A job is held under a lease that a heartbeat keeps alive; the outcome is
recorded only with the fencing token of the claim, so a worker that lost its
lease (paused, partitioned) cannot overwrite the outcome of the one that took
the job over. Retry decisions come from a pure `RetryPolicies`; the worker only
persists them. A job that exhausts its policy becomes a dead letter.

Jobs fall into lanes by their ordering key (`lane_of`: one memory provider's
jobs, the hook events). A lane that holds `lane_slots` of the worker's slots
is passed over while another lane has a job due: a provider working off a
backlog after an outage takes the slots nobody else needs, and a job of
another provider or of the hooks gets the next slot that frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sessiongate.clock import Clock, RandomSource, sleep_unless
from sessiongate.errors import PermanentFailure
from sessiongate.logs import about_session
from sessiongate.models import Job
from sessiongate.retry import GiveUp, RetryPolicies
from sessiongate.store.base import Store

log = logging.getLogger(__name__)

JobHandler = Callable[[Job], Awaitable[None]]


def lane_of(ordering_key: str | None) -> str | None:
    """The lane of a job: its ordering key up to and with the last `:` (None: no lane).

    `memory:openviking:<session>` is in lane `memory:openviking:`, `events:<session>`
    in `events:`; a key without `:` is in no lane.
    """
    if ordering_key is None:
        return None
    head, colon, _ = ordering_key.rpartition(":")
    return head + colon if colon else None


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker claims and holds jobs."""

    concurrency: int = 8
    # A lane's share: holding this many slots, it is passed over while another lane has
    # a job due. None: half of `concurrency` (at least one).
    lane_slots: int | None = None
    lease_seconds: float = 30.0
    # Upper bound of an idle sleep: other replicas' jobs are seen at least this often.
    poll_seconds: float = 1.0
    drain_seconds: float = 10.0


class Worker:
    """Runs outbox jobs through the handler registered for their kind."""

    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, JobHandler],
        *,
        owner: str,
        clock: Clock,
        rand: RandomSource,
        retry: RetryPolicies,
        settings: WorkerSettings | None = None,
    ) -> None:
        self._store = store
        self._handlers = dict(handlers)
        self._owner = owner
        self._clock = clock
        self._rand = rand
        self._retry = retry
        self._settings = settings or WorkerSettings()
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], str | None] = {}
        # When a claim passing over the lanes at their share last found nothing else due.
        self._others_idle_at: datetime | None = None
        slots = self._settings.lane_slots
        self._lane_slots = max(1, self._settings.concurrency // 2 if slots is None else slots)

    @property
    def owner(self) -> str:
        return self._owner

    def wake(self) -> None:
        """Look for due jobs now (called when this process enqueued something)."""
        self._others_idle_at = None  # what was enqueued may be another lane's
        self._wake.set()

    async def run_once(self) -> int:
        """Claim what is due now, run it to completion, and return how many ran."""
        jobs = await self._claim(self._settings.concurrency)
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then drain in-flight jobs within `drain_seconds`.

        Jobs still running after the drain are cancelled; their leases expire and
        another worker (or this one after a restart) takes them over.
        """
        try:
            while not stop.is_set():
                # Cleared before the claim, not after: a job that ends or arrives from
                # here on must cut the coming sleep short, not be lost.
                self._wake.clear()
                limit, full = self._room()
                claimed = await self._claim(limit, skip_lanes=full) if limit > 0 else []
                more: list[Job] = []
                free = self._settings.concurrency - len(self._running) - len(claimed)
                if full and len(claimed) < limit:
                    self._others_idle_at = self._clock.now()
                    if free > 0:
                        # Nobody else has a job due: the lanes at their share take the rest.
                        more = await self._claim(free)
                for job in claimed + more:
                    self._start(job)
                if (claimed and len(claimed) == limit) or (more and len(more) == free):
                    continue  # there may be more due
                await self._idle(stop)
        finally:
            await self._drain()

    def _room(self) -> tuple[int, list[str]]:
        """How many jobs to claim, and the lanes to pass over (they hold their share).

        After a look found no other lane with a job due, the lanes are not passed over
        again until a wake-up (a job enqueued here) or a poll later (one enqueued by
        another replica): passing over a lane means reading past its backlog.
        """
        free = self._settings.concurrency - len(self._running)
        if self._others_idle():
            return free, []
        held = Counter(lane for lane in self._running.values() if lane is not None)
        return free, [lane for lane, slots in held.items() if slots >= self._lane_slots]

    def _others_idle(self) -> bool:
        """Whether no other lane had a job due when last looked, within a poll or a wake-up."""
        seen = self._others_idle_at
        if seen is None:
            return False
        if (self._clock.now() - seen).total_seconds() < self._settings.poll_seconds:
            return True
        self._others_idle_at = None
        return False

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._running[task] = lane_of(job.ordering_key)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        delay = self._settings.poll_seconds
        due = await self._store.next_job_due()
        if due is not None:
            delay = min(delay, max(0.0, (due - self._clock.now()).total_seconds()))
        if delay <= 0 and len(self._running) >= self._settings.concurrency:
            delay = self._settings.poll_seconds
        await sleep_unless(self._clock, delay, self._wake, stop)

    async def _drain(self) -> None:
        if not self._running:
            return
        _done, pending = await asyncio.wait(
            list(self._running), timeout=self._settings.drain_seconds
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("shutdown left %d jobs to lease expiry", len(pending))

    async def _claim(self, limit: int, *, skip_lanes: Sequence[str] = ()) -> list[Job]:
        return await self._store.claim_jobs(
            self._owner,
            at=self._clock.now(),
            lease_seconds=self._settings.lease_seconds,
            limit=limit,
            skip_lanes=skip_lanes,
        )

    async def _run(self, job: Job) -> None:
        with about_session(job.session_id):
            await self._execute(job)

    async def _execute(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        heartbeat = asyncio.create_task(self._heartbeat(job))
        error: str | None = None
        permanent = False
        try:
            if handler is None:
                error, permanent = f"no handler is registered for job kind {job.kind!r}", True
            else:
                await handler(job)
        except asyncio.CancelledError:
            raise
        except PermanentFailure as exc:
            error, permanent = f"{type(exc).__name__}: {exc}", True
        except Exception as exc:  # noqa: BLE001 - isolation point: a job never stops the worker
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "job %s (%s) failed for session %s: %s", job.id, job.kind, job.session_id, error
            )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._record(job, error, permanent=permanent)

    async def _record(self, job: Job, error: str | None, *, permanent: bool) -> None:
        now = self._clock.now()
        token = job.fencing_token
        if error is None:
            kept = await self._store.complete_job(job.id, token, at=now)
        else:
            decision = self._retry.for_kind(job.kind).decide(
                job.attempts, job.created_at, now, self._rand
            )
            if permanent or isinstance(decision, GiveUp):
                reason = "permanent failure"
                if not permanent and isinstance(decision, GiveUp):
                    reason = decision.reason
                kept = await self._store.bury_job(
                    job.id, token, error=f"{error} ({reason})", at=now
                )
                log.error(
                    "job %s (%s) of session %s is dead: %s", job.id, job.kind, job.session_id, error
                )
            else:
                kept = await self._store.retry_job(
                    job.id, token, run_after=decision.at, error=error, at=now
                )
        if not kept:
            log.warning("job %s lost its lease before its outcome was recorded", job.id)

    async def _heartbeat(self, job: Job) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await self._clock.sleep(interval)
            try:
                held = await self._store.heartbeat(
                    job.id,
                    job.fencing_token,
                    at=self._clock.now(),
                    lease_seconds=self._settings.lease_seconds,
                )
            except Exception:
                # Isolation point: a store hiccup must neither end the heartbeat (the
                # lease would lapse under a live job) nor replace the job's outcome.
                log.warning(
                    "heartbeat of job %s (session %s) failed; trying again in %.1fs",
                    job.id,
                    job.session_id,
                    interval,
                    exc_info=True,
                )
                continue
            if not held:
                log.warning("job %s lost its lease (session %s)", job.id, job.session_id)
                return
