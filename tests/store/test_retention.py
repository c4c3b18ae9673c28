"""Store contract: what retention selects and removes, and its dry run (every store kind)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sessiongate.errors import InvalidInput, NotFound
from sessiongate.models import EndReason, EndRequest, JobState, PruneReport, RetentionRules
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_entry, new_job, new_session

DAY = 86_400


def rules(
    clock: FakeClock,
    *,
    sessions: float | None = 30,
    jobs: float | None = 7,
    letters: float | None = 30,
    leases: float | None = 1,
    providers: tuple[str, ...] = ("local",),
    limit: int = 500,
) -> RetentionRules:
    """Cutoffs so many days before now (None keeps that artefact)."""

    def before(days: float | None) -> datetime | None:
        return None if days is None else clock.now() - timedelta(days=days)

    return RetentionRules(
        sessions_ended_before=before(sessions),
        jobs_done_before=before(jobs),
        dead_letters_before=before(letters),
        leases_expired_before=before(leases),
        providers=providers,
        limit=limit,
    )


async def ended(
    store: Store,
    clock: FakeClock,
    session_id: str,
    *,
    turns: int = 2,
    delivered: dict[str, int] | None = None,
    reason: EndReason = EndReason.NEW,
    gating: bool = False,
) -> None:
    """A session with `turns` entries, delivered as given (default: all, to local), ended."""
    await store.start_session(
        new_session(session_id, key=f"key-{session_id}", chat_id=session_id, at=clock.now())
    )
    if turns:
        entries = [new_entry(f"{session_id} turn {n}") for n in range(turns)]
        await store.append_entries(session_id, entries, at=clock.now())
    for provider, seq in (delivered if delivered is not None else {"local": turns}).items():
        await store.advance_cursor(
            provider, session_id, expected_seq=0, delivered_seq=seq, at=clock.now()
        )
    jobs = [new_job(f"commit:{session_id}", session_id=session_id, gates_finalize=gating)]
    await store.end_session(EndRequest(session_id, reason, at=clock.now(), jobs=jobs))


async def finish_jobs(store: Store, clock: FakeClock) -> None:
    for job in await store.claim_jobs("w", at=clock.now(), lease_seconds=60, limit=1000):
        assert await store.complete_job(job.id, job.fencing_token, at=clock.now())


async def test_old_finalized_sessions_go_with_everything_of_theirs(
    store: Store, clock: FakeClock
) -> None:
    await ended(store, clock, "old")
    await finish_jobs(store, clock)
    clock.advance(40 * DAY)
    await ended(store, clock, "recent")
    dry = await store.prune(rules(clock, jobs=None), at=clock.now(), dry_run=True)
    assert dry.sessions == ("old",)
    assert dry.entries == 2
    assert dry.jobs == 1  # its commit job, done
    assert await store.get_session("old") is not None  # a dry run writes nothing
    assert len(await store.entries("old")) == 2
    real = await store.prune(rules(clock, jobs=None), at=clock.now())
    assert real == dry
    assert await store.get_session("old") is None
    assert await store.entries("old") == []
    assert await store.cursors("old") == []
    assert await store.list_jobs(session_id="old") == []
    assert await store.get_session("recent") is not None
    assert (await store.prune(rules(clock, jobs=None), at=clock.now())).empty


async def test_what_a_provider_has_not_received_stays(store: Store, clock: FakeClock) -> None:
    await ended(store, clock, "behind", delivered={"local": 1})
    await ended(store, clock, "never", delivered={})
    await ended(store, clock, "one-of-two", delivered={"local": 2})
    await ended(store, clock, "both", delivered={"local": 2, "openviking": 2})
    await ended(store, clock, "empty", turns=0, delivered={})
    await ended(store, clock, "forgotten", delivered={}, reason=EndReason.FORGET)
    await finish_jobs(store, clock)
    clock.advance(40 * DAY)
    report = await store.prune(rules(clock, providers=("local", "openviking")), at=clock.now())
    assert sorted(report.sessions) == ["both", "empty", "forgotten"]
    for kept in ("behind", "never", "one-of-two"):
        assert await store.get_session(kept) is not None


async def test_unfinished_sessions_and_work_stay(store: Store, clock: FakeClock) -> None:
    await ended(store, clock, "ending", gating=True)  # its commit is still pending
    await ended(store, clock, "pending-job")  # finalized, but a job of it is pending
    await store.start_session(new_session("live", key="key-live", chat_id="live", at=clock.now()))
    clock.advance(40 * DAY)
    report = await store.prune(rules(clock), at=clock.now())
    assert report.sessions == ()
    for kept in ("ending", "pending-job", "live"):
        assert await store.get_session(kept) is not None
    assert len(await store.list_jobs(state=JobState.PENDING)) == 2


async def test_a_session_being_handled_stays(store: Store, clock: FakeClock) -> None:
    await ended(store, clock, "held")
    await finish_jobs(store, clock)
    clock.advance(40 * DAY)
    lease = await store.acquire_lease("key-held", "replica", at=clock.now(), lease_seconds=30)
    assert lease is not None
    assert (await store.prune(rules(clock), at=clock.now())).sessions == ()
    clock.advance(31)
    assert (await store.prune(rules(clock), at=clock.now())).sessions == ("held",)


async def test_done_jobs_go_after_their_cutoff(store: Store, clock: FakeClock) -> None:
    await store.enqueue([new_job("old-done"), new_job("old-pending")], at=clock.now())
    [done] = await store.claim_jobs("w", at=clock.now(), lease_seconds=60)
    await store.complete_job(done.id, done.fencing_token, at=clock.now())
    clock.advance(8 * DAY)
    await store.enqueue([new_job("new-done")], at=clock.now())
    [fresh] = await store.claim_jobs("w", at=clock.now(), lease_seconds=60)
    await store.complete_job(fresh.id, fresh.fencing_token, at=clock.now())
    report = await store.prune(rules(clock), at=clock.now())
    assert report.jobs == 1
    assert await store.get_job(done.id) is None
    assert await store.get_job(fresh.id) is not None
    assert len(await store.list_jobs(state=JobState.PENDING)) == 1


async def _dead(store: Store, clock: FakeClock, key: str, session_id: str | None) -> int:
    await store.enqueue([new_job(key, session_id=session_id)], at=clock.now())
    [job] = await store.claim_jobs("w", at=clock.now(), lease_seconds=60)
    assert await store.bury_job(job.id, job.fencing_token, error="boom", at=clock.now())
    return job.id


async def test_dead_letters_of_live_sessions_stay(store: Store, clock: FakeClock) -> None:
    await store.start_session(new_session("live", key="key-live", at=clock.now()))
    loose = await _dead(store, clock, "loose", None)
    of_live = await _dead(store, clock, "of-live", "live")
    clock.advance(31 * DAY)
    report = await store.prune(rules(clock), at=clock.now())
    assert report.dead_letters == (loose,)
    assert [d.job_id for d in await store.dead_letters()] == [of_live]
    assert await store.get_job(loose) is None


async def test_a_finalized_session_with_a_dead_job_goes_with_its_letter(
    store: Store, clock: FakeClock
) -> None:
    await ended(store, clock, "s")
    await finish_jobs(store, clock)
    letter = await _dead(store, clock, "hook-event", "s")
    clock.advance(20 * DAY)
    early = await store.prune(rules(clock, sessions=10), at=clock.now())
    assert early.sessions == ()  # its dead letter is still kept, so is the session
    assert [d.job_id for d in await store.dead_letters()] == [letter]
    clock.advance(11 * DAY)
    dry = await store.prune(rules(clock), at=clock.now(), dry_run=True)
    assert dry.sessions == ("s",)
    assert dry.dead_letters == (letter,)
    assert await store.prune(rules(clock), at=clock.now()) == dry
    assert await store.dead_letters() == []
    assert await store.get_job(letter) is None


async def test_expired_leases_go_live_ones_stay(store: Store, clock: FakeClock) -> None:
    await store.acquire_lease("dead-holder", "gone", at=clock.now(), lease_seconds=10)
    clock.advance(2 * DAY)
    await store.acquire_lease("live", "replica", at=clock.now(), lease_seconds=10)
    report = await store.prune(rules(clock), at=clock.now())
    assert report.leases == 1
    assert await store.lease_of("dead-holder") is None
    assert await store.lease_of("live") is not None


async def test_none_keeps_an_artefact_and_limit_bounds_a_call(
    store: Store, clock: FakeClock
) -> None:
    for n in range(5):
        await ended(store, clock, f"s{n}")
        clock.advance(1)
    await finish_jobs(store, clock)
    clock.advance(40 * DAY)
    keep_all = rules(clock, sessions=None, jobs=None, letters=None, leases=None)
    assert await store.prune(keep_all, at=clock.now()) == PruneReport()
    first = await store.prune(rules(clock, jobs=None, limit=2), at=clock.now())
    assert first.sessions == ("s0", "s1")  # oldest end first
    rest = await store.prune(rules(clock, jobs=None, limit=10), at=clock.now())
    assert rest.sessions == ("s2", "s3", "s4")


async def test_a_pruned_conversation_never_comes_back(store: Store, clock: FakeClock) -> None:
    await ended(store, clock, "old")
    await finish_jobs(store, clock)
    clock.advance(40 * DAY)
    await store.prune(rules(clock), at=clock.now())
    assert await store.routed_session("key-old") is None
    with pytest.raises(NotFound):
        await store.reopen_session("old", at=clock.now())
    fresh = await store.start_session(new_session("next", key="key-old", at=clock.now()))
    assert fresh.turn_count == 0
    assert await store.entries("next") == []


async def test_stale_sessions_are_the_idle_active_unheld_ones(
    store: Store, clock: FakeClock
) -> None:
    for name in ("idle", "held"):
        await store.start_session(
            new_session(name, key=f"key-{name}", chat_id=name, at=clock.now())
        )
    await ended(store, clock, "ended")
    clock.advance(100 * DAY)
    await store.start_session(new_session("busy", key="key-busy", chat_id="busy", at=clock.now()))
    await store.acquire_lease("key-held", "replica", at=clock.now(), lease_seconds=30)
    cutoff = clock.now() - timedelta(days=90)
    stale = await store.stale_sessions(idle_before=cutoff, at=clock.now(), limit=10)
    assert [s.id for s in stale] == ["idle"]
    assert await store.stale_sessions(idle_before=cutoff, at=clock.now(), limit=0) == []


async def test_retention_input_is_checked(store: Store, clock: FakeClock) -> None:
    naive = clock.now().replace(tzinfo=None)
    with pytest.raises(InvalidInput):
        await store.prune(rules(clock), at=naive)
    with pytest.raises(InvalidInput):
        await store.stale_sessions(idle_before=naive, at=clock.now(), limit=1)
