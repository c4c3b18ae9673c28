"""A fault-injecting proxy around any memory provider, with a journal of every call.

Faults are scheduled per operation, call by call: `REFUSE` raises before the
call reaches the provider (an outage: nothing happened), `LOSE_ACK` lets the
call reach the provider and then raises (the answer was lost: it happened, but
the gateway cannot know). The proxy exposes the optional capabilities of the
provider it wraps, and nothing more, so the gateway treats it exactly as it
would treat the provider itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from sessiongate.memory.provider import MemoryProvider
from sessiongate.memory.wrapper import Operation, ProviderCall, ProviderWrapper

T = TypeVar("T")


class Fault(StrEnum):
    """What goes wrong with one call."""

    REFUSE = "refuse"
    LOSE_ACK = "lose_ack"


class InjectedFault(ConnectionError):
    """A fault the proxy injected on purpose."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One call as the proxy saw it: whether it reached the provider, and its fault."""

    call: ProviderCall
    delegated: bool
    fault: Fault | None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        """The call reached the provider and its answer came back."""
        return self.delegated and self.fault is None and self.error is None


class FaultyProvider(ProviderWrapper):
    """Wraps a provider; injects the scheduled faults and journals every call."""

    def __init__(
        self,
        inner: MemoryProvider,
        *,
        observe: Callable[[ProviderCall], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(inner)
        self.journal: list[JournalEntry] = []
        # Awaited just before a call reaches the provider: a test can look at the
        # provider's state at that moment (what it held when a commit came in).
        self.observe = observe
        self._plan: dict[Operation, deque[Fault | None]] = {}

    def schedule(self, operation: Operation, *faults: Fault | None) -> None:
        """Fault the next calls of `operation`, one per item (`None`: let that call through)."""
        self._plan.setdefault(operation, deque()).extend(faults)

    def pending(self, operation: Operation | None = None) -> int:
        """How many scheduled faults have not fired yet (of `operation`, or of all)."""
        plans = self._plan.values() if operation is None else [self._plan.get(operation, ())]
        return sum(1 for plan in plans for fault in plan if fault is not None)

    def calls(self, operation: Operation) -> list[JournalEntry]:
        """The journal's calls of one operation, in order."""
        return [entry for entry in self.journal if entry.call.operation is operation]

    def injected(self, fault: Fault) -> int:
        """How many times `fault` was injected so far."""
        return sum(1 for entry in self.journal if entry.fault is fault)

    async def _around(self, call: ProviderCall, run: Callable[[], Awaitable[T]]) -> T:
        plan = self._plan.get(call.operation)
        fault = plan.popleft() if plan else None
        if fault is Fault.REFUSE:
            self.journal.append(JournalEntry(call, delegated=False, fault=fault))
            raise InjectedFault(f"{self.name}: refused {call.describe()} (injected)")
        if self.observe is not None:
            await self.observe(call)
        try:
            result = await run()
        except Exception as exc:
            self.journal.append(
                JournalEntry(call, delegated=True, fault=None, error=f"{type(exc).__name__}: {exc}")
            )
            raise
        self.journal.append(JournalEntry(call, delegated=True, fault=fault))
        if fault is Fault.LOSE_ACK:
            raise InjectedFault(
                f"{self.name}: {call.describe()} was applied, its answer lost (injected)"
            )
        return result
