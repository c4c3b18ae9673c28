"""GuardedProvider: capabilities kept, circuit breaker on a fake clock, concurrency lanes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from sessiongate.errors import ConfigError, ProviderRejected, ProviderUnavailable
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.memory.guard import CircuitState, GuardedProvider, GuardSettings
from sessiongate.memory.provider import (
    Forgetting,
    ProviderSession,
    RecallHit,
    RecallScope,
    Reconciling,
)
from sessiongate.memory.sync import MemorySync
from sessiongate.models import ChatType, Entry, Role, SessionState, Source
from sessiongate.retry import RetryPolicies, RetryPolicy
from sessiongate.store.memory import MemoryStore
from sessiongate.testing import FakeClock, new_entry, new_session
from sessiongate.testing.provider import FakeProvider, ProviderDown
from sessiongate.testing.proxy import FaultyProvider

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SESSION = ProviderSession("s-1", "agent:main:telegram:dm:c1", "telegram", "u-1", "c1")


def entry(seq: int) -> Entry:
    return Entry("s-1", seq, Role.USER, f"turn {seq}", AT, 2)


async def deliver(provider: GuardedProvider, seq: int = 1) -> None:
    await provider.deliver(SESSION, [entry(seq)], idempotency_key=f"s-1:{seq}-{seq}")


def state(guarded: GuardedProvider) -> CircuitState:
    return guarded.breaker.state


async def spin(rounds: int = 20) -> None:
    """Let every ready task run until it blocks."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Gate(FakeProvider):
    """A fake provider whose calls wait at a gate; counts calls in flight."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_next: Exception | None = None

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            if self.fail_next is not None:
                raise self.fail_next
            await super().deliver(session, entries, idempotency_key=idempotency_key)
        finally:
            self.in_flight -= 1

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
        return [RecallHit(self.name, f"recalled {query}")]


# -- capabilities ------------------------------------------------------------------------


class Plain:
    """A provider with neither reconciliation nor forgetting."""

    name = "plain"
    max_batch = 5

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        return None

    async def commit(self, session: ProviderSession, **_: object) -> object:
        return None

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
        return []


class ForgetOnly(Plain):
    async def forget(self, *, user_id: str | None, session: ProviderSession | None) -> None:
        return None


def test_wrappers_expose_exactly_the_capabilities_of_the_provider_inside() -> None:
    clock = FakeClock(AT)
    full = GuardedProvider(FakeProvider(), clock=clock)
    plain = GuardedProvider(Plain(), clock=clock)  # type: ignore[arg-type]
    forgets = GuardedProvider(ForgetOnly(), clock=clock)  # type: ignore[arg-type]
    assert isinstance(full, Reconciling)
    assert isinstance(full, Forgetting)
    assert not isinstance(plain, Reconciling)
    assert not isinstance(plain, Forgetting)
    assert isinstance(forgets, Forgetting)
    assert not isinstance(forgets, Reconciling)
    assert all(isinstance(p, GuardedProvider) for p in (full, plain, forgets))
    # Nesting keeps them too, and a wrapper of another kind sees the same.
    assert isinstance(FaultyProvider(full), Reconciling)
    assert not isinstance(GuardedProvider(plain, clock=clock), Reconciling)
    assert type(full).__name__ == "GuardedProvider"
    assert (full.name, full.max_batch) == ("fake", 50)


async def test_reconciliation_and_forgetting_reach_the_provider_inside() -> None:
    fake = FakeProvider()
    guarded = GuardedProvider(fake, clock=FakeClock(AT))
    assert isinstance(guarded, Reconciling)
    assert isinstance(guarded, Forgetting)
    await deliver(guarded, 1)
    assert await guarded.uncommitted_count(SESSION) == 1
    await guarded.forget(user_id=None, session=SESSION)
    assert fake.forgotten == {"s-1"}


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        GuardSettings(concurrency=0)
    with pytest.raises(ConfigError, match="cooldown_seconds"):
        GuardSettings(cooldown_seconds=0)


# -- the circuit breaker -------------------------------------------------------------------


def guarded_down(clock: FakeClock, **settings: float) -> tuple[GuardedProvider, FakeProvider]:
    fake = FakeProvider(name="mem", down=True)
    values: dict[str, float] = {"failure_threshold": 3, "cooldown_seconds": 30.0}
    values.update(settings)
    return GuardedProvider(fake, GuardSettings(**values), clock=clock), fake  # type: ignore[arg-type]


async def test_consecutive_failures_open_the_circuit_and_calls_then_fail_fast() -> None:
    clock = FakeClock(AT)
    guarded, fake = guarded_down(clock)
    for _ in range(3):
        with pytest.raises(ProviderDown):
            await deliver(guarded)
    assert state(guarded) is CircuitState.OPEN

    with pytest.raises(ProviderUnavailable) as refused:
        await deliver(guarded, 7)
    message = str(refused.value)
    assert "'mem'" in message
    assert "3 consecutive failures" in message
    assert "seqs 7-7 of session s-1" in message
    assert (AT + timedelta(seconds=30)).isoformat() in message
    assert "ProviderDown: mem is down" in message
    # The down provider was not called again.
    assert fake.delivery_calls == 3


async def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    clock = FakeClock(AT)
    guarded, fake = guarded_down(clock)
    for down in (True, True, False, True, True):
        fake.down = down
        if down:
            with pytest.raises(ProviderDown):
                await deliver(guarded)
        else:
            await deliver(guarded)
    assert state(guarded) is CircuitState.CLOSED
    assert guarded.breaker.failures == 2


async def test_after_the_cooldown_one_trial_goes_through_and_success_closes() -> None:
    clock = FakeClock(AT)
    gate = Gate(name="mem", down=True)
    guarded = GuardedProvider(
        gate, GuardSettings(failure_threshold=1, cooldown_seconds=30.0), clock=clock
    )
    gate.gate.set()
    with pytest.raises(ProviderDown):
        await deliver(guarded)
    clock.advance(29.9)
    with pytest.raises(ProviderUnavailable, match="circuit is open"):
        await deliver(guarded)
    assert gate.delivery_calls == 1

    clock.advance(0.1)
    assert state(guarded) is CircuitState.HALF_OPEN
    gate.down, gate.gate = False, asyncio.Event()
    trial = asyncio.create_task(deliver(guarded, 1))
    await spin()
    assert gate.in_flight == 1
    # While the trial is out, everything else still fails fast.
    with pytest.raises(ProviderUnavailable, match="half-open and a trial call is in flight"):
        await deliver(guarded, 2)
    gate.gate.set()
    await trial
    assert state(guarded) is CircuitState.CLOSED
    assert guarded.breaker.retry_at is None
    await deliver(guarded, 2)
    assert gate.seqs("s-1") == [1, 2]


async def test_a_failed_trial_opens_the_circuit_for_another_cooldown() -> None:
    clock = FakeClock(AT)
    guarded, fake = guarded_down(clock, failure_threshold=2, cooldown_seconds=10.0)
    for _ in range(2):
        with pytest.raises(ProviderDown):
            await deliver(guarded)
    clock.advance(10)
    with pytest.raises(ProviderDown):
        await deliver(guarded)  # the trial: one failure re-opens
    assert state(guarded) is CircuitState.OPEN
    assert guarded.breaker.retry_at == clock.now() + timedelta(seconds=10)
    with pytest.raises(ProviderUnavailable):
        await deliver(guarded)
    assert fake.delivery_calls == 3


async def test_a_refusal_proves_the_provider_answered() -> None:
    clock = FakeClock(AT)
    gate = Gate(name="mem")
    gate.gate.set()
    guarded = GuardedProvider(gate, GuardSettings(failure_threshold=2), clock=clock)
    gate.fail_next = ConnectionError("refused")
    with pytest.raises(ConnectionError):
        await deliver(guarded)
    gate.fail_next = ProviderRejected("bad credentials")
    with pytest.raises(ProviderRejected):
        await deliver(guarded)
    gate.fail_next = ConnectionError("refused")
    with pytest.raises(ConnectionError):
        await deliver(guarded)
    assert state(guarded) is CircuitState.CLOSED
    assert guarded.breaker.failures == 1


async def test_a_cancelled_trial_lets_the_next_call_try() -> None:
    clock = FakeClock(AT)
    gate = Gate(name="mem", down=True)
    gate.gate.set()
    guarded = GuardedProvider(
        gate, GuardSettings(failure_threshold=1, cooldown_seconds=5.0), clock=clock
    )
    with pytest.raises(ProviderDown):
        await deliver(guarded)
    clock.advance(5)
    gate.gate = asyncio.Event()
    trial = asyncio.create_task(deliver(guarded))
    await spin()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert state(guarded) is CircuitState.HALF_OPEN
    gate.down = False
    gate.gate.set()
    await deliver(guarded, 1)
    assert state(guarded) is CircuitState.CLOSED


# -- concurrency -----------------------------------------------------------------------


async def test_calls_beyond_the_limit_wait_then_fail_as_busy_without_counting() -> None:
    clock = FakeClock(AT)
    gate = Gate(name="mem")
    guarded = GuardedProvider(
        gate, GuardSettings(concurrency=2, queue_seconds=5.0, failure_threshold=1), clock=clock
    )
    running = [asyncio.create_task(deliver(guarded, seq)) for seq in (1, 2)]
    waiting = asyncio.create_task(deliver(guarded, 3))
    await spin()
    assert (gate.in_flight, waiting.done()) == (2, False)

    clock.advance(5.0)
    await spin()
    with pytest.raises(ProviderUnavailable, match="busy: no free slot within 5 s"):
        await waiting
    # Busy says nothing about the provider's health.
    assert state(guarded) is CircuitState.CLOSED
    assert guarded.breaker.failures == 0

    gate.gate.set()
    await asyncio.gather(*running)
    await deliver(guarded, 3)
    assert gate.most_in_flight == 2
    assert sorted(gate.seqs("s-1")) == [1, 2, 3]


async def test_a_waiting_call_gets_the_slot_a_finished_one_frees() -> None:
    clock = FakeClock(AT)
    gate = Gate(name="mem")
    guarded = GuardedProvider(gate, GuardSettings(concurrency=1), clock=clock)
    first = asyncio.create_task(deliver(guarded, 1))
    second = asyncio.create_task(deliver(guarded, 2))
    await spin()
    assert gate.in_flight == 1
    gate.gate.set()
    await asyncio.gather(first, second)
    assert gate.most_in_flight == 1
    assert gate.seqs("s-1") == [1, 2]


async def test_recall_has_its_own_lane() -> None:
    clock = FakeClock(AT)
    gate = Gate(name="mem")
    guarded = GuardedProvider(gate, GuardSettings(concurrency=1), clock=clock)
    blocked = asyncio.create_task(deliver(guarded, 1))
    await spin()
    hits = await guarded.recall(RecallScope("u-1"), "tea", limit=3)
    assert [hit.text for hit in hits] == ["recalled tea"]
    gate.gate.set()
    await blocked


# -- wired into the lifecycle ------------------------------------------------------------


async def test_a_down_provider_fails_fast_while_the_other_commits() -> None:
    store, clock = MemoryStore(), FakeClock(AT)
    down, up = FakeProvider(name="down", down=True), FakeProvider(name="up")
    asked = FaultyProvider(down)  # journals every call that reaches the down provider
    life = Lifecycle(
        store,
        LifecycleSettings(providers=("down", "up")),
        providers={"down": asked, "up": up},
        hooks=HookDispatcher(),
        clock=clock,
        rand=random.Random(3),
        retry=RetryPolicies(default=RetryPolicy(base_delay=1.0, max_delay=1.0, max_attempts=50)),
        guard=GuardSettings(failure_threshold=2, cooldown_seconds=60.0),
    )
    assert all(isinstance(p, GuardedProvider) for p in life.providers.values())
    source = Source("telegram", "c1", ChatType.DM, user_id="u-1")
    session = (await life.engine.route(source)).session
    for text in ("hello", "hi there"):
        await life.engine.record(session.id, Role.USER, text)
    await life.engine.new_session(source)

    for _ in range(10):
        await life.drain()
        clock.advance(1.0)

    assert up.seqs(session.id) == [1, 2]
    assert up.committed_upto(session.id) == 2
    # Ten rounds of retries, but the down provider was asked only until its circuit opened.
    assert len(asked.journal) == 2
    assert all(call.error and "ProviderDown" in call.error for call in asked.journal)
    [cursor] = [c for c in await store.cursors(session.id) if c.provider == "down"]
    assert cursor.last_error is not None
    assert "circuit is open after 2 consecutive failures" in cursor.last_error
    ended = await store.get_session(session.id)
    assert ended is not None
    assert ended.state is SessionState.ENDING

    down.down = False
    clock.advance(60.0)
    for _ in range(5):
        await life.drain()
        clock.advance(1.0)
    assert down.seqs(session.id) == [1, 2]
    finalized = await store.get_session(session.id)
    assert finalized is not None
    assert finalized.state is SessionState.FINALIZED


async def test_memory_sync_still_reconciles_through_the_guard() -> None:
    store, clock = MemoryStore(), FakeClock(AT)
    fake = FakeProvider(name="counted", max_batch=2, idempotent=False)
    guarded = GuardedProvider(fake, clock=clock)
    sync = MemorySync(store, {"counted": guarded}, clock=clock)
    session = await store.start_session(new_session("s-9", at=AT))
    await store.append_entries(session.id, [new_entry(f"t{i}") for i in range(3)], at=AT)
    session_now = await store.get_session("s-9")
    assert session_now is not None
    # A batch landed whose acknowledgement never came back.
    entries = await store.entries("s-9", upto_seq=2)
    await fake.deliver(ProviderSession.of(session_now), entries, idempotency_key="lost")
    assert await sync.deliver(guarded, session_now, upto_seq=3) == 3
    assert fake.seqs("s-9") == [1, 2, 3]
