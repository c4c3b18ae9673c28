"""Store contract: the end funnel and reopening an ended session (every store kind)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from sessiongate.errors import Conflict, InvalidInput, NotFound
from sessiongate.models import (
    EndReason,
    EndRequest,
    JobState,
    Session,
    SessionState,
    Timer,
)
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_entry, new_job, new_session


async def _start(store: Store, clock: FakeClock, session_id: str, **fields: object) -> Session:
    return await store.start_session(new_session(session_id, at=clock.now(), **fields))  # type: ignore[arg-type]


async def _nothing_for(store: Store, session_id: str) -> None:
    """Nothing at all was written about `session_id`."""
    assert await store.get_session(session_id) is None
    assert await store.list_jobs(session_id=session_id) == []
    assert await store.timers(session_id) == []
    assert await store.entries(session_id) == []


# -- end_session -------------------------------------------------------------------


async def test_end_session_is_a_compare_and_set(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1", key="k")
    clock.advance(30)
    first = EndRequest("s-1", EndReason.IDLE, at=clock.now(), detail="idle: 30m")
    assert await store.end_session(first) is True
    ended = await store.get_session("s-1")
    assert ended is not None
    clock.advance(1)
    second = EndRequest(
        "s-1", EndReason.RESET, at=clock.now(), jobs=[new_job("second", session_id="s-1")]
    )
    assert await store.end_session(second) is False
    assert await store.get_session("s-1") == ended
    assert await store.list_jobs() == []


async def test_end_session_compare_and_sets_the_turn_count(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1", key="k")
    await store.append_entries("s-1", [new_entry("one"), new_entry("two")], at=clock.now())
    stale = EndRequest(
        "s-1",
        EndReason.NEW,
        at=clock.now(),
        jobs=[new_job("stale", session_id="s-1")],
        expected_turns=1,
    )
    assert await store.end_session(stale) is False
    still = await store.get_session("s-1")
    assert still is not None
    assert still.state is SessionState.ACTIVE
    assert await store.list_jobs() == []
    assert (await store.routed_session("k")) == still
    exact = replace(stale, expected_turns=2)
    assert await store.end_session(exact) is True
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.state is not SessionState.ACTIVE


async def test_end_session_records_reason_detaches_routing_and_deletes_timers(
    store: Store, clock: FakeClock
) -> None:
    started = await store.start_session(
        new_session("s-1", at=clock.now(), key="k"),
        timers=[
            Timer("s-1", "reset", clock.now() + timedelta(hours=1)),
            Timer("s-1", "checkpoint", clock.now()),
        ],
    )
    await _start(store, clock, "s-9", key="k-9")
    other_timer = Timer("s-9", "reset", clock.now())
    await store.set_timer(other_timer)
    clock.advance(10)
    end = EndRequest(
        "s-1",
        EndReason.AUTO_RESET,
        at=clock.now(),
        detail="daily: 04:00",
        jobs=[
            new_job("commit:s-1", session_id="s-1", gates_finalize=True),
            new_job("event:s-1", session_id="s-1", gates_finalize=True),
        ],
    )
    assert await store.end_session(end)
    ended = await store.get_session("s-1")
    assert ended == replace(
        started,
        state=SessionState.ENDING,
        end_reason=EndReason.AUTO_RESET,
        end_detail="daily: 04:00",
        ended_at=end.at,
    )
    assert await store.routed_session("k") is None
    assert await store.timers("s-1") == []
    assert await store.timers("s-9") == [other_timer]
    assert (await store.routed_session("k-9")) is not None
    jobs = await store.list_jobs(session_id="s-1")
    assert [j.idempotency_key for j in jobs] == ["commit:s-1", "event:s-1"]
    assert all(j.state is JobState.PENDING and j.created_at == end.at for j in jobs)


async def test_end_session_without_gating_jobs_goes_straight_to_finalized(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1")
    await _start(store, clock, "s-2")
    end = EndRequest(
        "s-1",
        EndReason.ADMIN,
        at=clock.now(),
        jobs=[
            new_job("plain", session_id="s-1"),
            new_job("gates-another", session_id="s-2", gates_finalize=True),
            new_job("gates-nothing", gates_finalize=True),
        ],
    )
    assert await store.end_session(end)
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.state is SessionState.FINALIZED
    assert ended.end_reason is EndReason.ADMIN
    assert len(await store.list_jobs()) == 3


async def test_end_session_with_only_done_gating_jobs_finalizes(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1")
    await store.enqueue([new_job("gate", session_id="s-1", gates_finalize=True)], at=clock.now())
    [job] = await store.claim_jobs("w", at=clock.now(), lease_seconds=30)
    assert await store.complete_job(job.id, job.fencing_token, at=clock.now())
    end = EndRequest(
        "s-1",
        EndReason.NEW,
        at=clock.now(),
        jobs=[new_job("gate", session_id="s-1", gates_finalize=True)],
    )
    assert await store.end_session(end)
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.state is SessionState.FINALIZED
    assert len(await store.list_jobs()) == 1


async def test_end_session_waits_for_an_earlier_unfinished_gating_job(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1")
    await store.enqueue([new_job("early", session_id="s-1", gates_finalize=True)], at=clock.now())
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.state is SessionState.ENDING


async def test_end_session_honours_expected_states(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1")
    gate = new_job("gate", session_id="s-1", gates_finalize=True)
    assert await store.end_session(EndRequest("s-1", EndReason.IDLE, at=clock.now(), jobs=[gate]))
    clock.advance(1)
    not_active = EndRequest("s-1", EndReason.PRUNE, at=clock.now())
    assert await store.end_session(not_active) is False
    again = EndRequest(
        "s-1",
        EndReason.PRUNE,
        at=clock.now(),
        expected=(SessionState.ACTIVE, SessionState.ENDING),
    )
    assert await store.end_session(again) is True
    ended = await store.get_session("s-1")
    assert ended is not None
    assert (ended.state, ended.end_reason, ended.ended_at) == (
        SessionState.ENDING,
        EndReason.PRUNE,
        clock.now(),
    )
    finalized_only = replace(again, expected=(SessionState.FINALIZED,))
    assert await store.end_session(finalized_only) is False


async def test_end_session_of_unknown_session_is_not_found(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        await store.end_session(
            EndRequest("ghost", EndReason.NEW, at=clock.now(), jobs=[new_job("g")])
        )
    assert await store.list_jobs() == []


async def test_end_session_refuses_bad_detail_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    started = await _start(store, clock, "s-1", key="k")
    with pytest.raises(InvalidInput):
        await store.end_session(
            EndRequest("s-1", EndReason.NEW, at=clock.now(), detail="bad\x00", jobs=[new_job("j")])
        )
    assert await store.get_session("s-1") == started
    assert await store.routed_session("k") == started
    assert await store.list_jobs() == []


# -- reopen_session ----------------------------------------------------------------


@pytest.mark.parametrize("gating", [True, False])
async def test_reopen_an_ended_session(store: Store, clock: FakeClock, gating: bool) -> None:
    started = await _start(store, clock, "s-1", key="k")
    await store.append_entries("s-1", [new_entry("hi")], at=clock.now())
    jobs = [new_job("gate", session_id="s-1", gates_finalize=gating)]
    assert await store.end_session(EndRequest("s-1", EndReason.SWITCH, at=clock.now(), jobs=jobs))
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.state is (SessionState.ENDING if gating else SessionState.FINALIZED)
    clock.advance(100)
    due = clock.now() + timedelta(hours=2)
    reopened = await store.reopen_session(
        "s-1",
        at=clock.now(),
        timers=[Timer("s-1", "reset", due)],
        jobs=[new_job("resume:s-1", session_id="s-1")],
    )
    assert reopened == replace(
        started, epoch=1, last_activity_at=clock.now(), turn_count=1, token_estimate=1
    )
    assert await store.get_session("s-1") == reopened
    assert await store.routed_session("k") == reopened
    assert await store.timers("s-1") == [Timer("s-1", "reset", due)]
    resume_job = (await store.list_jobs(session_id="s-1"))[-1]
    assert resume_job.idempotency_key == "resume:s-1"
    assert resume_job.created_at == clock.now()
    [entry] = await store.append_entries("s-1", [new_entry("again")], at=clock.now())
    assert entry.seq == 2


async def test_reopen_bumps_the_epoch_each_time(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1")
    for epoch in (1, 2, 3):
        assert await store.end_session(EndRequest("s-1", EndReason.SWITCH, at=clock.now()))
        reopened = await store.reopen_session("s-1", at=clock.now())
        assert reopened.epoch == epoch


async def test_reopen_with_end_switches_the_key(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1", key="k")
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    await _start(store, clock, "s-2", key="k")
    clock.advance(5)
    end = EndRequest(
        "s-2", EndReason.SWITCH, at=clock.now(), jobs=[new_job("end:s-2", session_id="s-2")]
    )
    reopened = await store.reopen_session("s-1", at=clock.now(), end=end)
    assert await store.routed_session("k") == reopened
    switched = await store.get_session("s-2")
    assert switched is not None
    assert (switched.state, switched.end_reason) == (SessionState.FINALIZED, EndReason.SWITCH)
    assert [j.idempotency_key for j in await store.list_jobs()] == ["end:s-2"]


async def test_reopen_an_active_session_conflicts(store: Store, clock: FakeClock) -> None:
    started = await _start(store, clock, "s-1")
    with pytest.raises(Conflict):
        await store.reopen_session("s-1", at=clock.now(), jobs=[new_job("j")])
    assert await store.get_session("s-1") == started
    assert await store.list_jobs() == []


async def test_reopen_conflicts_when_the_key_routes_to_another_session(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1", key="k")
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    ended = await store.get_session("s-1")
    holder = await _start(store, clock, "s-2", key="k")
    with pytest.raises(Conflict):
        await store.reopen_session(
            "s-1", at=clock.now(), timers=[Timer("s-1", "reset", clock.now())]
        )
    assert await store.get_session("s-1") == ended
    assert await store.routed_session("k") == holder
    assert await store.timers("s-1") == []


async def test_reopen_with_failed_end_cas_conflicts_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1", key="k")
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    await _start(store, clock, "s-2", key="k-2")
    assert await store.end_session(EndRequest("s-2", EndReason.IDLE, at=clock.now()))
    before = [await store.get_session("s-1"), await store.get_session("s-2")]
    stale = EndRequest("s-2", EndReason.SWITCH, at=clock.now(), jobs=[new_job("stale")])
    with pytest.raises(Conflict):
        await store.reopen_session("s-1", at=clock.now(), end=stale, jobs=[new_job("resume")])
    assert [await store.get_session("s-1"), await store.get_session("s-2")] == before
    assert await store.routed_session("k") is None
    assert await store.list_jobs() == []


async def test_reopen_unknown_session_is_not_found(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        await store.reopen_session("ghost", at=clock.now())


# -- races -------------------------------------------------------------------------


async def test_racing_starts_on_one_key_leave_exactly_one_session(
    store: Store, clock: FakeClock
) -> None:
    async def open_one(n: int) -> Session | BaseException:
        try:
            return await store.start_session(
                new_session(f"s-{n}", at=clock.now(), key="k"),
                jobs=[new_job(f"start:s-{n}", session_id=f"s-{n}")],
            )
        except Conflict as exc:
            return exc

    results = await asyncio.gather(*(open_one(n) for n in range(8)))
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if r is not winners[0])
    assert await store.routed_session("k") == winners[0]
    assert await store.list_sessions() == winners
    assert [j.session_id for j in await store.list_jobs()] == [winners[0].id]


async def test_racing_ends_of_one_session_succeed_once(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1")
    reasons = [EndReason.IDLE, EndReason.NEW, EndReason.RESET, EndReason.DAILY] * 2
    outcomes = await asyncio.gather(
        *(
            store.end_session(
                EndRequest(
                    "s-1",
                    reason,
                    at=clock.now(),
                    jobs=[new_job(f"end-{n}", session_id="s-1", gates_finalize=True)],
                )
            )
            for n, reason in enumerate(reasons)
        )
    )
    assert outcomes.count(True) == 1
    winner = outcomes.index(True)
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.end_reason is reasons[winner]
    assert [j.idempotency_key for j in await store.list_jobs()] == [f"end-{winner}"]


# -- erase_session (forget) ----------------------------------------------------------


async def test_erase_session_deletes_the_transcript_and_keeps_a_tombstone(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1", key="k")
    await _start(store, clock, "s-2", key="k2")
    await store.append_entries("s-1", [new_entry("secret"), new_entry("more")], at=clock.now())
    await store.append_entries("s-2", [new_entry("kept")], at=clock.now())
    await store.advance_cursor("p", "s-1", expected_seq=0, delivered_seq=2, at=clock.now())
    with pytest.raises(Conflict):
        await store.erase_session("s-1")
    assert len(await store.entries("s-1")) == 2
    assert await store.end_session(EndRequest("s-1", EndReason.FORGET, at=clock.now()))
    assert await store.erase_session("s-1") == 2
    assert await store.entries("s-1") == []
    assert await store.cursors("s-1") == []
    tombstone = await store.get_session("s-1")
    assert tombstone is not None
    assert tombstone.end_reason is EndReason.FORGET
    assert await store.routed_session("k") is None
    assert [e.text for e in await store.entries("s-2")] == ["kept"]
    assert await store.erase_session("s-1") == 0
    with pytest.raises(NotFound):
        await store.erase_session("nope")


async def test_a_forgotten_session_is_never_reopened(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1", key="k")
    await store.append_entries("s-1", [new_entry("secret")], at=clock.now())
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    # Forgetting an ended session goes through the same funnel, from any ended state.
    forget = EndRequest(
        "s-1",
        EndReason.FORGET,
        at=clock.now(),
        expected=(SessionState.ACTIVE, SessionState.ENDING, SessionState.FINALIZED),
    )
    assert await store.end_session(forget)
    await store.erase_session("s-1")
    with pytest.raises(Conflict):
        await store.reopen_session("s-1", at=clock.now())
    session = await store.get_session("s-1")
    assert session is not None
    assert session.end_reason is EndReason.FORGET
    assert await store.routed_session("k") is None
