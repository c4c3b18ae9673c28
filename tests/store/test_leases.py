"""Store contract: conversation leases and the fencing of writes (every store kind)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sessiongate.errors import InvalidInput, LeaseLost, SessionClosed
from sessiongate.models import EndReason, EndRequest, Lease, SessionState, Timer
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_entry, new_job, new_session


async def test_a_free_key_is_taken_and_a_held_one_is_refused(
    store: Store, clock: FakeClock
) -> None:
    lease = await store.acquire_lease("k", "replica-a", at=clock.now(), lease_seconds=30)
    assert lease is not None
    assert (lease.key, lease.owner) == ("k", "replica-a")
    assert lease.acquired_at == clock.now()
    assert (lease.expires_at - lease.acquired_at).total_seconds() == 30
    assert await store.lease_of("k") == lease
    clock.advance(29)
    assert await store.acquire_lease("k", "replica-b", at=clock.now(), lease_seconds=30) is None
    # Not even its own holder takes a live lease twice: one message at a time.
    assert await store.acquire_lease("k", "replica-a", at=clock.now(), lease_seconds=30) is None
    assert await store.lease_of("k") == lease


async def test_an_expired_lease_is_taken_over_with_a_larger_token(
    store: Store, clock: FakeClock
) -> None:
    first = await store.acquire_lease("k", "replica-a", at=clock.now(), lease_seconds=10)
    assert first is not None
    clock.advance(10)  # expired from expires_at on
    second = await store.acquire_lease("k", "replica-b", at=clock.now(), lease_seconds=10)
    assert second is not None
    assert second.owner == "replica-b"
    assert second.token > first.token
    assert await store.renew_lease(first, at=clock.now(), lease_seconds=10) is None
    assert await store.release_lease(first) is False
    assert await store.lease_of("k") == second


async def test_tokens_only_grow_across_keys_and_releases(store: Store, clock: FakeClock) -> None:
    tokens = []
    for key in ["a", "b", "a", "c", "a"]:
        lease = await store.acquire_lease(key, "replica", at=clock.now(), lease_seconds=5)
        assert lease is not None
        tokens.append(lease.token)
        assert await store.release_lease(lease) is True
    assert tokens == sorted(set(tokens))
    assert await store.lease_of("a") is None


async def test_renewal_moves_the_expiry_of_the_holder_only(store: Store, clock: FakeClock) -> None:
    lease = await store.acquire_lease("k", "replica-a", at=clock.now(), lease_seconds=10)
    assert lease is not None
    clock.advance(8)
    renewed = await store.renew_lease(lease, at=clock.now(), lease_seconds=10)
    assert renewed is not None
    assert renewed.token == lease.token
    assert renewed.expires_at == clock.now() + timedelta(seconds=10)
    clock.advance(9)  # past the first expiry, before the renewed one
    assert await store.acquire_lease("k", "replica-b", at=clock.now(), lease_seconds=10) is None


async def test_concurrent_acquirers_get_the_key_once(store: Store, clock: FakeClock) -> None:
    results = await asyncio.gather(
        *(
            store.acquire_lease("k", f"replica-{n}", at=clock.now(), lease_seconds=30)
            for n in range(8)
        )
    )
    won = [lease for lease in results if lease is not None]
    assert len(won) == 1
    assert await store.lease_of("k") == won[0]


async def test_lease_input_is_checked(store: Store, clock: FakeClock) -> None:
    with pytest.raises(InvalidInput):
        await store.acquire_lease("../k", "replica", at=clock.now(), lease_seconds=5)
    with pytest.raises(InvalidInput):
        await store.acquire_lease("k", "replica", at=clock.now(), lease_seconds=-1)
    with pytest.raises(InvalidInput):
        await store.acquire_lease(
            "k", "replica", at=clock.now().replace(tzinfo=None), lease_seconds=5
        )
    assert await store.lease_of("k") is None


async def _held(store: Store, clock: FakeClock, key: str = "k") -> Lease:
    lease = await store.acquire_lease(key, "replica-a", at=clock.now(), lease_seconds=10)
    assert lease is not None
    return lease


async def _taken_over(store: Store, clock: FakeClock, key: str = "k") -> Lease:
    clock.advance(11)
    lease = await store.acquire_lease(key, "replica-b", at=clock.now(), lease_seconds=10)
    assert lease is not None
    return lease


async def test_fenced_appends_stop_when_the_lease_is_taken(store: Store, clock: FakeClock) -> None:
    await store.start_session(new_session("s-1", key="k", at=clock.now()))
    old = await _held(store, clock)
    await store.append_entries("s-1", [new_entry("one")], at=clock.now(), fence=old)
    clock.advance(11)
    # Expired but nobody took it: the holder still writes (the fence is the token).
    await store.append_entries("s-1", [new_entry("two")], at=clock.now(), fence=old)
    new = await _taken_over(store, clock)
    with pytest.raises(LeaseLost):
        await store.append_entries("s-1", [new_entry("late")], at=clock.now(), fence=old)
    await store.append_entries("s-1", [new_entry("three")], at=clock.now(), fence=new)
    assert [e.text for e in await store.entries("s-1")] == ["one", "two", "three"]


async def test_concurrent_fenced_appends_refuse_only_the_stale_ones(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(new_session("s-1", key="k", at=clock.now()))
    await store.start_session(new_session("s-2", key="j", chat_id="chat-2", at=clock.now()))
    old = await _held(store, clock)
    new = await _taken_over(store, clock)
    other = await _held(store, clock, key="j")
    outcomes = await asyncio.gather(
        store.append_entries("s-1", [new_entry("stale")], at=clock.now(), fence=old),
        store.append_entries("s-1", [new_entry("fresh")], at=clock.now(), fence=new),
        store.append_entries("s-2", [new_entry("other")], at=clock.now(), fence=other),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], LeaseLost)
    assert [e.text for e in await store.entries("s-1")] == ["fresh"]
    assert [e.text for e in await store.entries("s-2")] == ["other"]


async def test_fenced_session_writes_stop_when_the_lease_is_taken(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(new_session("s-1", key="k", at=clock.now()))
    old = await _held(store, clock)
    await _taken_over(store, clock)
    end = EndRequest("s-1", EndReason.NEW, at=clock.now(), fence=old)
    with pytest.raises(LeaseLost):
        await store.end_session(end)
    with pytest.raises(LeaseLost):
        await store.start_session(new_session("s-2", key="k", at=clock.now()), end=end)
    with pytest.raises(LeaseLost):
        await store.start_session(new_session("s-3", key="other", at=clock.now()), fence=old)
    session = await store.get_session("s-1")
    assert session is not None
    assert session.state is SessionState.ACTIVE
    assert await store.get_session("s-2") is None
    assert await store.get_session("s-3") is None
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    with pytest.raises(LeaseLost):
        await store.reopen_session("s-1", at=clock.now(), fence=old)
    ended = await store.get_session("s-1")
    assert ended is not None
    assert ended.state is not SessionState.ACTIVE


async def test_an_append_can_give_its_lease_up_with_it(store: Store, clock: FakeClock) -> None:
    await store.start_session(new_session("s-1", key="k", at=clock.now()))
    lease = await _held(store, clock)
    await store.append_entries(
        "s-1", [new_entry("last")], at=clock.now(), fence=lease, release=True
    )
    assert await store.lease_of("k") is None
    assert [e.text for e in await store.entries("s-1")] == ["last"]
    taken = await store.acquire_lease("k", "replica-b", at=clock.now(), lease_seconds=10)
    assert taken is not None
    assert taken.token > lease.token


async def test_a_refused_append_keeps_its_lease(store: Store, clock: FakeClock) -> None:
    await store.start_session(new_session("s-1", key="k", at=clock.now()))
    lease = await _held(store, clock)
    await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    with pytest.raises(SessionClosed):
        await store.append_entries(
            "s-1", [new_entry("late")], at=clock.now(), fence=lease, release=True
        )
    assert await store.lease_of("k") == lease


async def test_appends_written_together_give_their_leases_up(
    store: Store, clock: FakeClock
) -> None:
    leases = []
    for n in range(4):
        await store.start_session(
            new_session(f"s-{n}", key=f"k{n}", chat_id=f"c{n}", at=clock.now())
        )
        leases.append(await _held(store, clock, key=f"k{n}"))
    await asyncio.gather(
        *(
            store.append_entries(
                f"s-{n}", [new_entry(f"last {n}")], at=clock.now(), fence=lease, release=n % 2 == 0
            )
            for n, lease in enumerate(leases)
        )
    )
    assert [await store.lease_of(f"k{n}") for n in range(4)] == [None, leases[1], None, leases[3]]


async def test_a_live_lease_of_a_dead_holder_can_be_replaced(
    store: Store, clock: FakeClock
) -> None:
    dead = await store.acquire_lease("k", "host:1:dead", at=clock.now(), lease_seconds=30)
    assert dead is not None
    wrong = await store.acquire_lease(
        "k", "replica", at=clock.now(), lease_seconds=30, replacing="host:2:other"
    )
    assert wrong is None
    taken = await store.acquire_lease(
        "k", "replica", at=clock.now(), lease_seconds=30, replacing="host:1:dead"
    )
    assert taken is not None
    assert taken.owner == "replica"
    assert taken.token > dead.token
    with pytest.raises(LeaseLost):
        await store.start_session(new_session("s-1", key="k", at=clock.now()), fence=dead)


async def test_the_leases_of_a_dead_holder_end_at_once(store: Store, clock: FakeClock) -> None:
    await store.start_session(new_session("s-1", key="k", at=clock.now()))
    await store.set_timer(Timer("s-1", "reset", clock.now()))
    await store.enqueue([new_job("work"), new_job("other")], at=clock.now())
    [job] = await store.claim_jobs("dead", at=clock.now(), lease_seconds=60)
    [timer] = await store.claim_timers("dead", at=clock.now(), lease_seconds=60)
    held = await store.acquire_lease("k", "dead", at=clock.now(), lease_seconds=60)
    [other] = await store.claim_jobs("alive", at=clock.now(), lease_seconds=60)
    assert held is not None
    assert timer.lease_owner == "dead"
    assert await store.lease_holders(at=clock.now()) == ["alive", "dead"]
    clock.advance(1)
    assert await store.expire_leases_of("dead", at=clock.now()) == 3
    assert await store.lease_holders(at=clock.now()) == ["alive"]
    # Claimable at once by anyone; the dead holder's token no longer holds.
    [again] = await store.claim_jobs("heir", at=clock.now(), lease_seconds=60)
    assert again.id == job.id
    assert again.fencing_token > job.fencing_token
    assert not await store.complete_job(job.id, job.fencing_token, at=clock.now())
    [timer_again] = await store.claim_timers("heir", at=clock.now(), lease_seconds=60)
    assert timer_again.lease_owner == "heir"
    assert await store.acquire_lease("k", "heir", at=clock.now(), lease_seconds=60) is not None
    still = await store.get_job(other.id)
    assert still is not None
    assert still.lease_owner == "alive"  # another holder's lease is untouched
    assert await store.expire_leases_of("nobody", at=clock.now()) == 0
