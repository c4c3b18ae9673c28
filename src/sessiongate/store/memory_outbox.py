"""The outbox half of the memory store: jobs, leases, fencing tokens, dead letters."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from sessiongate.errors import Conflict, StoreUnavailable
from sessiongate.models import DeadLetter, Job, JobState, NewJob, OutboxStats
from sessiongate.store import intake
from sessiongate.validation import storable


def lease_live(expires: datetime | None, at: datetime) -> bool:
    """A lease is live while `at` is before its expiry."""
    return expires is not None and at < expires


class MemoryOutbox:
    """`Outbox` over plain dicts, with the lock every memory operation holds."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._closed = False
        self._jobs: dict[int, Job] = {}
        self._job_ids: dict[str, int] = {}  # idempotency key -> job id
        self._unfinished: set[int] = set()  # ids of jobs not `done`
        self._last_job_id = 0
        self._dead: dict[int, DeadLetter] = {}

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        """One transaction: the store's lock, held for the whole operation."""
        async with self._lock:
            if self._closed:
                raise StoreUnavailable("the memory store is closed; open a new one")
            yield

    def _finalize_if_done(self, session_id: str) -> None:
        """A gating job of `session_id` finished; the sessions' side may finalize it."""

    async def enqueue(self, jobs: Sequence[NewJob], *, at: datetime) -> list[int]:
        """See `Outbox.enqueue`."""
        async with self._open():
            at = intake.utc(at, "enqueue time")
            return self._put_jobs(intake.jobs_to_enqueue(jobs), at)

    async def claim_jobs(
        self,
        owner: str,
        *,
        at: datetime,
        lease_seconds: float,
        limit: int = 1,
        kinds: Sequence[str] | None = None,
        skip_lanes: Sequence[str] = (),
    ) -> list[Job]:
        """See `Outbox.claim_jobs`."""
        async with self._open():
            at = intake.utc(at, "claim time")
            expires = at + timedelta(seconds=lease_seconds)
            wanted = None if kinds is None else set(kinds)
            candidates = [
                job
                for job in self._runnable()
                if (wanted is None or job.kind in wanted)
                and not _in_lanes(job.ordering_key, skip_lanes)
                and (
                    (job.state is JobState.PENDING and job.run_after <= at)
                    or (job.state is JobState.RUNNING and not lease_live(job.lease_expires_at, at))
                )
            ]
            candidates.sort(key=lambda job: (job.run_after, job.id))
            claimed: list[Job] = []
            for job in candidates[: max(limit, 0)]:
                held = replace(
                    job,
                    state=JobState.RUNNING,
                    lease_owner=owner,
                    lease_expires_at=expires,
                    attempts=job.attempts + 1,
                    fencing_token=job.fencing_token + 1,
                    updated_at=at,
                )
                self._jobs[job.id] = held
                claimed.append(_job_copy(held))
            return claimed

    async def heartbeat(
        self, job_id: int, token: int, *, at: datetime, lease_seconds: float
    ) -> bool:
        """See `Outbox.heartbeat`."""
        async with self._open():
            at = intake.utc(at, "heartbeat time")
            job = self._held(job_id, token)
            if job is None:
                return False
            expires = at + timedelta(seconds=lease_seconds)
            self._jobs[job_id] = replace(job, lease_expires_at=expires, updated_at=at)
            return True

    async def complete_job(self, job_id: int, token: int, *, at: datetime) -> bool:
        """See `Outbox.complete_job`."""
        async with self._open():
            at = intake.utc(at, "completion time")
            job = self._held(job_id, token)
            if job is None:
                return False
            self._jobs[job_id] = _released(job, JobState.DONE, at)
            self._unfinished.discard(job_id)
            if job.gates_finalize and job.session_id is not None:
                self._finalize_if_done(job.session_id)
            return True

    async def retry_job(
        self, job_id: int, token: int, *, run_after: datetime, error: str, at: datetime
    ) -> bool:
        """See `Outbox.retry_job`."""
        async with self._open():
            at = intake.utc(at, "retry time")
            run_after = intake.utc(run_after, "run_after")
            job = self._held(job_id, token)
            if job is None:
                return False
            pending = _released(job, JobState.PENDING, at)
            self._jobs[job_id] = replace(pending, run_after=run_after, last_error=storable(error))
            return True

    async def bury_job(self, job_id: int, token: int, *, error: str, at: datetime) -> bool:
        """See `Outbox.bury_job`."""
        async with self._open():
            at = intake.utc(at, "burial time")
            job = self._held(job_id, token)
            if job is None:
                return False
            dead = replace(_released(job, JobState.DEAD, at), last_error=storable(error))
            self._jobs[job_id] = dead
            self._dead[job_id] = DeadLetter(
                job_id=job_id,
                kind=dead.kind,
                idempotency_key=dead.idempotency_key,
                payload=dead.payload,
                attempts=dead.attempts,
                last_error=storable(error),
                died_at=at,
                session_id=dead.session_id,
            )
            return True

    async def get_job(self, job_id: int) -> Job | None:
        """See `Outbox.get_job`."""
        async with self._open():
            job = self._jobs.get(job_id)
            return None if job is None else _job_copy(job)

    async def list_jobs(
        self,
        *,
        session_id: str | None = None,
        state: JobState | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """See `Outbox.list_jobs`."""
        async with self._open():
            found: list[Job] = []
            for job_id in sorted(self._jobs):
                if len(found) >= limit:
                    break
                job = self._jobs[job_id]
                if (
                    (session_id is None or job.session_id == session_id)
                    and (state is None or job.state == state)
                    and (kind is None or job.kind == kind)
                ):
                    found.append(_job_copy(job))
            return found

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """See `Outbox.dead_letters`."""
        async with self._open():
            letters = sorted(self._dead.values(), key=lambda d: (d.died_at, d.job_id))
            return [replace(d, payload=copy.deepcopy(d.payload)) for d in letters[: max(limit, 0)]]

    async def redrive(self, job_ids: Sequence[int] | None, *, at: datetime) -> int:
        """See `Outbox.redrive`."""
        async with self._open():
            at = intake.utc(at, "redrive time")
            chosen = (
                sorted(self._dead) if job_ids is None else sorted(set(job_ids) & set(self._dead))
            )
            for job_id in chosen:
                job = self._jobs[job_id]
                self._jobs[job_id] = replace(
                    job, state=JobState.PENDING, attempts=0, run_after=at, updated_at=at
                )
                del self._dead[job_id]
            return len(chosen)

    async def drop_dead_job(self, job_id: int) -> bool:
        """See `Outbox.drop_dead_job`."""
        async with self._open():
            job = self._jobs.get(job_id)
            if job is None or job.state is not JobState.DEAD:
                return False
            if job.gates_finalize:
                raise Conflict(
                    f"job {job_id} gates the finalization of session {job.session_id}; "
                    "redrive it instead of dropping it"
                )
            del self._jobs[job_id], self._job_ids[job.idempotency_key], self._dead[job_id]
            self._unfinished.discard(job_id)
            return True

    async def next_job_due(self) -> datetime | None:
        """See `Outbox.next_job_due`."""
        async with self._open():
            times = [
                job.run_after if job.state is JobState.PENDING else job.lease_expires_at
                for job in self._runnable()
            ]
            return min((t for t in times if t is not None), default=None)

    async def outbox_stats(self) -> OutboxStats:
        """See `Outbox.outbox_stats`."""
        async with self._open():
            counts = dict.fromkeys(JobState, 0)
            by_kind: dict[str, dict[str, int]] = {}
            oldest: datetime | None = None
            for job in self._jobs.values():
                counts[job.state] += 1
                per_state = by_kind.setdefault(job.kind, {})
                per_state[str(job.state)] = per_state.get(str(job.state), 0) + 1
                if job.state is JobState.PENDING and (oldest is None or job.run_after < oldest):
                    oldest = job.run_after
            return OutboxStats(
                pending=counts[JobState.PENDING],
                running=counts[JobState.RUNNING],
                dead=counts[JobState.DEAD],
                done=counts[JobState.DONE],
                oldest_pending_at=oldest,
                by_kind=by_kind,
            )

    def _held(self, job_id: int, token: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING or job.fencing_token != token:
            return None
        return job

    def _runnable(self) -> Iterator[Job]:
        """Jobs not `done` whose ordering key lets them run (no earlier job is unfinished)."""
        first_of_key: dict[str, int] = {}
        for job_id in self._unfinished:
            key = self._jobs[job_id].ordering_key
            if key is not None and job_id < first_of_key.get(key, job_id + 1):
                first_of_key[key] = job_id
        for job_id in sorted(self._unfinished):
            job = self._jobs[job_id]
            if job.state is JobState.DEAD:
                continue
            if job.ordering_key is None or first_of_key[job.ordering_key] == job_id:
                yield job

    def _put_jobs(self, jobs: Sequence[NewJob], at: datetime) -> list[int]:
        created: list[int] = []
        for new in jobs:
            if new.idempotency_key in self._job_ids:
                continue
            self._last_job_id += 1
            job_id = self._last_job_id
            self._jobs[job_id] = Job(
                id=job_id,
                kind=new.kind,
                idempotency_key=new.idempotency_key,
                payload=new.payload,
                state=JobState.PENDING,
                attempts=0,
                run_after=new.run_after or at,
                created_at=at,
                updated_at=at,
                session_id=new.session_id,
                ordering_key=new.ordering_key,
                gates_finalize=new.gates_finalize,
            )
            self._job_ids[new.idempotency_key] = job_id
            self._unfinished.add(job_id)
            created.append(job_id)
        return created


def _job_copy(job: Job) -> Job:
    return replace(job, payload=copy.deepcopy(job.payload))


def _released(job: Job, state: JobState, at: datetime) -> Job:
    return replace(job, state=state, lease_owner=None, lease_expires_at=None, updated_at=at)


def _in_lanes(ordering_key: str | None, lanes: Sequence[str]) -> bool:
    return ordering_key is not None and any(ordering_key.startswith(lane) for lane in lanes)
