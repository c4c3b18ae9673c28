"""The retry policy: full-jitter backoff, bounded by attempts and age, deterministic."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.retry import GiveUp, Retry, RetryPolicies, RetryPolicy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FixedRandom:
    """A random source that always draws the same value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value

    def getrandbits(self, k: int, /) -> int:
        return 0


policies = st.builds(
    lambda base, factor, attempts, age: RetryPolicy(
        base_delay=base, max_delay=base * factor, max_attempts=attempts, max_age=age
    ),
    st.floats(min_value=0.001, max_value=60.0),
    st.floats(min_value=1.0, max_value=10_000.0),
    st.integers(min_value=1, max_value=50),
    st.floats(min_value=1.0, max_value=30 * 86400.0),
)


@given(policy=policies, attempts=st.integers(min_value=1, max_value=200), seed=st.integers())
def test_delay_lies_within_the_full_jitter_range(
    policy: RetryPolicy, attempts: int, seed: int
) -> None:
    # Long after enqueue-time bounds would never clamp: isolate the backoff itself.
    long_policy = RetryPolicy(policy.base_delay, policy.max_delay, policy.max_attempts, max_age=1e9)
    decision = long_policy.decide(attempts, T0, T0, random.Random(seed))
    if attempts >= policy.max_attempts:
        assert isinstance(decision, GiveUp)
        return
    assert isinstance(decision, Retry)
    delay = (decision.at - T0).total_seconds()
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** min(attempts - 1, 62))
    assert 0 <= delay <= ceiling + 1e-6


@given(policy=policies, attempts=st.integers(min_value=1, max_value=60), seed=st.integers())
def test_give_up_exactly_at_max_attempts(policy: RetryPolicy, attempts: int, seed: int) -> None:
    decision = policy.decide(attempts, T0, T0, random.Random(seed))
    assert isinstance(decision, GiveUp) == (attempts >= policy.max_attempts)
    if isinstance(decision, GiveUp):
        assert f"{attempts} attempts" in decision.reason


@given(policy=policies, seed=st.integers())
def test_give_up_exactly_at_max_age(policy: RetryPolicy, seed: int) -> None:
    deadline = T0 + timedelta(seconds=policy.max_age)
    just_before = deadline - timedelta(microseconds=1)
    unlimited = RetryPolicy(
        policy.base_delay, policy.max_delay, max_attempts=1000, max_age=policy.max_age
    )
    before = unlimited.decide(1, T0, just_before, random.Random(seed))
    assert isinstance(before, Retry)
    # The retry never lands after the age limit: the last try is at the deadline at latest.
    assert just_before <= before.at <= deadline
    at = unlimited.decide(1, T0, deadline, random.Random(seed))
    assert isinstance(at, GiveUp)
    assert "max_age" in at.reason
    later = unlimited.decide(1, T0, deadline + timedelta(days=3), random.Random(seed))
    assert isinstance(later, GiveUp)


@given(policy=policies, seed=st.integers(), attempts=st.integers(min_value=1, max_value=60))
def test_same_seed_same_decisions(policy: RetryPolicy, seed: int, attempts: int) -> None:
    first = [policy.decide(n, T0, T0, random.Random(seed)) for n in range(1, attempts + 1)]
    second = [policy.decide(n, T0, T0, random.Random(seed)) for n in range(1, attempts + 1)]
    assert first == second


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=30.0, max_attempts=100, max_age=1e6)
    top = FixedRandom(1.0)  # the ceiling itself: the upper end of the jitter
    delays = [
        (decision.at - T0).total_seconds()
        for decision in (policy.decide(n, T0, T0, top) for n in range(1, 8))
        if isinstance(decision, Retry)
    ]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_zero_draw_retries_at_once() -> None:
    policy = RetryPolicy(base_delay=5.0, max_delay=60.0, max_attempts=5, max_age=3600)
    assert policy.decide(3, T0, T0, FixedRandom(0.0)) == Retry(at=T0)


def test_jitter_spreads_retries_over_the_whole_range() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=64.0, max_attempts=20, max_age=1e6)
    rand = random.Random(7)
    delays = []
    for _ in range(500):
        decision = policy.decide(7, T0, T0, rand)
        assert isinstance(decision, Retry)
        delays.append((decision.at - T0).total_seconds())
    assert len(set(delays)) == len(delays)
    assert min(delays) < 64.0 * 0.05
    assert max(delays) > 64.0 * 0.95


def test_absurd_attempt_counts_do_not_overflow() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, max_attempts=10**9, max_age=1e9)
    decision = policy.decide(10**6, T0, T0, FixedRandom(0.5))
    assert decision == Retry(at=T0 + timedelta(seconds=5.0))


def test_attempts_start_at_one() -> None:
    with pytest.raises(InvalidInput, match="attempts"):
        RetryPolicy().decide(0, T0, T0, FixedRandom(0.5))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"base_delay": 0}, "base_delay"),
        ({"base_delay": 10, "max_delay": 5}, "max_delay"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_age": 0}, "max_age"),
        ({"base_delay": float("nan")}, "base_delay"),
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_per_kind_with_a_default() -> None:
    quick = RetryPolicy(base_delay=0.1, max_delay=1.0, max_attempts=3, max_age=60)
    kinds = {"hook.event": quick}
    table = RetryPolicies(default=RetryPolicy(), by_kind=kinds)
    kinds["hook.event"] = RetryPolicy(max_attempts=99)  # the caller's dict does not leak in
    assert table.for_kind("hook.event") is quick
    assert table.for_kind("memory.commit") == RetryPolicy()
    assert isinstance(table.decide("hook.event", 3, T0, T0, FixedRandom(0.5)), GiveUp)
    assert isinstance(table.decide("memory.commit", 3, T0, T0, FixedRandom(0.5)), Retry)
    with pytest.raises(TypeError):
        table.by_kind["x"] = quick  # type: ignore[index]


@pytest.mark.parametrize("seed", range(5))
def test_memory_jobs_wait_out_an_outage_of_days_and_give_up_after_a_week(seed: int) -> None:
    # Imported here: the handlers module is the lifecycle's, this file tests the policy.
    from sessiongate.lifecycle.consumers import MEMORY_COMMIT
    from sessiongate.lifecycle.handlers import default_retry_policies

    policies = default_retry_policies()
    rand = random.Random(seed)
    now, attempts = T0, 1
    while True:
        decision = policies.decide(MEMORY_COMMIT, attempts, T0, now, rand)
        if isinstance(decision, GiveUp):
            break
        # A fast failure (open circuit) takes no time of its own: only the backoff passes.
        now, attempts = max(decision.at, now + timedelta(milliseconds=1)), attempts + 1
    assert now - T0 >= timedelta(days=7)
    assert "old" in decision.reason  # the week ran out, not the attempts
