"""A memory provider double that records everything and injects faults on demand.

It behaves like a remote provider: what it "holds" survives the gateway's
crashes (it is a separate object), a lost acknowledgement applies a batch but
raises, and an outage refuses everything. With `idempotent=False` it behaves
like OpenViking's message add (a retried batch is applied twice unless the
gateway reconciles through `delivered_count`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sessiongate.clock import RandomSource
from sessiongate.memory.provider import CommitOutcome, ProviderSession, RecallHit, RecallScope
from sessiongate.models import Entry


class ProviderDown(ConnectionError):
    """The fake provider is unreachable."""


class LostAcknowledgement(TimeoutError):
    """The fake provider applied the call but the answer never arrived."""


@dataclass
class Faults:
    """Probabilities (0..1) of each fault per call, drawn from an injected random source."""

    error: float = 0.0
    lost_ack: float = 0.0
    commit_failed_after_accept: float = 0.0
    delay_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """One effective commit the provider performed."""

    session_id: str
    epoch: int
    first_seq: int
    last_seq: int
    user_id: str | None


@dataclass
class FakeProvider:
    """A recording, fault-injecting `MemoryProvider` (and `Reconciling`)."""

    name: str = "fake"
    max_batch: int = 50
    idempotent: bool = True
    rand: RandomSource | None = None
    faults: Faults = field(default_factory=Faults)
    down: bool = False
    held: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    # Entries delivered since the session's last completed commit (OpenViking's
    # live `message_count`).
    live: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    owners: dict[str, str | None] = field(default_factory=dict)
    commits: list[CommitRecord] = field(default_factory=list)
    delivery_calls: int = 0
    commit_calls: int = 0
    max_batch_seen: int = 0
    forgotten: set[str] = field(default_factory=set)
    _seen_keys: set[str] = field(default_factory=set)
    _commit_keys: set[str] = field(default_factory=set)
    _live_keys: dict[str, set[str]] = field(default_factory=dict)

    def _draw(self, probability: float) -> bool:
        return probability > 0 and self.rand is not None and self.rand.random() < probability

    async def _enter(self) -> None:
        if self.faults.delay_seconds:
            await asyncio.sleep(self.faults.delay_seconds)
        if self.down:
            raise ProviderDown(f"{self.name} is down")
        if self._draw(self.faults.error):
            raise ProviderDown(f"{self.name} refused the call")

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        self.delivery_calls += 1
        await self._enter()
        if len(entries) > self.max_batch:
            raise ValueError(f"batch of {len(entries)} exceeds {self.max_batch}")
        self.max_batch_seen = max(self.max_batch_seen, len(entries))
        if not (self.idempotent and idempotency_key in self._seen_keys):
            self._seen_keys.add(idempotency_key)
            self.held[session.session_id].extend(entries)
            self.live[session.session_id] += len(entries)
            self._live_keys.setdefault(session.session_id, set()).add(idempotency_key)
            self.owners[session.session_id] = session.user_id
        if self._draw(self.faults.lost_ack):
            raise LostAcknowledgement(f"{self.name} applied {idempotency_key} but timed out")

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        self.commit_calls += 1
        await self._enter()
        sid = session.session_id
        # Nothing live means nothing to extract (OpenViking answers "skipped"), so
        # only a commit with live entries can fail after being accepted.
        if self.live[sid] and self._draw(self.faults.commit_failed_after_accept):
            # Like a failed OpenViking extraction: the live entries were archived and
            # are gone, nothing was extracted, and their batches may be sent again.
            del self.held[sid][-self.live[sid] :]
            self._seen_keys -= self._live_keys.pop(sid, set())
            self.live[sid] = 0
            return CommitOutcome(
                accepted=True, failed_after_accept=True, detail="extraction failed"
            )
        self.live[sid] = 0
        self._live_keys.pop(sid, None)
        if idempotency_key not in self._commit_keys:
            self._commit_keys.add(idempotency_key)
            self.commits.append(
                CommitRecord(session.session_id, epoch, first_seq, last_seq, session.user_id)
            )
        if self._draw(self.faults.lost_ack):
            raise LostAcknowledgement(f"{self.name} committed {idempotency_key} but timed out")
        return CommitOutcome()

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
        await self._enter()
        words = {w for w in query.lower().split() if w}
        hits = [
            RecallHit(provider=self.name, text=e.text, session_id=sid, created_at=e.created_at)
            for sid, entries in self.held.items()
            if self.owners.get(sid) == scope.user_id and sid != scope.exclude_session_id
            for e in entries
            if words & set(e.text.lower().split())
        ]
        return hits[:limit]

    async def uncommitted_count(self, session: ProviderSession) -> int:
        await self._enter()
        return self.live[session.session_id]

    async def forget(self, *, user_id: str | None, session: ProviderSession | None) -> None:
        await self._enter()
        session_id = None if session is None else session.session_id
        doomed = {
            sid
            for sid, owner in self.owners.items()
            if sid == session_id or (user_id is not None and owner == user_id)
        }
        if session_id is not None:
            doomed.add(session_id)
        for sid in doomed:
            self.held.pop(sid, None)
            self.live.pop(sid, None)
            self.owners.pop(sid, None)
        self.commits = [c for c in self.commits if c.session_id not in doomed]
        self.forgotten |= doomed

    def seqs(self, session_id: str) -> list[int]:
        """The seqs this provider holds for a session, in arrival order."""
        return [e.seq for e in self.held.get(session_id, [])]

    def committed_upto(self, session_id: str) -> int:
        """The highest seq covered by an effective commit of the session (0 if none)."""
        return max((c.last_seq for c in self.commits if c.session_id == session_id), default=0)
