"""Store contract: dead letters, redrive, finalization by jobs, due times and stats."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessiongate.errors import Conflict
from sessiongate.models import EndReason, EndRequest, Job, JobState, SessionState
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_job, new_session

LEASE = 30.0


async def _claim(store: Store, clock: FakeClock, limit: int = 1) -> list[Job]:
    return await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE, limit=limit)


async def _state(store: Store, session_id: str) -> SessionState:
    session = await store.get_session(session_id)
    assert session is not None
    return session.state


# -- dead letters and redrive -----------------------------------------------------------


async def test_bury_moves_a_job_to_the_dead_letters(store: Store, clock: FakeClock) -> None:
    [job_id] = await store.enqueue(
        [new_job("j", kind="memory.commit", payload={"provider": "local"}, session_id="s-1")],
        at=clock.now(),
    )
    [job] = await _claim(store, clock)
    died_at = clock.advance(2)
    assert await store.bury_job(job.id, job.fencing_token, error="gave up", at=died_at)
    dead = await store.get_job(job_id)
    assert dead is not None
    assert (dead.state, dead.last_error, dead.updated_at) == (JobState.DEAD, "gave up", died_at)
    assert (dead.lease_owner, dead.lease_expires_at, dead.attempts) == (None, None, 1)
    [letter] = await store.dead_letters()
    assert (letter.job_id, letter.kind, letter.idempotency_key) == (job_id, "memory.commit", "j")
    assert (letter.payload, letter.session_id) == ({"provider": "local"}, "s-1")
    assert (letter.attempts, letter.last_error, letter.died_at) == (1, "gave up", died_at)
    clock.advance(3600)
    assert await _claim(store, clock) == []
    assert [j.id for j in await store.list_jobs(state=JobState.DEAD)] == [job_id]


async def test_dead_letters_are_listed_oldest_first(store: Store, clock: FakeClock) -> None:
    ids = await store.enqueue([new_job(f"j{n}") for n in range(4)], at=clock.now())
    jobs = {j.id: j for j in await _claim(store, clock, limit=4)}
    # Die out of id order; two at the same time (then by job id).
    for job_id, offset in ((ids[2], 1), (ids[0], 5), (ids[3], 5), (ids[1], 9)):
        job = jobs[job_id]
        died = clock.now() + timedelta(seconds=offset)
        assert await store.bury_job(job.id, job.fencing_token, error="x", at=died)
    assert [d.job_id for d in await store.dead_letters()] == [ids[2], ids[0], ids[3], ids[1]]
    assert [d.job_id for d in await store.dead_letters(limit=2)] == [ids[2], ids[0]]


async def test_redrive_chosen_jobs(store: Store, clock: FakeClock) -> None:
    ids = await store.enqueue([new_job("a"), new_job("b"), new_job("c")], at=clock.now())
    for job in await _claim(store, clock, limit=3):
        if job.idempotency_key == "c":
            assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
        else:
            assert await store.bury_job(job.id, job.fencing_token, error="boom", at=clock.now())
    redrive_at = clock.advance(60)
    # A job that is not dead (c is done) and an unknown id are ignored.
    assert await store.redrive([ids[0], ids[2], 424242], at=redrive_at) == 1
    again = await store.get_job(ids[0])
    assert again is not None
    assert (again.state, again.attempts, again.run_after) == (JobState.PENDING, 0, redrive_at)
    assert (again.updated_at, again.last_error, again.fencing_token) == (redrive_at, "boom", 1)
    assert [d.job_id for d in await store.dead_letters()] == [ids[1]]
    [claimed] = await _claim(store, clock)
    assert (claimed.id, claimed.attempts, claimed.fencing_token) == (ids[0], 1, 2)
    done = await store.get_job(ids[2])
    assert done is not None
    assert done.state is JobState.DONE


async def test_redrive_all(store: Store, clock: FakeClock) -> None:
    await store.enqueue([new_job("a"), new_job("b"), new_job("live")], at=clock.now())
    for job in await _claim(store, clock, limit=2):
        assert await store.bury_job(job.id, job.fencing_token, error="x", at=clock.now())
    assert await store.redrive(None, at=clock.now()) == 2
    assert await store.dead_letters() == []
    assert await store.redrive(None, at=clock.now()) == 0
    assert [j.idempotency_key for j in await _claim(store, clock, limit=5)] == ["a", "b", "live"]


async def test_drop_dead_job(store: Store, clock: FakeClock) -> None:
    ids = await store.enqueue(
        [
            new_job("dead", ordering_key="k"),
            new_job("gating", session_id="s-1", gates_finalize=True),
            new_job("behind", ordering_key="k"),
        ],
        at=clock.now(),
    )
    for job in await _claim(store, clock, limit=2):
        assert await store.bury_job(job.id, job.fencing_token, error="x", at=clock.now())
    # Unknown, or not dead: nothing is dropped.
    assert not await store.drop_dead_job(424242)
    assert not await store.drop_dead_job(ids[2])
    # A gating job must be redriven: dropping it would leave its session ending forever.
    with pytest.raises(Conflict, match="redrive"):
        await store.drop_dead_job(ids[1])
    assert [d.job_id for d in await store.dead_letters()] == [ids[0], ids[1]]
    assert await store.drop_dead_job(ids[0])
    assert await store.get_job(ids[0]) is None
    assert [d.job_id for d in await store.dead_letters()] == [ids[1]]
    assert not await store.drop_dead_job(ids[0])
    # The job behind the dropped one in its ordering key may run now.
    assert [j.idempotency_key for j in await _claim(store, clock, limit=5)] == ["behind"]
    stats = await store.outbox_stats()
    assert (stats.pending, stats.running, stats.dead) == (0, 1, 1)


# -- finalization -------------------------------------------------------------------------


async def test_the_last_gating_job_done_finalizes_the_session(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(new_session("s-1", at=clock.now()))
    end = EndRequest(
        "s-1",
        EndReason.IDLE,
        at=clock.now(),
        jobs=[
            new_job("commit", session_id="s-1", gates_finalize=True),
            new_job("event", session_id="s-1", gates_finalize=True),
            new_job("extra", session_id="s-1"),
        ],
    )
    assert await store.end_session(end)
    commit, event, _extra = await _claim(store, clock, limit=3)
    assert await store.complete_job(commit.id, commit.fencing_token, at=clock.now())
    assert await _state(store, "s-1") is SessionState.ENDING
    # A lost lease records nothing, so it cannot finalize either.
    assert not await store.complete_job(event.id, event.fencing_token + 1, at=clock.now())
    assert await _state(store, "s-1") is SessionState.ENDING
    assert await store.complete_job(event.id, event.fencing_token, at=clock.now())
    assert await _state(store, "s-1") is SessionState.FINALIZED
    # The non-gating job is still running: it never held the session back.
    extra = await store.get_job(_extra.id)
    assert extra is not None
    assert extra.state is JobState.RUNNING


async def test_a_dead_gating_job_holds_finalization_until_redriven(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(new_session("s-1", at=clock.now()))
    end = EndRequest(
        "s-1",
        EndReason.NEW,
        at=clock.now(),
        jobs=[new_job("gate", session_id="s-1", gates_finalize=True)],
    )
    assert await store.end_session(end)
    [job] = await _claim(store, clock)
    assert await store.bury_job(job.id, job.fencing_token, error="down", at=clock.now())
    assert await _state(store, "s-1") is SessionState.ENDING
    assert await store.redrive([job.id], at=clock.now()) == 1
    assert await _state(store, "s-1") is SessionState.ENDING
    [job] = await _claim(store, clock)
    assert await store.retry_job(
        job.id, job.fencing_token, run_after=clock.now(), error="again", at=clock.now()
    )
    assert await _state(store, "s-1") is SessionState.ENDING
    [job] = await _claim(store, clock)
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    assert await _state(store, "s-1") is SessionState.FINALIZED


async def test_a_gating_job_of_an_active_session_does_not_end_it(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(new_session("s-1", at=clock.now()))
    await store.enqueue([new_job("gate", session_id="s-1", gates_finalize=True)], at=clock.now())
    [job] = await _claim(store, clock)
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    assert await _state(store, "s-1") is SessionState.ACTIVE


async def test_a_reopened_session_is_not_finalized_by_its_old_end_jobs(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(new_session("s-1", at=clock.now()))
    gate = new_job("gate", session_id="s-1", gates_finalize=True)
    assert await store.end_session(EndRequest("s-1", EndReason.SWITCH, at=clock.now(), jobs=[gate]))
    await store.reopen_session("s-1", at=clock.now())
    [job] = await _claim(store, clock)
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    assert await _state(store, "s-1") is SessionState.ACTIVE


async def test_gating_jobs_only_count_for_their_own_session(store: Store, clock: FakeClock) -> None:
    for sid in ("s-1", "s-2"):
        await store.start_session(new_session(sid, at=clock.now()))
        gate = new_job(f"gate-{sid}", session_id=sid, gates_finalize=True)
        assert await store.end_session(EndRequest(sid, EndReason.NEW, at=clock.now(), jobs=[gate]))
    first, _second = await _claim(store, clock, limit=2)
    assert first.session_id == "s-1"
    assert await store.complete_job(first.id, first.fencing_token, at=clock.now())
    assert await _state(store, "s-1") is SessionState.FINALIZED
    assert await _state(store, "s-2") is SessionState.ENDING


# -- due times, listing, stats --------------------------------------------------------------


async def test_next_job_due(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    assert await store.next_job_due() is None
    await store.enqueue(
        [
            new_job("later", run_after=now + timedelta(minutes=10)),
            new_job("soon", run_after=now + timedelta(minutes=2)),
        ],
        at=now,
    )
    assert await store.next_job_due() == now + timedelta(minutes=2)
    clock.advance(120)
    [soon] = await _claim(store, clock)
    # Running: its lease expiry (now + 30 s) is earlier than the pending job.
    assert await store.next_job_due() == clock.now() + timedelta(seconds=LEASE)
    assert await store.complete_job(soon.id, soon.fencing_token, at=clock.now())
    assert await store.next_job_due() == now + timedelta(minutes=10)


async def test_next_job_due_ignores_done_dead_and_blocked_jobs(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    await store.enqueue(
        [
            new_job("head", ordering_key="o"),
            new_job("blocked", ordering_key="o"),
            new_job("free", run_after=now + timedelta(hours=1)),
        ],
        at=now,
    )
    [head] = await _claim(store, clock)
    assert await store.bury_job(head.id, head.fencing_token, error="x", at=now)
    # "blocked" is due now but cannot run behind the dead head: it does not count.
    assert await store.next_job_due() == now + timedelta(hours=1)
    [free] = await store.claim_jobs("w", at=now + timedelta(hours=1), lease_seconds=LEASE, limit=5)
    assert await store.complete_job(free.id, free.fencing_token, at=now)
    assert await store.next_job_due() is None
    assert await store.redrive(None, at=now) == 1
    assert await store.next_job_due() == now


async def test_list_jobs_filters_by_session_state_and_kind(store: Store, clock: FakeClock) -> None:
    ids = await store.enqueue(
        [
            new_job("a", kind="commit", session_id="s-1"),
            new_job("b", kind="event", session_id="s-1"),
            new_job("c", kind="commit", session_id="s-2"),
            new_job("d", kind="commit"),
        ],
        at=clock.now(),
    )
    [a] = await store.claim_jobs("w", at=clock.now(), lease_seconds=LEASE)

    async def keys(**filters: object) -> list[str]:
        return [j.idempotency_key for j in await store.list_jobs(**filters)]  # type: ignore[arg-type]

    assert await keys() == ["a", "b", "c", "d"]
    assert [j.id for j in await store.list_jobs()] == ids
    assert await keys(session_id="s-1") == ["a", "b"]
    assert await keys(kind="commit") == ["a", "c", "d"]
    assert await keys(state=JobState.RUNNING) == ["a"]
    assert await keys(state=JobState.PENDING, kind="commit") == ["c", "d"]
    assert await keys(session_id="s-1", state=JobState.PENDING) == ["b"]
    assert await keys(limit=2) == ["a", "b"]
    assert await keys(session_id="nobody") == []
    assert a.idempotency_key == "a"


async def test_outbox_stats(store: Store, clock: FakeClock) -> None:
    empty = await store.outbox_stats()
    assert (empty.pending, empty.running, empty.dead, empty.done) == (0, 0, 0, 0)
    assert (empty.oldest_pending_at, dict(empty.by_kind)) == (None, {})
    now = clock.now()
    await store.enqueue(
        [
            new_job("c1", kind="commit"),
            new_job("c2", kind="commit"),
            new_job("e1", kind="event"),
            new_job("e2", kind="event", run_after=now - timedelta(minutes=3)),
            new_job("e3", kind="event", run_after=now + timedelta(minutes=3)),
            new_job("t1", kind="timer"),
        ],
        at=now,
    )
    # Claims take e2 (oldest run_after), then c1, c2.
    e2, c1, c2 = await _claim(store, clock, limit=3)
    assert await store.complete_job(e2.id, e2.fencing_token, at=now)
    assert await store.bury_job(c1.id, c1.fencing_token, error="x", at=now)
    stats = await store.outbox_stats()
    assert (stats.pending, stats.running, stats.dead, stats.done) == (3, 1, 1, 1)
    assert stats.oldest_pending_at == now
    assert {k: dict(v) for k, v in stats.by_kind.items()} == {
        "commit": {"dead": 1, "running": 1},
        "event": {"done": 1, "pending": 2},
        "timer": {"pending": 1},
    }
    assert c2.kind == "commit"
