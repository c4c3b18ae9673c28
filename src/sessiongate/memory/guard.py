"""Per-provider isolation: a concurrency limit and a circuit breaker around each provider.

Several providers are active at once, and one that is slow or down must never
delay the others or the chat. `GuardedProvider` wraps any provider:

- a concurrency limit (one lane for deliveries, commits, reconciliations and
  forgets; a separate lane for recalls, so a long commit never holds up a turn).
  A call that finds no free slot within `queue_seconds` fails as busy, so a
  worker slot is never held long waiting for one slow provider;
- a circuit breaker: closed -> open after `failure_threshold` consecutive
  failures -> half-open once `cooldown_seconds` have passed on the injected
  clock (one trial call goes through) -> closed when a call succeeds, open
  again when the trial fails. While open, calls fail at once with
  `ProviderUnavailable` naming the provider and the time of the next trial, so
  the worker's retry policy backs off without hammering a down provider.

A call counts as a failure when it raises (connection refused, timeout, 5xx);
a refusal of the call itself (`PermanentFailure`, e.g. `ProviderRejected`)
proves the provider answered and counts as a success; a cancelled call, a call
refused locally (`InvalidInput`) or one that waited for a slot in vain counts
as neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from sessiongate.clock import Clock
from sessiongate.errors import ConfigError, InvalidInput, PermanentFailure, ProviderUnavailable
from sessiongate.memory.provider import MemoryProvider
from sessiongate.memory.wrapper import Operation, ProviderCall, ProviderWrapper

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Limits of one provider. Durations are in seconds."""

    # Deliveries, commits, reconciliations and forgets in flight at once.
    concurrency: int = 4
    # Recalls in flight at once (their own lane).
    recall_concurrency: int = 16
    # The longest a call waits for a free slot before it fails as busy.
    queue_seconds: float = 30.0
    # Consecutive failures that open the circuit.
    failure_threshold: int = 5
    # How long an open circuit refuses calls before letting one trial through.
    cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "recall_concurrency", "failure_threshold"):
            if getattr(self, name) < 1:
                raise ConfigError(f"provider guard {name} must be at least 1")
        for name in ("queue_seconds", "cooldown_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"provider guard {name} must be > 0 seconds")


class CircuitState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one provider and decides whether a call may go."""

    def __init__(self, *, threshold: int, cooldown_seconds: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown = timedelta(seconds=cooldown_seconds)
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._retry_at: datetime | None = None
        self._trial = False
        self.last_error: str | None = None

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose cool-down is over reads as half-open)."""
        if self._state is CircuitState.OPEN and not self._cooling():
            return CircuitState.HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures so far."""
        return self._failures

    @property
    def retry_at(self) -> datetime | None:
        """When an open circuit lets its next trial call through (None when closed)."""
        return None if self._state is CircuitState.CLOSED else self._retry_at

    def _cooling(self) -> bool:
        return self._retry_at is not None and self._clock.now() < self._retry_at

    def allows(self) -> bool:
        """Whether a call would be let through now (changes nothing)."""
        if self._state is CircuitState.CLOSED:
            return True
        return not self._cooling() and not self._trial

    def admit(self) -> bool | None:
        """Let a call through: True for the half-open trial, False for a normal call.

        None when the circuit refuses it.
        """
        if not self.allows():
            return None
        if self._state is CircuitState.CLOSED:
            return False
        self._state, self._trial = CircuitState.HALF_OPEN, True
        return True

    def succeeded(self) -> None:
        """A call got an answer: the provider is up."""
        self._state, self._failures, self._trial = CircuitState.CLOSED, 0, False
        self._retry_at = None

    def failed(self, error: str) -> bool:
        """A call failed; True when this opened the circuit."""
        self.last_error = error
        if self._state is CircuitState.OPEN:
            return False  # a straggler admitted before the circuit opened
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self._threshold:
            self._state, self._trial = CircuitState.OPEN, False
            self._retry_at = self._clock.now() + self._cooldown
            return True
        return False

    def abandoned(self, trial: bool) -> None:
        """A call ended without telling anything (cancelled); free the trial slot."""
        if trial:
            self._trial = False


class GuardedProvider(ProviderWrapper):
    """A provider behind a concurrency limit and a circuit breaker (see the module doc)."""

    def __init__(
        self, inner: MemoryProvider, settings: GuardSettings | None = None, *, clock: Clock
    ) -> None:
        super().__init__(inner)
        self._settings = settings or GuardSettings()
        self._clock = clock
        self._breaker = CircuitBreaker(
            threshold=self._settings.failure_threshold,
            cooldown_seconds=self._settings.cooldown_seconds,
            clock=clock,
        )
        self._lane = asyncio.Semaphore(self._settings.concurrency)
        self._recall_lane = asyncio.Semaphore(self._settings.recall_concurrency)

    @property
    def settings(self) -> GuardSettings:
        return self._settings

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker, for status pages and metrics."""
        return self._breaker

    async def _around(self, call: ProviderCall, run: Callable[[], Awaitable[T]]) -> T:
        if not self._breaker.allows():
            raise self._unavailable(call)
        lane = self._recall_lane if call.operation is Operation.RECALL else self._lane
        if not await self._acquire(lane):
            raise ProviderUnavailable(
                f"memory provider {self.name!r} is busy: no free slot within "
                f"{self._settings.queue_seconds:g} s for {call.describe()}; it is tried again later"
            )
        try:
            # The circuit may have opened while this call waited for its slot.
            trial = self._breaker.admit()
            if trial is None:
                raise self._unavailable(call)
            return await self._observed(call, run, trial=trial)
        finally:
            lane.release()

    async def _observed(
        self, call: ProviderCall, run: Callable[[], Awaitable[T]], *, trial: bool
    ) -> T:
        """Run the call and tell the breaker how it went."""
        try:
            result = await run()
        except Exception as exc:
            if not self._tell(call, exc):
                self._breaker.abandoned(trial)
            raise
        except BaseException:
            # Cancelled (a recall past its deadline, a shutdown): says nothing of health.
            self._breaker.abandoned(trial)
            raise
        self._breaker.succeeded()
        return result

    def _tell(self, call: ProviderCall, exc: Exception) -> bool:
        """Record a failed call's meaning for the breaker; False if it means nothing."""
        if isinstance(exc, PermanentFailure):
            self._breaker.succeeded()
            return True
        if isinstance(exc, InvalidInput):
            return False
        error = f"{type(exc).__name__}: {exc}"
        if self._breaker.failed(error):
            log.warning(
                "memory provider %s: circuit opened after %d consecutive failures (last: %s "
                "on %s); next trial at %s",
                self.name,
                self._breaker.failures,
                error,
                call.describe(),
                self._when(),
            )
        return True

    def _when(self) -> str:
        retry_at = self._breaker.retry_at
        return "now" if retry_at is None else retry_at.isoformat()

    def _unavailable(self, call: ProviderCall) -> ProviderUnavailable:
        breaker = self._breaker
        if breaker.state is CircuitState.HALF_OPEN:
            why = "its circuit is half-open and a trial call is in flight"
        else:
            why = f"its circuit is open after {breaker.failures} consecutive failures"
        return ProviderUnavailable(
            f"memory provider {self.name!r} is unavailable: {why} (last error: "
            f"{breaker.last_error}); {call.describe()} was not attempted; the next trial "
            f"call goes through at {self._when()}"
        )

    async def _acquire(self, lane: asyncio.Semaphore) -> bool:
        """Take a slot of `lane` within `queue_seconds` (on the injected clock)."""
        if not lane.locked():
            await lane.acquire()
            return True
        acquiring: asyncio.Future[bool] = asyncio.ensure_future(lane.acquire())
        timer = asyncio.ensure_future(self._clock.sleep(self._settings.queue_seconds))
        try:
            await asyncio.wait((acquiring, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            _give_back(acquiring, lane)
            raise
        finally:
            timer.cancel()
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            return True
        _give_back(acquiring, lane)
        return False


def _give_back(acquiring: asyncio.Future[bool], lane: asyncio.Semaphore) -> None:
    """Give up a pending acquisition; release the slot if it was granted meanwhile."""

    def settle(future: asyncio.Future[bool]) -> None:
        if not future.cancelled() and future.exception() is None:
            lane.release()

    if acquiring.done():
        settle(acquiring)
    else:
        acquiring.cancel()
        acquiring.add_done_callback(settle)
