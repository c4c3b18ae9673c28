"""The agent protocol: one turn in, one reply out, nothing kept between turns.

The gateway gives the agent everything a turn needs: the session, its ledger
history, the user's message, what memory recalled for it and a memory search
tool. An agent keeps no per-session state, so no session ever depends on a live
agent object (finalizing needs only the store and the configuration).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sessiongate.memory.provider import RecallHit
from sessiongate.memory.recall import RecallResult, memory_block
from sessiongate.models import Entry, Session

#: Search the user's long-term memory: a query in, hits out (within the recall deadline).
MemorySearch = Callable[[str], Awaitable[Sequence[RecallHit]]]


@dataclass(frozen=True, slots=True)
class AgentTurn:
    """One user message for the agent to answer."""

    session: Session
    # The session's ledger before this message, oldest first.
    history: Sequence[Entry]
    message: str
    recalled: RecallResult
    search: MemorySearch

    @property
    def memory_block(self) -> str:
        """The recalled memory as the fenced block for the model input ("" if none)."""
        return memory_block(self.recalled)


class Agent(Protocol):
    """Answers turns. Implementations must be safe to call for many sessions at once."""

    @property
    def name(self) -> str:
        """A short name, shown in /status and events."""
        ...

    async def reply(self, turn: AgentTurn) -> str:
        """The reply to `turn.message`."""
        ...

    async def summarize(self, session: Session, history: Sequence[Entry]) -> str:
        """A summary of `history` that a compressed child session starts from."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
