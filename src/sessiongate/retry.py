"""When to try a failed job again, and when to stop: a pure policy.

A policy looks only at its arguments (how many attempts were made, when the job
was first enqueued, the current time and an injected random source) and returns a
decision; the worker persists it. Backoff is exponential with full jitter: after
the n-th failed attempt the next one waits a uniformly random delay in
`[0, min(max_delay, base_delay * 2 ** (n - 1)))`, which spreads the retries of
many jobs that failed together (a provider outage) instead of stampeding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from sessiongate.clock import RandomSource
from sessiongate.errors import ConfigError, InvalidInput

# Beyond this many doublings every sane ceiling is reached; stopping here keeps the
# arithmetic in floats without overflow for absurd attempt counts.
_MAX_DOUBLINGS = 62


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the job again at `at` (never later than the policy's age limit)."""

    at: datetime


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop retrying: the job becomes a dead letter with this reason."""

    reason: str


RetryDecision = Retry | GiveUp


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by age.

    Durations are in seconds. `max_attempts` counts every attempt, the first
    included; `max_age` is measured from when the job was first enqueued.
    """

    base_delay: float = 1.0
    max_delay: float = 300.0
    max_attempts: int = 10
    max_age: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if not self.base_delay > 0:
            raise ConfigError(f"retry base_delay must be > 0 seconds, got {self.base_delay}")
        if not self.max_delay >= self.base_delay:
            raise ConfigError(
                f"retry max_delay ({self.max_delay}) must be at least base_delay "
                f"({self.base_delay})"
            )
        if self.max_attempts < 1:
            raise ConfigError(f"retry max_attempts must be at least 1, got {self.max_attempts}")
        if not self.max_age > 0:
            raise ConfigError(f"retry max_age must be > 0 seconds, got {self.max_age}")

    def ceiling(self, attempts: int) -> float:
        """The upper bound of the jittered delay after `attempts` failed attempts."""
        doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
        return min(self.max_delay, self.base_delay * 2.0**doublings)

    def decide(
        self,
        attempts: int,
        first_enqueued_at: datetime,
        now: datetime,
        rand: RandomSource,
    ) -> RetryDecision:
        """What to do after attempt number `attempts` (counted from 1) failed at `now`.

        Gives up once `attempts` reaches `max_attempts` or the job is `max_age`
        old; otherwise retries after a full-jitter delay, moved earlier if needed
        so the last try happens no later than the age limit.
        """
        if attempts < 1:
            raise InvalidInput(f"attempts must be at least 1 after a failure, got {attempts}")
        if attempts >= self.max_attempts:
            return GiveUp(f"gave up after {attempts} attempts (max_attempts={self.max_attempts})")
        deadline = first_enqueued_at + timedelta(seconds=self.max_age)
        if now >= deadline:
            age = (now - first_enqueued_at).total_seconds()
            return GiveUp(
                f"gave up after {attempts} attempts: job is {age:.0f} s old "
                f"(max_age={self.max_age:.0f} s)"
            )
        delay = rand.random() * self.ceiling(attempts)
        return Retry(at=min(now + timedelta(seconds=delay), deadline))


@dataclass(frozen=True, slots=True)
class RetryPolicies:
    """A retry policy per job kind, with a default for every other kind."""

    default: RetryPolicy = field(default_factory=RetryPolicy)
    by_kind: Mapping[str, RetryPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen means frozen: a caller keeping the dict it passed cannot change us.
        object.__setattr__(self, "by_kind", MappingProxyType(dict(self.by_kind)))

    def for_kind(self, kind: str) -> RetryPolicy:
        """The policy for jobs of `kind`."""
        return self.by_kind.get(kind, self.default)

    def decide(
        self,
        kind: str,
        attempts: int,
        first_enqueued_at: datetime,
        now: datetime,
        rand: RandomSource,
    ) -> RetryDecision:
        """`RetryPolicy.decide` with the policy of `kind`."""
        return self.for_kind(kind).decide(attempts, first_enqueued_at, now, rand)
