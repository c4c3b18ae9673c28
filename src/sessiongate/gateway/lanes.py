"""Per-conversation ordering: one message of a session key at a time, in arrival order.

Messages of different keys run concurrently. A message that arrives while the
agent is still answering the same key follows the busy policy: wait its turn
(queue), cancel the running agent turn and go next (interrupt), or be refused
(reject). This is ordering within one process; across replicas the
conversation's lease in the store (`gateway.leases`) lets one replica at a time
handle it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sessiongate.config import BusyPolicy
from sessiongate.errors import SessionGateError


class Busy(SessionGateError):
    """The conversation is busy and the policy is reject."""


@dataclass
class _Lane:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    agent: asyncio.Task[str] | None = None


class Lanes:
    """The lanes of every conversation in this process."""

    def __init__(self, policy: BusyPolicy) -> None:
        self._policy = policy
        self._lanes: dict[str, _Lane] = {}

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Hold `key`'s lane for one message (raises `Busy` under the reject policy)."""
        lane = self._lanes.setdefault(key, _Lane())
        if lane.lock.locked():
            if self._policy is BusyPolicy.REJECT:
                raise Busy("still answering your previous message; send it again in a moment")
            if self._policy is BusyPolicy.INTERRUPT:
                self.interrupt(key)
        lane.users += 1
        try:
            async with lane.lock:
                yield
        finally:
            lane.users -= 1
            if lane.users == 0:
                self._lanes.pop(key, None)

    async def run_agent(self, key: str, work: asyncio.Task[str]) -> str:
        """Await the agent's `work` for `key`, interruptible by `interrupt(key)`."""
        lane = self._lanes.get(key)
        if lane is not None:
            lane.agent = work
        try:
            return await work
        finally:
            if lane is not None:
                lane.agent = None

    def interrupt(self, key: str) -> bool:
        """Cancel the agent turn running for `key`; False if none was running."""
        lane = self._lanes.get(key)
        if lane is None or lane.agent is None or lane.agent.done():
            return False
        lane.agent.cancel()
        return True

    def running(self) -> list[asyncio.Task[str]]:
        """The agent turns running now (for a drain at shutdown)."""
        return [lane.agent for lane in self._lanes.values() if lane.agent and not lane.agent.done()]
