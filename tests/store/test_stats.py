"""Store contract: `stats`, the aggregates behind `/metrics` (every store kind)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sessiongate.errors import InvalidInput
from sessiongate.models import EndReason, EndRequest, SessionState
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_entry, new_job, new_session


async def _session(store: Store, clock: FakeClock, session_id: str, turns: int) -> None:
    await store.start_session(new_session(session_id, at=clock.now()))
    if turns:
        entries = [new_entry(f"{session_id} #{n}") for n in range(turns)]
        await store.append_entries(session_id, entries, at=clock.now())


async def _end(
    store: Store, clock: FakeClock, session_id: str, reason: EndReason, *, gated: bool = False
) -> datetime:
    at = clock.now()
    jobs = [new_job(f"gate:{session_id}", session_id=session_id, gates_finalize=True)]
    assert await store.end_session(
        EndRequest(session_id, reason, at=at, jobs=jobs if gated else ())
    )
    return at


async def _bury(store: Store, clock: FakeClock, key: str, kind: str, **payload: object) -> None:
    # Due in the future and claimed "then", so nothing else can claim it first.
    later = clock.now() + timedelta(hours=1)
    [job_id] = await store.enqueue(
        [new_job(key, kind=kind, payload=payload, run_after=later)], at=clock.now()
    )
    [job] = [
        j
        for j in await store.claim_jobs("t", at=later, lease_seconds=30, limit=10)
        if j.id == job_id
    ]
    assert await store.bury_job(job.id, job.fencing_token, error="boom", at=later)


async def test_an_empty_store_has_zero_everything(store: Store, clock: FakeClock) -> None:
    stats = await store.stats(ended_since=clock.now() - timedelta(hours=1))
    assert stats.sessions == {"active": 0, "ending": 0, "finalized": 0}
    assert (stats.ended, stats.turns, stats.live_turns) == ({}, 0, 0)
    assert (stats.live_delivered, stats.failing_cursors, stats.dead_letters) == ({}, {}, {})
    assert stats.commit_delays == ()


async def test_sessions_turns_and_ends_are_counted(store: Store, clock: FakeClock) -> None:
    await _session(store, clock, "s-live", 3)
    await _session(store, clock, "s-ending", 2)
    await _session(store, clock, "s-done", 4)
    await _session(store, clock, "s-idle", 1)
    await _end(store, clock, "s-ending", EndReason.NEW, gated=True)
    await _end(store, clock, "s-done", EndReason.NEW)
    await _end(store, clock, "s-idle", EndReason.IDLE)
    stats = await store.stats(ended_since=clock.now())
    assert stats.sessions == {"active": 1, "ending": 1, "finalized": 2}
    assert stats.ended == {"new": 2, "idle": 1}
    assert (stats.turns, stats.live_turns) == (10, 5)


async def test_delivery_is_summed_over_live_sessions_per_provider(
    store: Store, clock: FakeClock
) -> None:
    await _session(store, clock, "s-1", 5)
    await _session(store, clock, "s-2", 3)
    await _session(store, clock, "s-old", 7)
    at = clock.now()
    assert await store.advance_cursor("local", "s-1", expected_seq=0, delivered_seq=4, at=at)
    assert await store.advance_cursor("local", "s-2", expected_seq=0, delivered_seq=3, at=at)
    assert await store.advance_cursor("ov", "s-1", expected_seq=0, delivered_seq=1, at=at)
    assert await store.advance_cursor("ov", "s-old", expected_seq=0, delivered_seq=7, at=at)
    await _end(store, clock, "s-old", EndReason.RESET)
    await store.note_cursor_error("ov", "s-2", "503 from the server", at=at)
    await store.note_cursor_error("ov", "s-1", "timeout", at=at)
    stats = await store.stats(ended_since=at)
    assert stats.live_turns == 8
    # s-old is finalized: its cursors no longer count as owed work.
    assert stats.live_delivered == {"local": 7, "ov": 1}
    assert stats.failing_cursors == {"ov": 2}
    # A later success clears the error.
    assert await store.advance_cursor("ov", "s-1", expected_seq=1, delivered_seq=5, at=at)
    assert (await store.stats(ended_since=at)).failing_cursors == {"ov": 1}


async def test_dead_letters_are_counted_by_kind_and_provider(
    store: Store, clock: FakeClock
) -> None:
    await _bury(store, clock, "c1", "memory.commit", provider="ov", session_id="s")
    await _bury(store, clock, "c2", "memory.commit", provider="ov", session_id="t")
    await _bury(store, clock, "c3", "memory.commit", provider="local")
    await _bury(store, clock, "e1", "hook.event", event="session:end")
    await _bury(store, clock, "x1", "odd", provider=7)
    stats = await store.stats(ended_since=clock.now())
    assert stats.dead_letters == {
        ("memory.commit", "ov"): 2,
        ("memory.commit", "local"): 1,
        ("hook.event", ""): 1,
        ("odd", ""): 1,
    }
    await store.redrive(None, at=clock.now())
    assert (await store.stats(ended_since=clock.now())).dead_letters == {}


async def test_commit_delays_cover_recently_finalized_sessions(
    store: Store, clock: FakeClock
) -> None:
    await _session(store, clock, "s-early", 1)
    await _end(store, clock, "s-early", EndReason.NEW)
    clock.advance(60)
    since = clock.now()
    for name in ("s-a", "s-b", "s-unc", "s-live"):
        await _session(store, clock, name, 2)
    ended_a = await _end(store, clock, "s-a", EndReason.NEW)
    for provider, delay in (("local", 2.5), ("ov", 5.0)):
        at = ended_a + timedelta(seconds=delay)
        assert await store.record_commit(provider, "s-a", epoch=1, committed_seq=2, at=at)
    clock.advance(10)
    # s-unc: only a checkpoint commit before its end: no delay to report.
    assert await store.record_commit("local", "s-unc", epoch=1, committed_seq=2, at=clock.now())
    clock.advance(1)
    await _end(store, clock, "s-unc", EndReason.NEW)
    ended_b = await _end(store, clock, "s-b", EndReason.IDLE)
    at = ended_b + timedelta(seconds=0.25)
    assert await store.record_commit("local", "s-b", epoch=1, committed_seq=2, at=at)
    assert await store.record_commit("local", "s-early", epoch=1, committed_seq=1, at=at)
    assert await store.record_commit("local", "s-live", epoch=1, committed_seq=2, at=at)
    stats = await store.stats(ended_since=since)
    assert stats.commit_delays == (0.25, 5.0)
    assert (await store.stats(ended_since=since, limit=1)).commit_delays == (0.25,)
    assert (await store.stats(ended_since=at)).commit_delays == ()
    session = await store.get_session("s-a")
    assert session is not None
    assert session.state is SessionState.FINALIZED


async def test_size_is_known_for_the_databases(store: Store, store_kind: str) -> None:
    await _session(store, FakeClock(datetime.now().astimezone()), "s-1", 2)
    stats = await store.stats(ended_since=datetime.now().astimezone())
    if store_kind == "memory":
        assert stats.size_bytes is None
    else:
        assert stats.size_bytes is not None
        assert stats.size_bytes > 0


async def test_a_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.stats(ended_since=datetime(2026, 1, 1))
