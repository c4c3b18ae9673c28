"""The sweeper: fires durable reset timers through the one funnel.

Timers are rows with due times, claimed with leases through an index on the
due time, so several replicas can sweep at once and the cost does not depend
on how many sessions are stored. A fired timer re-evaluates the same policy
function the lazy check uses: if the session is not expired after all (it saw
activity since the timer was set), the timer moves to the new due time.
After downtime the backlog is worked off at a bounded rate.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sessiongate.clock import Clock, sleep_unless
from sessiongate.lifecycle.checkpoints import CHECKPOINT_TIMER, fire_checkpoint
from sessiongate.lifecycle.engine import Engine
from sessiongate.models import SessionState, Timer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweeperSettings:
    """How the sweeper claims timers and how fast it catches up."""

    batch: int = 100
    lease_seconds: float = 30.0
    # Upper bound of a sleep: timers written by other replicas are seen this often.
    poll_seconds: float = 1.0
    # At most this many sessions ended per second while catching up after downtime
    # (None: no pacing, for simulations whose clock only moves when told to).
    max_rate: float | None = 200.0


class Sweeper:
    """Claims due timers and ends their sessions through `Engine.end_session`."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        clock: Clock,
        settings: SweeperSettings | None = None,
    ) -> None:
        self._engine = engine
        self._store = engine.store
        self._owner = owner
        self._clock = clock
        self._settings = settings or SweeperSettings()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Re-read the next due time now (a timer was set in this process)."""
        self._wake.set()

    async def sweep_once(self) -> int:
        """Claim and handle one batch of due timers; return how many sessions ended."""
        timers = await self._store.claim_timers(
            self._owner,
            at=self._clock.now(),
            lease_seconds=self._settings.lease_seconds,
            limit=self._settings.batch,
        )
        ended = 0
        for timer in timers:
            if await self._fire(timer):
                ended += 1
                if self._settings.max_rate is not None:
                    # Bounded catch-up: a 04:00 boundary must not stampede the providers.
                    await self._clock.sleep(1.0 / self._settings.max_rate)
        return ended

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until `stop` is set, sleeping until the next due time or a change."""
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception:  # isolation point: a store hiccup must not kill the sweeper
                log.exception(
                    "timer sweep failed; retrying after %.1fs", self._settings.poll_seconds
                )
            await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        # Cleared before the read, not after: a wake-up arriving while we read
        # must cut the coming sleep short, not be lost.
        self._wake.clear()
        delay = self._settings.poll_seconds
        due = await self._store.next_timer_due()
        if due is not None:
            delay = min(delay, max(0.0, (due - self._clock.now()).total_seconds()))
        await sleep_unless(self._clock, max(delay, 0.01), self._wake, stop)

    async def _fire(self, timer: Timer) -> bool:
        session = await self._store.get_session(timer.session_id)
        if session is None or session.state is not SessionState.ACTIVE:
            await self._store.release_timer(timer.session_id, timer.kind, self._owner)
            return False
        if timer.kind == CHECKPOINT_TIMER:
            settings = self._engine.settings
            again = await fire_checkpoint(self._store, session, settings, self._clock.now())
            await self._store.release_timer(
                timer.session_id, timer.kind, self._owner, reschedule_at=again
            )
            self._engine.changed()
            return False
        lease = await self._store.lease_of(session.key)
        if lease is not None and self._clock.now() < lease.expires_at:
            # A message of this conversation is being handled right now: its turn
            # must not be cut off; look again when that lease runs out.
            await self._store.release_timer(
                timer.session_id, timer.kind, self._owner, reschedule_at=lease.expires_at
            )
            return False
        expiry = self._engine.expiry(session)
        if expiry is None:
            # Activity moved the boundary: re-arm at the new due time (or drop it).
            moved = self._engine.timer_due(session)
            await self._store.release_timer(
                timer.session_id,
                timer.kind,
                self._owner,
                reschedule_at=moved.due_at if moved else None,
            )
            return False
        ended = await self._engine.end_session(session.id, expiry.reason, detail=expiry.detail)
        # end_session deletes the session's timers; a lost race leaves nothing to release.
        if not ended:
            await self._store.release_timer(timer.session_id, timer.kind, self._owner)
        return ended
