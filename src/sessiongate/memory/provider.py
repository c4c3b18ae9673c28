"""The memory provider contract.

A provider is stateless per call: every call names the session it is about, so
no provider ever keeps a "current session". The gateway owns ordering,
retries and exactly-once effect through cursors in the store; a provider only
has to do what each call says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from sessiongate.models import Entry, Session


@dataclass(frozen=True, slots=True)
class ProviderSession:
    """What a provider needs to know about a session: its id and whose it is."""

    session_id: str
    session_key: str
    platform: str
    user_id: str | None
    chat_id: str

    @classmethod
    def of(cls, session: Session) -> ProviderSession:
        return cls(
            session_id=session.id,
            session_key=session.key,
            platform=session.platform,
            user_id=session.user_id,
            chat_id=session.chat_id,
        )


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """How a commit ended at the provider.

    `accepted` means the provider took the epoch; `failed_after_accept` means it
    took it but its own processing failed later (the epoch must be replayed).
    """

    accepted: bool = True
    failed_after_accept: bool = False
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RecallScope:
    """Whose memory to search: always one user (never across users)."""

    user_id: str
    platform: str | None = None
    exclude_session_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecallHit:
    """One recalled memory with where it came from."""

    provider: str
    text: str
    score: float = 0.0
    session_id: str | None = None
    created_at: datetime | None = None


class MemoryProvider(Protocol):
    """A long-term memory backend."""

    @property
    def name(self) -> str:
        """The configured name of this provider; cursors are keyed by it."""
        ...

    @property
    def max_batch(self) -> int:
        """The most entries one `deliver` call may carry."""
        ...

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        """Write these ledger entries (consecutive seqs, in order) into the session."""
        ...

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        """Extract long-term memory from seqs `first_seq..last_seq` (already delivered)."""
        ...

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> Sequence[RecallHit]:
        """Memories of `scope.user_id` relevant to `query`, best first."""
        ...


@runtime_checkable
class Forgetting(Protocol):
    """A provider that can erase what it holds about a session, or about a user."""

    async def forget(self, *, user_id: str | None, session: ProviderSession | None) -> None:
        """Erase one session's data (`session`, whose user it names) or all of `user_id`'s."""
        ...


@runtime_checkable
class Reconciling(Protocol):
    """A provider that can say how many entries it holds since its last completed commit.

    The gateway reconciles its cursor against this before delivering, so a batch
    whose acknowledgement was lost is not sent twice (for providers without
    idempotency keys), and entries a failed commit lost are sent again.
    """

    async def uncommitted_count(self, session: ProviderSession) -> int:
        """How many entries were delivered after the last commit that completed."""
        ...
