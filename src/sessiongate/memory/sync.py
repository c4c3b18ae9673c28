"""Cursor delivery and commits: how ledger entries reach each memory provider.

Delivery walks the provider's cursor over the ledger in batches no larger than
the provider accepts, advancing the cursor with a compare-and-set after each
acknowledged batch. A commit runs only once the cursor has reached the last
seq it covers: the same job delivers first, so the dependency is data, not
timing. Exactly-once in effect comes from deterministic idempotency keys, and,
for providers without them, from reconciling against the provider's own count
after an unknown outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sessiongate.clock import Clock
from sessiongate.errors import Conflict, NotFound, PermanentFailure, ProviderFailure
from sessiongate.memory.provider import (
    Forgetting,
    MemoryProvider,
    ProviderSession,
    Reconciling,
)
from sessiongate.models import Cursor, Job, Session
from sessiongate.store.base import Store

log = logging.getLogger(__name__)


def delivery_key(session_id: str, first_seq: int, last_seq: int) -> str:
    """The idempotency key of one delivered batch: the same batch always has the same key."""
    return f"{session_id}:{first_seq}-{last_seq}"


def commit_key(session_id: str, epoch: int, first_seq: int, last_seq: int) -> str:
    """The idempotency key of one commit epoch and the exact range it covers."""
    return f"{session_id}:epoch:{epoch}:{first_seq}-{last_seq}"


@dataclass(frozen=True, slots=True)
class EpochLimits:
    """How large one commit epoch may grow: what a provider can extract in one go.

    A range larger than this is committed as several consecutive epochs.
    """

    max_entries: int = 200
    max_tokens: int = 16_000


class MemorySync:
    """Runs `memory.commit` and `memory.forget` jobs for the configured providers."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, MemoryProvider],
        *,
        clock: Clock,
        limits: EpochLimits | None = None,
    ) -> None:
        self._store = store
        self._providers = dict(providers)
        self._clock = clock
        self._limits = limits or EpochLimits()

    @property
    def store(self) -> Store:
        return self._store

    async def commit_job(self, job: Job) -> None:
        """Commit the session up to the job's seq, one bounded epoch after another.

        Each epoch is delivered right before it is committed (a provider may commit
        everything it holds), so no epoch grows past the limits.
        """
        name = str(job.payload["provider"])
        provider = self._providers.get(name)
        if provider is None:
            raise PermanentFailure(
                f"memory provider {name!r} is not configured any more; add it back to the "
                "configuration and redrive this job, or drop it"
            )
        session = await self._store.get_session(str(job.payload["session_id"]))
        if session is None:
            raise NotFound(f"session {job.payload['session_id']!r} no longer exists")
        upto = int(job.payload.get("upto_seq", session.turn_count))
        while (target := await self._next_epoch_end(provider, session, upto)) is not None:
            reached = await self.deliver(provider, session, upto_seq=target)
            if reached < target:
                # The ledger is append-only, so a missing range means it was erased:
                # the session was forgotten, and there is nothing left to remember.
                log.info("session %s was forgotten; no commit to %s", session.id, name)
                return
            await self.commit(provider, session, upto_seq=target)

    async def _next_epoch_end(
        self, provider: MemoryProvider, session: Session, upto: int
    ) -> int | None:
        """The last seq of the next epoch toward `upto`, or None when it is committed.

        Deterministic for a given cursor, so a retried epoch has the same range (and
        idempotency key) as the attempt whose outcome was lost.
        """
        cursor = await self._store.get_cursor(provider.name, session.id)
        if cursor.committed_seq >= upto:
            return None
        entries = await self._store.entries(
            session.id,
            after_seq=cursor.committed_seq,
            upto_seq=upto,
            limit=self._limits.max_entries,
        )
        end, tokens = cursor.committed_seq, 0
        for entry in entries:
            tokens += entry.token_estimate
            if end > cursor.committed_seq and tokens > self._limits.max_tokens:
                break
            end = entry.seq
        if not entries:
            end = upto  # erased (forgotten): let delivery find out and stop
        # Entries already delivered past the cap are live at the provider and would be
        # taken by its commit anyway: the epoch covers them.
        return min(upto, max(end, cursor.delivered_seq))

    async def forget_job(self, job: Job) -> None:
        """Erase a session's or a user's data at one provider."""
        name = str(job.payload["provider"])
        provider = self._providers.get(name)
        if provider is None:
            raise PermanentFailure(f"memory provider {name!r} is not configured any more")
        if not isinstance(provider, Forgetting):
            log.warning("memory provider %s cannot forget; its data stays there", name)
            return
        user_id = job.payload.get("user_id")
        session_id = job.payload.get("session_id")
        session = None
        if session_id is not None:
            # The row stays as a tombstone, so it still says whose session it was.
            found = await self._store.get_session(str(session_id))
            if found is None:
                raise NotFound(f"session {session_id!r} no longer exists")
            session = ProviderSession.of(found)
        await provider.forget(user_id=None if user_id is None else str(user_id), session=session)

    async def deliver(self, provider: MemoryProvider, session: Session, *, upto_seq: int) -> int:
        """Bring the provider's cursor to `upto_seq`; return the seq reached."""
        ref = ProviderSession.of(session)
        cursor = await self._store.get_cursor(provider.name, session.id)
        delivered = cursor.delivered_seq
        if isinstance(provider, Reconciling) and delivered < upto_seq:
            # A crash between the provider's acknowledgement and the cursor's advance
            # leaves no trace here, so ask the provider before sending anything.
            try:
                delivered = await self._reconcile(provider, ref, cursor)
            except Exception as exc:
                await self._note(provider, session, exc)
                raise
        while delivered < upto_seq:
            batch = await self._store.entries(
                session.id, after_seq=delivered, upto_seq=upto_seq, limit=provider.max_batch
            )
            if not batch:
                break
            first, last = batch[0].seq, batch[-1].seq
            try:
                await provider.deliver(
                    ref, batch, idempotency_key=delivery_key(session.id, first, last)
                )
            except Exception as exc:
                # The outcome is unknown (the batch may have landed): the cursor keeps
                # its place, and the next attempt reconciles before sending again.
                await self._note(provider, session, exc)
                raise
            await self._advance(provider.name, session.id, delivered, last)
            delivered = last
        return delivered

    async def commit(self, provider: MemoryProvider, session: Session, *, upto_seq: int) -> bool:
        """Commit seqs after the last commit up to `upto_seq`; False if nothing was new."""
        cursor = await self._store.get_cursor(provider.name, session.id)
        if cursor.committed_seq >= upto_seq:
            return False
        if cursor.delivered_seq < upto_seq:
            raise Conflict(
                f"refusing to commit {provider.name} for session {session.id} up to seq "
                f"{upto_seq}: only {cursor.delivered_seq} delivered"
            )
        epoch = cursor.commit_epoch + 1
        outcome = await provider.commit(
            ProviderSession.of(session),
            epoch=epoch,
            first_seq=cursor.committed_seq + 1,
            last_seq=upto_seq,
            idempotency_key=commit_key(session.id, epoch, cursor.committed_seq + 1, upto_seq),
        )
        if outcome.failed_after_accept or not outcome.accepted:
            # The provider dropped what it had accepted: rewind the cursor to the last
            # completed commit so the retry replays the epoch's entries from the ledger.
            await self._advance(
                provider.name, session.id, cursor.delivered_seq, cursor.committed_seq
            )
            raise ProviderFailure(
                f"{provider.name} did not complete epoch {epoch} of session {session.id}: "
                f"{outcome.detail or 'no detail'}"
            )
        recorded = await self._store.record_commit(
            provider.name, session.id, epoch=epoch, committed_seq=upto_seq, at=self._clock.now()
        )
        if not recorded:
            raise Conflict(f"commit epoch {epoch} of session {session.id} was recorded twice")
        return True

    async def _reconcile(
        self, provider: MemoryProvider, ref: ProviderSession, cursor: Cursor
    ) -> int:
        """The seq the provider really holds up to: its last commit plus what came after."""
        assert isinstance(provider, Reconciling)
        held = cursor.committed_seq + await provider.uncommitted_count(ref)
        if held != cursor.delivered_seq:
            # More: a lost acknowledgement did land. Fewer: the provider lost entries
            # after accepting them (a failed extraction); send them again.
            await self._advance(provider.name, ref.session_id, cursor.delivered_seq, held)
            log.info(
                "reconciled %s for session %s: cursor %d -> %d",
                provider.name,
                ref.session_id,
                cursor.delivered_seq,
                held,
            )
        return held

    async def _note(self, provider: MemoryProvider, session: Session, exc: Exception) -> None:
        """Record the last failure on the cursor, for operators (`/status`, the CLI)."""
        await self._store.note_cursor_error(
            provider.name, session.id, f"{type(exc).__name__}: {exc}", at=self._clock.now()
        )

    async def _advance(self, provider: str, session_id: str, expected: int, seq: int) -> None:
        moved = await self._store.advance_cursor(
            provider, session_id, expected_seq=expected, delivered_seq=seq, at=self._clock.now()
        )
        if not moved:
            raise Conflict(f"cursor of {provider} for session {session_id} moved concurrently")
