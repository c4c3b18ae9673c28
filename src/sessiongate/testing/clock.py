"""A clock that only moves when told to."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class FakeClock:
    """A `Clock` whose time moves only through `advance`; sleepers wake when it passes."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + timedelta(seconds=seconds), future))
        await future

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move time forward and wake every sleeper whose time has come."""
        self._now += timedelta(seconds=seconds, **delta)
        still: list[tuple[datetime, asyncio.Future[None]]] = []
        for due, future in self._sleepers:
            if future.done():
                continue
            if due <= self._now:
                future.set_result(None)
            else:
                still.append((due, future))
        self._sleepers = still
        return self._now
