"""Store contract: durable timers and provider cursors."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sessiongate.errors import InvalidInput
from sessiongate.models import Cursor, Timer
from sessiongate.store import Store
from sessiongate.testing import FakeClock

LEASE = 60.0


# -- timers ----------------------------------------------------------------------------


async def test_set_timer_inserts_and_moves(store: Store, clock: FakeClock) -> None:
    due = clock.now() + timedelta(hours=1)
    await store.set_timer(Timer("s-1", "reset", due))
    await store.set_timer(Timer("s-1", "checkpoint", due))
    await store.set_timer(Timer("s-2", "reset", due))
    moved = due + timedelta(minutes=30)
    await store.set_timer(Timer("s-1", "reset", moved))
    assert await store.timers("s-1") == [
        Timer("s-1", "checkpoint", due),
        Timer("s-1", "reset", moved),
    ]
    assert await store.timers("s-2") == [Timer("s-2", "reset", due)]
    assert await store.timers("s-3") == []


async def test_set_timer_stores_no_lease(store: Store, clock: FakeClock) -> None:
    await store.set_timer(Timer("s-1", "reset", clock.now(), "someone", clock.now()))
    assert await store.timers("s-1") == [Timer("s-1", "reset", clock.now())]


@pytest.mark.parametrize(("session_id", "kind"), [("a/b", "reset"), ("s-1", ""), ("..", "x")])
async def test_set_timer_refuses_bad_ids(
    store: Store, clock: FakeClock, session_id: str, kind: str
) -> None:
    with pytest.raises(InvalidInput):
        await store.set_timer(Timer(session_id, kind, clock.now()))
    assert await store.next_timer_due() is None


async def test_claim_timers_takes_due_ones_earliest_first(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    await store.set_timer(Timer("s-late", "reset", now + timedelta(seconds=1)))
    await store.set_timer(Timer("s-b", "idle", now - timedelta(minutes=1)))
    await store.set_timer(Timer("s-a", "reset", now - timedelta(minutes=1)))
    await store.set_timer(Timer("s-a", "idle", now - timedelta(minutes=1)))
    await store.set_timer(Timer("s-0", "reset", now - timedelta(hours=2)))
    await store.set_timer(Timer("s-now", "reset", now))
    claimed = await store.claim_timers("sweeper-1", at=now, lease_seconds=LEASE, limit=3)
    expires = now + timedelta(seconds=LEASE)
    assert claimed == [
        Timer("s-0", "reset", now - timedelta(hours=2), "sweeper-1", expires),
        Timer("s-a", "idle", now - timedelta(minutes=1), "sweeper-1", expires),
        Timer("s-a", "reset", now - timedelta(minutes=1), "sweeper-1", expires),
    ]
    rest = await store.claim_timers("sweeper-2", at=now, lease_seconds=LEASE)
    assert [(t.session_id, t.kind) for t in rest] == [("s-b", "idle"), ("s-now", "reset")]
    assert await store.claim_timers("sweeper-2", at=now, lease_seconds=LEASE) == []
    assert await store.timers("s-a") == [claimed[1], claimed[2]]


async def test_an_expired_timer_lease_is_reclaimed(store: Store, clock: FakeClock) -> None:
    await store.set_timer(Timer("s-1", "reset", clock.now()))
    [first] = await store.claim_timers("a", at=clock.now(), lease_seconds=LEASE)
    clock.advance(LEASE - 0.000001)
    assert await store.claim_timers("b", at=clock.now(), lease_seconds=LEASE) == []
    clock.advance(0.000001)
    [second] = await store.claim_timers("b", at=clock.now(), lease_seconds=LEASE)
    assert (second.lease_owner, second.lease_expires_at) == (
        "b",
        clock.now() + timedelta(seconds=LEASE),
    )
    assert first.lease_owner == "a"
    # The first owner lost it: it can neither delete nor move it.
    assert not await store.release_timer("s-1", "reset", "a")
    assert await store.timers("s-1") == [second]
    assert await store.release_timer("s-1", "reset", "b")
    assert await store.timers("s-1") == []


async def test_claim_timers_respects_limit(store: Store, clock: FakeClock) -> None:
    for n in range(5):
        await store.set_timer(Timer(f"s-{n}", "reset", clock.now() - timedelta(seconds=n)))
    assert await store.claim_timers("a", at=clock.now(), lease_seconds=LEASE, limit=0) == []
    two = await store.claim_timers("a", at=clock.now(), lease_seconds=LEASE, limit=2)
    assert [t.session_id for t in two] == ["s-4", "s-3"]


async def test_release_timer_deletes_or_reschedules(store: Store, clock: FakeClock) -> None:
    await store.set_timer(Timer("s-1", "reset", clock.now()))
    await store.set_timer(Timer("s-2", "reset", clock.now()))
    await store.claim_timers("me", at=clock.now(), lease_seconds=LEASE)
    assert not await store.release_timer("s-1", "reset", "someone-else")
    assert not await store.release_timer("s-1", "other-kind", "me")
    assert await store.release_timer("s-1", "reset", "me")
    assert await store.timers("s-1") == []
    assert not await store.release_timer("s-1", "reset", "me")
    later = clock.now() + timedelta(hours=3)
    assert await store.release_timer("s-2", "reset", "me", reschedule_at=later)
    assert await store.timers("s-2") == [Timer("s-2", "reset", later)]
    assert await store.claim_timers("me", at=clock.now(), lease_seconds=LEASE) == []
    assert [t.session_id for t in await store.claim_timers("x", at=later, lease_seconds=1)] == [
        "s-2"
    ]


async def test_release_of_an_unleased_timer_fails(store: Store, clock: FakeClock) -> None:
    await store.set_timer(Timer("s-1", "reset", clock.now()))
    assert not await store.release_timer("s-1", "reset", "me")
    assert await store.timers("s-1") == [Timer("s-1", "reset", clock.now())]


async def test_set_timer_takes_a_leased_timer_over(store: Store, clock: FakeClock) -> None:
    await store.set_timer(Timer("s-1", "reset", clock.now()))
    await store.claim_timers("sweeper", at=clock.now(), lease_seconds=LEASE)
    moved = clock.now() + timedelta(minutes=15)
    await store.set_timer(Timer("s-1", "reset", moved))
    # The sweeper's stale release must not delete the freshly set timer.
    assert not await store.release_timer("s-1", "reset", "sweeper")
    assert await store.timers("s-1") == [Timer("s-1", "reset", moved)]
    [again] = await store.claim_timers("other", at=moved, lease_seconds=LEASE)
    assert again.lease_owner == "other"


async def test_next_timer_due(store: Store, clock: FakeClock) -> None:
    assert await store.next_timer_due() is None
    now = clock.now()
    await store.set_timer(Timer("s-1", "reset", now + timedelta(hours=2)))
    await store.set_timer(Timer("s-2", "reset", now + timedelta(minutes=7)))
    assert await store.next_timer_due() == now + timedelta(minutes=7)
    await store.claim_timers("w", at=now + timedelta(minutes=7), lease_seconds=LEASE)
    # A leased timer still counts until it is released.
    assert await store.next_timer_due() == now + timedelta(minutes=7)
    assert await store.release_timer("s-2", "reset", "w")
    assert await store.next_timer_due() == now + timedelta(hours=2)


# -- cursors ---------------------------------------------------------------------------


async def test_an_unwritten_cursor_reads_as_zero(store: Store) -> None:
    assert await store.get_cursor("local", "s-1") == Cursor("local", "s-1")
    assert await store.cursors("s-1") == []


async def test_advance_cursor_is_a_compare_and_set(store: Store, clock: FakeClock) -> None:
    assert not await store.advance_cursor(
        "local", "s-1", expected_seq=3, delivered_seq=5, at=clock.now()
    )
    assert await store.cursors("s-1") == []
    first_at = clock.now()
    assert await store.advance_cursor("local", "s-1", expected_seq=0, delivered_seq=4, at=first_at)
    assert await store.get_cursor("local", "s-1") == Cursor(
        "local", "s-1", delivered_seq=4, updated_at=first_at
    )
    clock.advance(1)
    assert not await store.advance_cursor(
        "local", "s-1", expected_seq=0, delivered_seq=9, at=clock.now()
    )
    assert (await store.get_cursor("local", "s-1")).updated_at == first_at
    assert await store.advance_cursor(
        "local", "s-1", expected_seq=4, delivered_seq=9, at=clock.now()
    )
    moved = await store.get_cursor("local", "s-1")
    assert (moved.delivered_seq, moved.updated_at) == (9, clock.now())


async def test_advance_clears_the_last_error(store: Store, clock: FakeClock) -> None:
    await store.note_cursor_error("ov", "s-1", "timeout", at=clock.now())
    assert not await store.advance_cursor(
        "ov", "s-1", expected_seq=1, delivered_seq=2, at=clock.now()
    )
    assert (await store.get_cursor("ov", "s-1")).last_error == "timeout"
    assert await store.advance_cursor("ov", "s-1", expected_seq=0, delivered_seq=2, at=clock.now())
    assert (await store.get_cursor("ov", "s-1")).last_error is None


async def test_record_commit_needs_the_previous_epoch(store: Store, clock: FakeClock) -> None:
    assert await store.advance_cursor("ov", "s-1", expected_seq=0, delivered_seq=6, at=clock.now())
    await store.note_cursor_error("ov", "s-1", "commit failed", at=clock.now())
    assert not await store.record_commit("ov", "s-1", epoch=2, committed_seq=6, at=clock.now())
    assert not await store.record_commit("ov", "s-1", epoch=0, committed_seq=6, at=clock.now())
    committed_at = clock.advance(5)
    assert await store.record_commit("ov", "s-1", epoch=1, committed_seq=6, at=committed_at)
    assert await store.get_cursor("ov", "s-1") == Cursor(
        "ov",
        "s-1",
        delivered_seq=6,
        committed_seq=6,
        commit_epoch=1,
        last_commit_at=committed_at,
        last_error=None,
        updated_at=committed_at,
    )
    clock.advance(1)
    assert not await store.record_commit("ov", "s-1", epoch=1, committed_seq=9, at=clock.now())
    assert (await store.get_cursor("ov", "s-1")).committed_seq == 6
    assert await store.record_commit("ov", "s-1", epoch=2, committed_seq=9, at=clock.now())
    second = await store.get_cursor("ov", "s-1")
    assert (second.commit_epoch, second.committed_seq, second.last_commit_at) == (
        2,
        9,
        clock.now(),
    )
    assert second.delivered_seq == 6


async def test_record_commit_creates_the_cursor(store: Store, clock: FakeClock) -> None:
    assert await store.record_commit("local", "s-1", epoch=1, committed_seq=0, at=clock.now())
    assert await store.cursors("s-1") == [
        Cursor("local", "s-1", commit_epoch=1, last_commit_at=clock.now(), updated_at=clock.now())
    ]


async def test_note_cursor_error_keeps_the_positions(store: Store, clock: FakeClock) -> None:
    assert await store.advance_cursor("ov", "s-1", expected_seq=0, delivered_seq=3, at=clock.now())
    assert await store.record_commit("ov", "s-1", epoch=1, committed_seq=3, at=clock.now())
    before = await store.get_cursor("ov", "s-1")
    noted_at = clock.advance(9)
    await store.note_cursor_error("ov", "s-1", "HTTP 503 \x00 \ud800 😀", at=noted_at)
    assert await store.get_cursor("ov", "s-1") == replace(
        before, last_error="HTTP 503 \ufffd \ufffd 😀", updated_at=noted_at
    )
    await store.note_cursor_error("fresh", "s-2", "first", at=noted_at)
    assert await store.get_cursor("fresh", "s-2") == Cursor(
        "fresh", "s-2", last_error="first", updated_at=noted_at
    )


async def test_cursors_of_a_session_by_provider(store: Store, clock: FakeClock) -> None:
    for provider in ("openviking", "local", "mem0"):
        assert await store.advance_cursor(
            provider, "s-1", expected_seq=0, delivered_seq=1, at=clock.now()
        )
    assert await store.advance_cursor(
        "local", "s-2", expected_seq=0, delivered_seq=7, at=clock.now()
    )
    assert [c.provider for c in await store.cursors("s-1")] == ["local", "mem0", "openviking"]
    assert [c.delivered_seq for c in await store.cursors("s-2")] == [7]
