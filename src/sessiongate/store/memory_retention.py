"""Retention on the memory store: what `prune` selects, and removing it.

The selection follows `RetentionRules` to the letter and runs on the state at the
start of the call, so a dry run reports exactly what a real run removes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sessiongate.models import (
    Cursor,
    EndReason,
    Entry,
    JobState,
    PruneReport,
    RetentionRules,
    Session,
    SessionState,
    Timer,
)
from sessiongate.store import intake
from sessiongate.store.memory_leases import MemoryLeases
from sessiongate.store.memory_outbox import lease_live


class MemoryRetention(MemoryLeases):
    """`RetentionStore` over the memory store's dicts (declared by `MemoryStore`)."""

    _sessions: dict[str, Session]
    _routing: dict[str, str]
    _routed_key: dict[str, str]
    _ledger: dict[str, list[Entry]]
    _timers: dict[tuple[str, str], Timer]
    _cursors: dict[tuple[str, str], Cursor]

    async def lease_holders(self, *, at: datetime) -> list[str]:
        """See `LeaseStore.lease_holders`."""
        async with self._open():
            at = intake.utc(at, "at")
            owners = {
                job.lease_owner
                for job in self._jobs.values()
                if job.state is JobState.RUNNING and lease_live(job.lease_expires_at, at)
            }
            owners |= {
                timer.lease_owner
                for timer in self._timers.values()
                if lease_live(timer.lease_expires_at, at)
            }
            owners |= {
                lease.owner for lease in self._leases.values() if lease_live(lease.expires_at, at)
            }
            return sorted(owner for owner in owners if owner is not None)

    async def expire_leases_of(self, owner: str, *, at: datetime) -> int:
        """See `LeaseStore.expire_leases_of`."""
        async with self._open():
            at = intake.utc(at, "at")
            ended = 0
            for job in list(self._jobs.values()):
                if (
                    job.state is JobState.RUNNING
                    and job.lease_owner == owner
                    and lease_live(job.lease_expires_at, at)
                ):
                    self._jobs[job.id] = replace(job, lease_expires_at=at, updated_at=at)
                    ended += 1
            for timer_key, timer in list(self._timers.items()):
                if timer.lease_owner == owner and lease_live(timer.lease_expires_at, at):
                    self._timers[timer_key] = replace(timer, lease_expires_at=at)
                    ended += 1
            for key, lease in list(self._leases.items()):
                if lease.owner == owner and lease_live(lease.expires_at, at):
                    self._leases[key] = replace(lease, expires_at=at)
                    ended += 1
            return ended

    async def stale_sessions(
        self, *, idle_before: datetime, at: datetime, limit: int
    ) -> list[Session]:
        """See `RetentionStore.stale_sessions`."""
        async with self._open():
            idle_before = intake.utc(idle_before, "idle_before")
            at = intake.utc(at, "at")
            found = [
                s
                for s in self._sessions.values()
                if s.state is SessionState.ACTIVE
                and s.last_activity_at < idle_before
                and not self._key_busy(s.key, at)
            ]
            found.sort(key=lambda s: (s.last_activity_at, s.id))
            return found[: max(limit, 0)]

    async def prune(
        self, rules: RetentionRules, *, at: datetime, dry_run: bool = False
    ) -> PruneReport:
        """See `RetentionStore.prune`."""
        async with self._open():
            at = intake.utc(at, "at")
            sessions = self._prunable_sessions(rules, at)
            gone = set(sessions)
            job_ids = {j.id for j in self._jobs.values() if j.session_id in gone}
            job_ids |= set(self._done_jobs(rules))
            letters = sorted(
                {d.job_id for d in self._dead.values() if d.session_id in gone}
                | set(self._prunable_letters(rules))
            )
            leases = self._expired_leases(rules)
            report = PruneReport(
                sessions=tuple(sessions),
                entries=sum(len(self._ledger.get(s, [])) for s in sessions),
                jobs=len(job_ids),
                dead_letters=tuple(letters),
                leases=len(leases),
            )
            if not dry_run:
                self._remove_sessions(gone)
                self._remove_jobs(job_ids | set(letters))
                for job_id in letters:
                    del self._dead[job_id]
                for key in leases:
                    del self._leases[key]
            return report

    def _prunable_sessions(self, rules: RetentionRules, at: datetime) -> list[str]:
        cutoff = rules.sessions_ended_before
        if cutoff is None:
            return []
        cutoff = intake.utc(cutoff, "sessions_ended_before")
        unfinished = {
            self._jobs[j].session_id
            for j in self._unfinished
            if not self._letter_expired(j, rules.dead_letters_before)
        }
        found = [
            s
            for s in self._sessions.values()
            if s.state is SessionState.FINALIZED
            and s.ended_at is not None
            and s.ended_at < cutoff
            and s.id not in unfinished
            and not self._key_busy(s.key, at)
            and self._received_everywhere(s, rules.providers)
        ]
        found.sort(key=lambda s: (s.ended_at, s.id))
        return [s.id for s in found[: max(rules.limit, 0)]]

    def _letter_expired(self, job_id: int, died_before: datetime | None) -> bool:
        """A dead job whose letter died before the cutoff no longer holds its session."""
        letter = self._dead.get(job_id)
        return letter is not None and died_before is not None and letter.died_at < died_before

    def _received_everywhere(self, session: Session, providers: tuple[str, ...]) -> bool:
        if session.end_reason is EndReason.FORGET or session.turn_count == 0:
            return True
        for provider in providers:
            cursor = self._cursors.get((provider, session.id))
            if cursor is None or cursor.delivered_seq < session.turn_count:
                return False
        return True

    def _done_jobs(self, rules: RetentionRules) -> list[int]:
        cutoff = rules.jobs_done_before
        if cutoff is None:
            return []
        cutoff = intake.utc(cutoff, "jobs_done_before")
        done = sorted(
            (j.updated_at, j.id)
            for j in self._jobs.values()
            if j.state is JobState.DONE and j.updated_at < cutoff
        )
        return [job_id for _, job_id in done[: max(rules.limit, 0)]]

    def _prunable_letters(self, rules: RetentionRules) -> list[int]:
        cutoff = rules.dead_letters_before
        if cutoff is None:
            return []
        cutoff = intake.utc(cutoff, "dead_letters_before")
        found = []
        for letter in sorted(self._dead.values(), key=lambda d: (d.died_at, d.job_id)):
            session = self._sessions.get(letter.session_id or "")
            live = session is not None and session.state is not SessionState.FINALIZED
            if letter.died_at < cutoff and not live:
                found.append(letter.job_id)
        return found[: max(rules.limit, 0)]

    def _expired_leases(self, rules: RetentionRules) -> list[str]:
        cutoff = rules.leases_expired_before
        if cutoff is None:
            return []
        cutoff = intake.utc(cutoff, "leases_expired_before")
        expired = sorted(
            (lease.expires_at, key)
            for key, lease in self._leases.items()
            if not lease_live(lease.expires_at, cutoff)
        )
        return [key for _, key in expired[: max(rules.limit, 0)]]

    def _remove_sessions(self, gone: set[str]) -> None:
        for session_id in gone:
            session = self._sessions.pop(session_id)
            self._ledger.pop(session_id, None)
            if self._routing.get(session.key) == session_id:
                del self._routing[session.key]
            self._routed_key.pop(session_id, None)
        for timer_key in [k for k in self._timers if k[0] in gone]:
            del self._timers[timer_key]
        for cursor_key in [k for k in self._cursors if k[1] in gone]:
            del self._cursors[cursor_key]

    def _remove_jobs(self, job_ids: set[int]) -> None:
        for job_id in job_ids:
            job = self._jobs.pop(job_id)
            del self._job_ids[job.idempotency_key]
            self._unfinished.discard(job_id)
