"""The reaper: leases of processes of this host that died end at once, not at expiry.

A replica killed with SIGKILL leaves its claimed jobs, its timers and the
conversations it was handling leased for up to a lease's length. Another replica
on the same host, or the same gateway restarted, can see that the holder's
process is gone (`owners.dead_here`) and end those leases right away, so the
work resumes within a poll instead of after the lease. A holder on another host
is always waited out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sessiongate.clock import Clock, sleep_unless
from sessiongate.owners import dead_here
from sessiongate.store.base import LeaseStore

log = logging.getLogger(__name__)


class Reaper:
    """Looks for dead holders at start and every `every_seconds`."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        clock: Clock,
        on_reaped: Callable[[], None],
        every_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_reaped = on_reaped
        self._every = every_seconds

    async def reap_once(self) -> int:
        """End the leases of every dead holder of this host; return how many ended."""
        ended = 0
        for owner in await self._store.lease_holders(at=self._clock.now()):
            if not dead_here(owner):
                continue
            count = await self._store.expire_leases_of(owner, at=self._clock.now())
            log.info("took over %d leases of %s, a process of this host that is gone", count, owner)
            ended += count
        if ended:
            self._on_reaped()
        return ended

    async def run(self, stop: asyncio.Event) -> None:
        """Reap until `stop` is set."""
        while not stop.is_set():
            try:
                await self.reap_once()
            except Exception:  # isolation point: a failed look is retried next time
                log.exception("looking for the leases of dead processes failed")
            await sleep_unless(self._clock, self._every, stop)
