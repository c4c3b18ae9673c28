"""Store contract: enqueueing and claiming jobs, leases, fencing tokens, ordering keys."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sessiongate.errors import InvalidInput
from sessiongate.models import Job, JobState
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_job

LEASE = 30.0


async def _claim_one(store: Store, clock: FakeClock, owner: str = "w1") -> Job:
    [job] = await store.claim_jobs(owner, at=clock.now(), lease_seconds=LEASE)
    return job


async def _claimable(store: Store, clock: FakeClock) -> list[str]:
    """Idempotency keys of the jobs a claim would take now, without taking them for long."""
    jobs = await store.claim_jobs("probe", at=clock.now(), lease_seconds=LEASE, limit=100)
    return [j.idempotency_key for j in jobs]


# -- enqueue -----------------------------------------------------------------------


async def test_enqueue_stores_pending_jobs(store: Store, clock: FakeClock) -> None:
    at = clock.now()
    later = at + timedelta(minutes=5)
    ids = await store.enqueue(
        [
            new_job(
                "a",
                kind="hook.event",
                payload={"n": 1, "list": [1, "x", None], "obj": {"k": True}},
                session_id="s-1",
                ordering_key="events:s-1",
                gates_finalize=True,
            ),
            new_job("b", run_after=later),
        ],
        at=at,
    )
    assert len(ids) == 2
    assert ids[0] < ids[1]
    a = await store.get_job(ids[0])
    assert a == Job(
        id=ids[0],
        kind="hook.event",
        idempotency_key="a",
        payload={"n": 1, "list": [1, "x", None], "obj": {"k": True}},
        state=JobState.PENDING,
        attempts=0,
        run_after=at,
        created_at=at,
        updated_at=at,
        session_id="s-1",
        ordering_key="events:s-1",
        gates_finalize=True,
        lease_owner=None,
        lease_expires_at=None,
        fencing_token=0,
        last_error=None,
    )
    b = await store.get_job(ids[1])
    assert b is not None
    assert (b.run_after, b.created_at, b.session_id, b.ordering_key, b.gates_finalize) == (
        later,
        at,
        None,
        None,
        False,
    )
    assert await store.get_job(10_000) is None


async def test_enqueue_skips_existing_idempotency_keys(store: Store, clock: FakeClock) -> None:
    [first] = await store.enqueue([new_job("k", payload={"v": 1})], at=clock.now())
    again = await store.enqueue(
        [new_job("k", payload={"v": 2}), new_job("new"), new_job("new", payload={"v": 3})],
        at=clock.now(),
    )
    assert len(again) == 1
    assert again[0] > first
    jobs = await store.list_jobs()
    assert [(j.idempotency_key, dict(j.payload)) for j in jobs] == [("k", {"v": 1}), ("new", {})]
    assert await store.enqueue([], at=clock.now()) == []


async def test_enqueue_skips_a_key_even_after_its_job_is_done(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue([new_job("once")], at=clock.now())
    job = await _claim_one(store, clock)
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    assert await store.enqueue([new_job("once")], at=clock.now()) == []
    assert await _claimable(store, clock) == []


@pytest.mark.parametrize(
    "bad",
    [
        new_job("nul\x00key"),
        new_job("k", kind="kind\x00"),
        new_job("k", payload={"text": "nul\x00"}),
        new_job("k", payload={"text": "\ud800"}),
        new_job("k", payload={"nan": float("nan")}),
        new_job("k", payload={"inf": float("inf")}),
        new_job("k", payload={"nested": {1: "int key"}}),
        new_job("k", payload={"obj": object()}),
        new_job("k", session_id="../etc"),
        new_job("k", ordering_key="o\x00"),
        new_job(""),
    ],
)
async def test_enqueue_refuses_unstorable_jobs_whole(
    store: Store, clock: FakeClock, bad: object
) -> None:
    with pytest.raises(InvalidInput):
        await store.enqueue([new_job("good-before"), bad], at=clock.now())  # type: ignore[list-item]
    assert await store.list_jobs() == []


async def test_payload_is_stored_verbatim(store: Store, clock: FakeClock) -> None:
    payload = {
        "sql": "'; DROP TABLE jobs; --",
        "emoji": "😀👩‍👩‍👧",
        "tuple": (1, 2),
        "nested": {"deep": [{"x": -1.25}, [], {}]},
        "big": 2**53,
    }
    [job_id] = await store.enqueue([new_job("p", payload=payload)], at=clock.now())
    expected = {**payload, "tuple": [1, 2]}
    stored = await store.get_job(job_id)
    assert stored is not None
    assert stored.payload == expected
    claimed = await _claim_one(store, clock)
    assert claimed.payload == expected


# -- claim ---------------------------------------------------------------------------


async def test_claim_takes_due_jobs_oldest_run_after_first(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    await store.enqueue(
        [
            new_job("late", run_after=now + timedelta(seconds=10)),
            new_job("second", run_after=now - timedelta(seconds=1)),
            new_job("first", run_after=now - timedelta(seconds=5)),
            new_job("due-now-a"),
            new_job("due-now-b"),
        ],
        at=now,
    )
    jobs = await store.claim_jobs("w1", at=now, lease_seconds=LEASE, limit=3)
    assert [j.idempotency_key for j in jobs] == ["first", "second", "due-now-a"]
    assert [
        j.idempotency_key
        for j in await store.claim_jobs("w1", at=now, lease_seconds=LEASE, limit=10)
    ] == ["due-now-b"]
    assert await store.claim_jobs("w1", at=now, lease_seconds=LEASE, limit=10) == []
    clock.advance(10)
    assert await _claimable(store, clock) == ["late"]


async def test_claim_sets_lease_attempts_and_token(store: Store, clock: FakeClock) -> None:
    enqueued = clock.now()
    [job_id] = await store.enqueue([new_job("j")], at=enqueued)
    claimed_at = clock.advance(2.5)
    [job] = await store.claim_jobs("worker-7", at=claimed_at, lease_seconds=12.5)
    assert job.id == job_id
    assert job.state is JobState.RUNNING
    assert job.lease_owner == "worker-7"
    assert job.lease_expires_at == claimed_at + timedelta(seconds=12.5)
    assert (job.attempts, job.fencing_token) == (1, 1)
    assert job.run_after == enqueued
    assert (job.created_at, job.updated_at) == (enqueued, claimed_at)
    assert await store.get_job(job_id) == job


async def test_claim_respects_limit_and_kinds(store: Store, clock: FakeClock) -> None:
    await store.enqueue(
        [new_job("c1", kind="commit"), new_job("e1", kind="event"), new_job("c2", kind="commit")],
        at=clock.now(),
    )
    assert await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, limit=0) == []
    only = await store.claim_jobs(
        "w", at=clock.now(), lease_seconds=LEASE, limit=10, kinds=["event"]
    )
    assert [j.idempotency_key for j in only] == ["e1"]
    assert await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, kinds=["x"]) == []
    [one] = await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, kinds=["commit"])
    assert one.idempotency_key == "c1"


async def test_claim_leaves_the_jobs_of_skipped_lanes(store: Store, clock: FakeClock) -> None:
    await store.enqueue(
        [
            new_job("slow-1", ordering_key="memory:slow:s-1"),
            new_job("slow-2", ordering_key="memory:slow:s-2"),
            new_job("event", ordering_key="events:s-1"),
            new_job("local", ordering_key="memory:local:s-1"),
            new_job("unkeyed"),
            new_job("lookalike", ordering_key="memory:slower:s-1"),
            new_job("pattern", ordering_key="memory:%:s-1"),
        ],
        at=clock.now(),
    )
    taken = await store.claim_jobs(
        "w",
        at=clock.now(),
        lease_seconds=LEASE,
        limit=10,
        skip_lanes=["memory:slow:", "memory:%:"],
    )
    assert [j.idempotency_key for j in taken] == ["event", "local", "unkeyed", "lookalike"]
    assert await _claimable(store, clock) == ["slow-1", "slow-2", "pattern"]


async def test_ordering_key_runs_jobs_one_after_another(store: Store, clock: FakeClock) -> None:
    await store.enqueue(
        [
            new_job("o1", ordering_key="memory:local:s-1"),
            new_job("free"),
            new_job("o2", ordering_key="memory:local:s-1"),
            new_job("other", ordering_key="memory:local:s-2"),
            new_job("o3", ordering_key="memory:local:s-1"),
        ],
        at=clock.now(),
    )
    first = await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, limit=10)
    assert [j.idempotency_key for j in first] == ["o1", "free", "other"]
    # o2 stays blocked while o1 runs, and after o1 is retried (pending again).
    assert await _claimable(store, clock) == []
    o1 = first[0]
    assert await store.retry_job(
        o1.id,
        o1.fencing_token,
        run_after=clock.now() + timedelta(seconds=5),
        error="e",
        at=clock.now(),
    )
    assert await _claimable(store, clock) == []
    clock.advance(5)
    o1 = await _claim_one(store, clock)
    assert o1.idempotency_key == "o1"
    assert await store.complete_job(o1.id, o1.fencing_token, at=clock.now())
    o2 = await _claim_one(store, clock)
    assert o2.idempotency_key == "o2"
    assert await store.complete_job(o2.id, o2.fencing_token, at=clock.now())
    assert await _claimable(store, clock) == ["o3"]


async def test_ordering_key_blocks_later_jobs_across_kinds(store: Store, clock: FakeClock) -> None:
    await store.enqueue(
        [
            new_job("deliver", kind="a", ordering_key="o"),
            new_job("commit", kind="b", ordering_key="o"),
        ],
        at=clock.now(),
    )
    assert await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, kinds=["b"]) == []


async def test_ordering_key_blocks_behind_a_job_not_yet_due(store: Store, clock: FakeClock) -> None:
    await store.enqueue(
        [
            new_job("first", ordering_key="o", run_after=clock.now() + timedelta(minutes=1)),
            new_job("second", ordering_key="o"),
        ],
        at=clock.now(),
    )
    assert await _claimable(store, clock) == []
    clock.advance(60)
    assert await _claimable(store, clock) == ["first"]


async def test_a_dead_job_blocks_its_ordering_key_until_redriven(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(
        [new_job("d1", ordering_key="o"), new_job("d2", ordering_key="o")], at=clock.now()
    )
    d1 = await _claim_one(store, clock)
    assert await store.bury_job(d1.id, d1.fencing_token, error="boom", at=clock.now())
    clock.advance(3600)
    assert await _claimable(store, clock) == []
    assert await store.redrive([d1.id], at=clock.now()) == 1
    d1 = await _claim_one(store, clock)
    assert d1.idempotency_key == "d1"
    assert await store.complete_job(d1.id, d1.fencing_token, at=clock.now())
    assert await _claimable(store, clock) == ["d2"]


# -- leases and fencing -----------------------------------------------------------------


async def test_an_expired_lease_is_reclaimed_with_a_new_token(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue([new_job("j")], at=clock.now())
    first = await _claim_one(store, clock, "w1")
    clock.advance(LEASE - 0.000001)
    assert await store.claim_jobs("w2", at=clock.now(), lease_seconds=LEASE) == []
    clock.advance(0.000001)  # exactly at expiry: the lease is over
    second = await _claim_one(store, clock, "w2")
    assert second.id == first.id
    assert second.lease_owner == "w2"
    assert second.fencing_token == first.fencing_token + 1
    assert second.attempts == 2
    assert second.lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    # The presumed-dead first worker can no longer record anything.
    assert not await store.heartbeat(
        first.id, first.fencing_token, at=clock.now(), lease_seconds=LEASE
    )
    assert not await store.complete_job(first.id, first.fencing_token, at=clock.now())
    assert not await store.retry_job(
        first.id, first.fencing_token, run_after=clock.now(), error="x", at=clock.now()
    )
    assert not await store.bury_job(first.id, first.fencing_token, error="x", at=clock.now())
    assert await store.get_job(first.id) == second
    assert await store.complete_job(second.id, second.fencing_token, at=clock.now())


async def test_an_expired_lease_nobody_reclaimed_can_still_complete(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue([new_job("j")], at=clock.now())
    job = await _claim_one(store, clock)
    clock.advance(LEASE * 3)
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    done = await store.get_job(job.id)
    assert done is not None
    assert done.state is JobState.DONE


async def test_heartbeat_extends_the_lease(store: Store, clock: FakeClock) -> None:
    await store.enqueue([new_job("j")], at=clock.now())
    job = await _claim_one(store, clock)
    clock.advance(20)
    assert await store.heartbeat(job.id, job.fencing_token, at=clock.now(), lease_seconds=LEASE)
    beat = await store.get_job(job.id)
    assert beat is not None
    assert beat.lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    assert (beat.updated_at, beat.attempts, beat.fencing_token) == (clock.now(), 1, 1)
    clock.advance(LEASE - 1)
    assert await store.claim_jobs("w2", at=clock.now(), lease_seconds=LEASE) == []
    assert not await store.heartbeat(
        job.id, job.fencing_token + 1, at=clock.now(), lease_seconds=LEASE
    )
    assert not await store.heartbeat(999_999, 1, at=clock.now(), lease_seconds=LEASE)


async def test_outcomes_need_the_current_token_of_a_running_job(
    store: Store, clock: FakeClock
) -> None:
    [job_id] = await store.enqueue([new_job("j")], at=clock.now())
    assert not await store.complete_job(job_id, 0, at=clock.now())  # pending, never claimed
    job = await _claim_one(store, clock)
    assert not await store.complete_job(job.id, job.fencing_token + 1, at=clock.now())
    assert not await store.complete_job(job.id, job.fencing_token - 1, at=clock.now())
    assert await store.get_job(job.id) == job
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    assert not await store.complete_job(job.id, job.fencing_token, at=clock.now())
    assert not await store.bury_job(job.id, job.fencing_token, error="late", at=clock.now())
    assert not await store.complete_job(999_999, 1, at=clock.now())


async def test_complete_marks_done_and_clears_the_lease(store: Store, clock: FakeClock) -> None:
    await store.enqueue([new_job("j")], at=clock.now())
    job = await _claim_one(store, clock)
    done_at = clock.advance(3)
    assert await store.complete_job(job.id, job.fencing_token, at=done_at)
    done = await store.get_job(job.id)
    assert done is not None
    assert (done.state, done.lease_owner, done.lease_expires_at) == (JobState.DONE, None, None)
    assert (done.updated_at, done.attempts, done.fencing_token) == (done_at, 1, 1)
    clock.advance(LEASE * 2)
    assert await _claimable(store, clock) == []


async def test_retry_puts_the_job_back_until_run_after(store: Store, clock: FakeClock) -> None:
    await store.enqueue([new_job("j")], at=clock.now())
    job = await _claim_one(store, clock)
    retry_at = clock.advance(1)
    again_at = retry_at + timedelta(seconds=40)
    assert await store.retry_job(
        job.id, job.fencing_token, run_after=again_at, error="timeout", at=retry_at
    )
    pending = await store.get_job(job.id)
    assert pending is not None
    assert (pending.state, pending.run_after, pending.last_error) == (
        JobState.PENDING,
        again_at,
        "timeout",
    )
    assert (pending.lease_owner, pending.lease_expires_at) == (None, None)
    assert (pending.attempts, pending.fencing_token, pending.updated_at) == (1, 1, retry_at)
    assert not await store.retry_job(
        job.id, job.fencing_token, run_after=again_at, error="twice", at=retry_at
    )
    assert not await store.heartbeat(job.id, job.fencing_token, at=retry_at, lease_seconds=LEASE)
    clock.advance(39)
    assert await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE) == []
    clock.advance(1)
    again = await _claim_one(store, clock)
    assert (again.attempts, again.fencing_token, again.last_error) == (2, 2, "timeout")


async def test_error_texts_are_stored_never_refused(store: Store, clock: FakeClock) -> None:
    await store.enqueue([new_job("r"), new_job("b")], at=clock.now())
    retried, buried = await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, limit=2)
    ugly = "driver said \x00 and \ud800 '; DROP TABLE jobs; -- 😀"
    clean = "driver said \ufffd and \ufffd '; DROP TABLE jobs; -- 😀"
    assert await store.retry_job(
        retried.id, retried.fencing_token, run_after=clock.now(), error=ugly, at=clock.now()
    )
    assert await store.bury_job(buried.id, buried.fencing_token, error=ugly, at=clock.now())
    stored = await store.get_job(retried.id)
    assert stored is not None
    assert stored.last_error == clean
    [letter] = await store.dead_letters()
    assert letter.last_error == clean


# -- concurrency ---------------------------------------------------------------------


async def test_concurrent_claimers_each_job_exactly_once(store: Store, clock: FakeClock) -> None:
    ids = await store.enqueue([new_job(f"job-{n}") for n in range(50)], at=clock.now())
    claimed: dict[int, list[str]] = {}

    async def worker(name: str) -> None:
        while True:
            jobs = await store.claim_jobs(name, at=clock.now(), lease_seconds=LEASE, limit=3)
            if not jobs:
                return
            for job in jobs:
                claimed.setdefault(job.id, []).append(name)
                assert await store.complete_job(job.id, job.fencing_token, at=clock.now())

    await asyncio.gather(*(worker(f"w{n}") for n in range(8)))
    assert sorted(claimed) == sorted(ids)
    assert all(len(owners) == 1 for owners in claimed.values())
    stats = await store.outbox_stats()
    assert (stats.done, stats.pending, stats.running) == (50, 0, 0)


async def test_concurrent_claimers_respect_ordering_keys(store: Store, clock: FakeClock) -> None:
    await store.enqueue(
        [new_job(f"k{n % 5}-{n}", ordering_key=f"k{n % 5}") for n in range(40)], at=clock.now()
    )
    order: dict[str, list[int]] = {}

    async def worker(name: str) -> None:
        idle = 0
        while idle < 3:
            jobs = await store.claim_jobs(name, at=clock.now(), lease_seconds=LEASE, limit=2)
            if not jobs:
                idle += 1
                await asyncio.sleep(0)
                continue
            idle = 0
            for job in jobs:
                assert job.ordering_key is not None
                order.setdefault(job.ordering_key, []).append(job.id)
                assert await store.complete_job(job.id, job.fencing_token, at=clock.now())

    await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    while (stats := await store.outbox_stats()).pending:
        await worker("sweeper")
    assert stats.done == 40
    assert all(ids == sorted(ids) and len(ids) == 8 for ids in order.values())
