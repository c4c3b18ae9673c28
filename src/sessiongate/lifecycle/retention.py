"""Retention: every artefact has a rule, and disk stays bounded.

Two steps, both safe to run in several replicas at once:

1. conversations idle longer than `idle` (Hermes' `session_store_max_age_days`)
   end with reason `prune` through the one funnel, so they are committed to
   every provider and their hooks fire like any other end; their routing goes,
   and the next message of the conversation starts a new session;
2. what the store may remove (`RetentionRules`) goes, in batches: finalized
   sessions with their ledgers once every provider has received them, done
   jobs, old dead letters of finished sessions, leases left by dead replicas.

A conversation being handled (its key holds a live lease) is never touched.
A dry run reports exactly what a real run at the same moment would remove.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sessiongate.clock import Clock, sleep_unless
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.settings import RetentionPolicy
from sessiongate.models import EndReason, PruneReport, Session

log = logging.getLogger(__name__)

# A dry run selects everything at once: nothing is deleted between batches.
_EVERYTHING = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass ended and removed (or, dry, would)."""

    dry_run: bool
    ended: tuple[Session, ...] = ()
    removed: PruneReport = field(default_factory=PruneReport)

    @property
    def empty_run(self) -> bool:
        """True when nothing was (or would be) ended or removed."""
        return not self.ended and self.removed.empty


Progress = Callable[[int], None]


class Retention:
    """Runs the retention policy over the engine's store."""

    def __init__(self, engine: Engine, policy: RetentionPolicy, *, clock: Clock) -> None:
        self._engine = engine
        self._store = engine.store
        self._policy = policy
        self._clock = clock

    @property
    def policy(self) -> RetentionPolicy:
        return self._policy

    async def run_once(
        self, *, dry_run: bool = False, progress: Progress | None = None
    ) -> RetentionReport:
        """One pass: end idle conversations, then remove what the rules allow.

        `progress` is told how many items each step handled, as they go.
        """
        tick = progress or (lambda _: None)
        ended = await self._end_idle(dry_run=dry_run, tick=tick)
        removed = await self._remove(dry_run=dry_run, tick=tick)
        return RetentionReport(dry_run, ended, removed)

    async def _end_idle(self, *, dry_run: bool, tick: Progress) -> tuple[Session, ...]:
        if self._policy.idle is None:
            return ()
        now = self._clock.now()
        cutoff = now - self._policy.idle
        if dry_run:
            stale = await self._store.stale_sessions(idle_before=cutoff, at=now, limit=_EVERYTHING)
            tick(len(stale))
            return tuple(stale)
        ended: list[Session] = []
        while True:
            stale = await self._store.stale_sessions(
                idle_before=cutoff, at=now, limit=self._policy.batch
            )
            # A session that got a message meanwhile is no longer active-and-idle:
            # the funnel's compare-and-set leaves it alone.
            done = [s for s in stale if await self._engine.end_session(s.id, EndReason.PRUNE)]
            ended.extend(done)
            tick(len(stale))
            if len(stale) < self._policy.batch or not done:
                return tuple(ended)

    async def _remove(self, *, dry_run: bool, tick: Progress) -> PruneReport:
        now = self._clock.now()
        providers = self._engine.settings.providers
        if dry_run:
            rules = self._policy.rules(now, providers, limit=_EVERYTHING)
            report = await self._store.prune(rules, at=now, dry_run=True)
            tick(_size(report))
            return report
        total = PruneReport()
        rules = self._policy.rules(now, providers, limit=self._policy.batch)
        while True:
            report = await self._store.prune(rules, at=now)
            total += report
            tick(_size(report))
            if report.empty:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """Prune every `policy.every` until `stop` is set (not at all when it is None)."""
        every = self._policy.every
        if every is None:
            return
        while not stop.is_set():
            try:
                report = await self.run_once()
                if not report.empty_run:
                    log.info(
                        "retention ended %d idle sessions, removed %d sessions "
                        "(%d entries), %d jobs, %d dead letters",
                        len(report.ended),
                        len(report.removed.sessions),
                        report.removed.entries,
                        report.removed.jobs,
                        len(report.removed.dead_letters),
                    )
            except Exception:  # isolation point: a failed pass is retried next time
                log.exception("retention pass failed; retrying in %s", every)
            await sleep_unless(self._clock, every.total_seconds(), stop)


def _size(report: PruneReport) -> int:
    return len(report.sessions) + report.jobs + len(report.dead_letters) + report.leases
