"""The outbox's outcomes: retries with backoff, dead letters and redrive, ordering."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from lifecycle.jobs import enqueue, get_job, make_worker
from lifecycle.world import SOURCE, World
from sessiongate.errors import PermanentFailure
from sessiongate.lifecycle.consumers import MEMORY_COMMIT
from sessiongate.lifecycle.handlers import job_handlers
from sessiongate.memory.provider import CommitOutcome, ProviderSession, RecallHit, RecallScope
from sessiongate.memory.sync import MemorySync
from sessiongate.models import EndReason, Entry, Job, JobState, SessionState
from sessiongate.retry import RetryPolicies, RetryPolicy
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock, new_job
from sessiongate.testing.provider import CommitRecord, FakeProvider

# -- retries and dead letters ----------------------------------------------------------


async def test_a_failed_job_is_retried_with_backoff_then_succeeds(
    store: Store, clock: FakeClock
) -> None:
    calls: list[datetime] = []

    async def flaky(job: Job) -> None:
        calls.append(clock.now())
        if len(calls) <= 2:
            raise ConnectionError(f"flaky {len(calls)}")

    retry = RetryPolicies(default=RetryPolicy(base_delay=2.0, max_delay=60.0, max_attempts=5))
    worker = make_worker(store, clock, {"work": flaky}, owner="w", retry=retry)
    job_id = await enqueue(store, clock, "job-1")
    # Full jitter with random() = 0.5: half of 2 s, then half of 4 s.
    for attempt, delay in ((1, 1.0), (2, 2.0)):
        assert await worker.run_once() == 1
        job = await get_job(store, job_id)
        assert (job.state, job.attempts) == (JobState.PENDING, attempt)
        assert job.last_error == f"ConnectionError: flaky {attempt}"
        assert job.run_after == clock.now() + timedelta(seconds=delay)
        clock.advance(delay - 0.001)
        assert await worker.run_once() == 0
        clock.advance(0.001)
    assert await worker.run_once() == 1
    job = await get_job(store, job_id)
    assert (job.state, job.attempts) == (JobState.DONE, 3)
    assert len(calls) == 3


async def test_exhausted_retries_make_a_dead_letter_and_a_redrive_finalizes_the_session(
    world: World,
) -> None:
    alpha = world.providers["alpha"]
    alpha.down = True
    session = await world.chat(SOURCE, 3)
    assert await world.engine().end_session(session.id, EndReason.ADMIN)
    retry = RetryPolicies(default=RetryPolicy(base_delay=1.0, max_delay=2.0, max_attempts=3))
    await world.drain(retry=retry)

    # Never marked done silently: the session waits, the failure is listed.
    still = await world.store.get_session(session.id)
    assert still is not None
    assert still.state is SessionState.ENDING
    [letter] = await world.store.dead_letters()
    assert (letter.kind, letter.session_id, letter.attempts) == (MEMORY_COMMIT, session.id, 3)
    assert letter.payload["provider"] == "alpha"
    assert "ProviderDown: alpha is down" in letter.last_error
    assert "gave up after 3 attempts" in letter.last_error
    assert (await get_job(world.store, letter.job_id)).state is JobState.DEAD
    assert alpha.seqs(session.id) == []
    assert alpha.commits == []

    alpha.down = False
    assert await world.store.redrive([letter.job_id], at=world.clock.now()) == 1
    assert await world.store.dead_letters() == []
    await world.drain()
    done = await world.store.get_session(session.id)
    assert done is not None
    assert done.state is SessionState.FINALIZED
    assert alpha.seqs(session.id) == [1, 2, 3]
    assert alpha.commits == [CommitRecord(session.id, 1, 1, 3, session.user_id)]


async def test_a_job_of_an_unknown_kind_becomes_a_dead_letter(
    store: Store, clock: FakeClock
) -> None:
    job_id = await enqueue(store, clock, "job-1", kind="mystery.kind")
    assert await make_worker(store, clock, {}, owner="w").run_once() == 1
    [letter] = await store.dead_letters()
    assert (letter.job_id, letter.attempts) == (job_id, 1)
    assert "no handler is registered for job kind 'mystery.kind'" in letter.last_error
    assert (await get_job(store, job_id)).state is JobState.DEAD


async def test_a_permanent_failure_is_not_retried(store: Store, clock: FakeClock) -> None:
    async def refuse(job: Job) -> None:
        raise PermanentFailure("the provider was removed from the configuration")

    job_id = await enqueue(store, clock, "job-1")
    assert await make_worker(store, clock, {"work": refuse}, owner="w").run_once() == 1
    [letter] = await store.dead_letters()
    assert (letter.job_id, letter.attempts) == (job_id, 1)
    assert "removed from the configuration" in letter.last_error


# -- ordering --------------------------------------------------------------------------


async def test_jobs_of_one_ordering_key_run_in_order_even_across_a_retry(
    store: Store, clock: FakeClock
) -> None:
    ran: list[str] = []

    async def first(job: Job) -> None:
        ran.append(job.idempotency_key)
        if ran.count("first") == 1:
            raise ConnectionError("not yet")

    async def record(job: Job) -> None:
        ran.append(job.idempotency_key)

    jobs = [
        new_job("first", kind="first", ordering_key="k"),
        new_job("second", kind="record", ordering_key="k"),
        new_job("elsewhere", kind="record", ordering_key="other"),
    ]
    await store.enqueue(jobs, at=clock.now())
    worker = make_worker(store, clock, {"first": first, "record": record}, owner="w")
    assert await worker.run_once() == 2
    assert sorted(ran) == ["elsewhere", "first"]
    # "second" is due but blocked behind the backing-off "first": nothing runs, and the
    # next due time is the retry's, not the blocked job's.
    assert await worker.run_once() == 0
    [retrying] = await store.list_jobs(kind="first")
    assert await store.next_job_due() == retrying.run_after
    clock.advance((retrying.run_after - clock.now()).total_seconds())
    assert await worker.run_once() == 1
    assert await worker.run_once() == 1
    assert [key for key in ran if key != "elsewhere"] == ["first", "first", "second"]


class JournalingProvider:
    """A provider (no reconciliation) journaling every call; one delivery call fails."""

    def __init__(self, inner: FakeProvider, *, fail_call: int) -> None:
        self.inner = inner
        self.journal: list[tuple[str, int, int]] = []
        self._calls = 0
        self._fail_call = fail_call

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        self._calls += 1
        self.journal.append(("deliver", entries[0].seq, entries[-1].seq))
        if self._calls == self._fail_call:
            raise ConnectionError("connection dropped mid-batch")
        await self.inner.deliver(session, entries, idempotency_key=idempotency_key)

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        self.journal.append(("commit", first_seq, last_seq))
        return await self.inner.commit(
            session,
            epoch=epoch,
            first_seq=first_seq,
            last_seq=last_seq,
            idempotency_key=idempotency_key,
        )

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> Sequence[RecallHit]:
        return await self.inner.recall(scope, query, limit=limit)


async def test_a_sessions_commit_runs_only_after_every_delivery(world: World) -> None:
    inner = FakeProvider(name="journal", max_batch=2)
    world.providers = {"journal": inner}
    journaling = JournalingProvider(inner, fail_call=2)
    session = await world.chat(SOURCE, 5)
    assert await world.engine().end_session(session.id, EndReason.ADMIN)
    sync = MemorySync(world.store, {"journal": journaling}, clock=world.clock)
    handlers = dict(job_handlers(memory=sync, hooks=world.dispatcher()))
    await world.drain(worker=world.worker(handlers=handlers))

    assert journaling.journal == [
        ("deliver", 1, 2),
        ("deliver", 3, 4),  # dropped: retried after backoff
        ("deliver", 3, 4),
        ("deliver", 5, 5),
        ("commit", 1, 5),
    ]
    assert inner.seqs(session.id) == [1, 2, 3, 4, 5]
    [cursor] = await world.store.cursors(session.id)
    assert (cursor.delivered_seq, cursor.committed_seq, cursor.commit_epoch) == (5, 5, 1)
    done = await world.store.get_session(session.id)
    assert done is not None
    assert done.state is SessionState.FINALIZED
