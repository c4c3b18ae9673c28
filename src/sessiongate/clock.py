"""The clock and the random source, injected everywhere time or chance matters.

Pure logic takes `now` as an argument; components that need to wait or read time
take a `Clock`. Tests pass `sessiongate.testing.FakeClock`.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A source of the current time that can also wait."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def sleep_unless(clock: Clock, seconds: float, *events: asyncio.Event) -> None:
    """Wait `seconds` of `clock`'s time, or less if any of `events` is set meanwhile."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    sleeper = asyncio.create_task(clock.sleep(seconds))
    try:
        await asyncio.wait([*waits, sleeper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*waits, sleeper):
            task.cancel()
        await asyncio.gather(*waits, sleeper, return_exceptions=True)


class RandomSource(Protocol):
    """The subset of `random.Random` sessiongate uses; a seeded `random.Random` fits."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


def system_random() -> RandomSource:
    """A random source seeded from the operating system."""
    return random.SystemRandom()
