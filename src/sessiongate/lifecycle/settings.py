"""The lifecycle's part of the settings: keys, reset rules, providers, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sessiongate.keys import KeyPolicy
from sessiongate.models import RetentionRules
from sessiongate.policy import ResetRules
from sessiongate.validation import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """What the engine, the sweeper and the end consumers need from the configuration."""

    keys: KeyPolicy = field(default_factory=KeyPolicy)
    reset: ResetRules = field(default_factory=ResetRules)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    # Names of the configured memory providers: every end commits to each of them.
    providers: tuple[str, ...] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # A rolling commit checkpoint every this many ledger entries of a live session
    # (None: only at the end), so memory never waits for an end that may not come.
    checkpoint_every_turns: int | None = 40
    # ... and once a live session has been quiet this long (None: off).
    checkpoint_quiet: timedelta | None = timedelta(minutes=10)


# Lease rows of replicas that died mid-message, kept a while for inspection.
_DEAD_LEASES_KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each artefact is kept (None: forever) and how often the gateway prunes."""

    idle: timedelta | None = timedelta(days=90)
    ended_sessions: timedelta | None = timedelta(days=90)
    done_jobs: timedelta | None = timedelta(days=7)
    dead_letters: timedelta | None = timedelta(days=30)
    batch: int = 500
    # None: the gateway does not prune on its own (`sessiongate prune` still does).
    every: timedelta | None = timedelta(hours=1)

    def rules(self, now: datetime, providers: tuple[str, ...], *, limit: int) -> RetentionRules:
        """The store's rules at `now`."""

        def before(kept: timedelta | None) -> datetime | None:
            return None if kept is None else now - kept

        return RetentionRules(
            sessions_ended_before=before(self.ended_sessions),
            jobs_done_before=before(self.done_jobs),
            dead_letters_before=before(self.dead_letters),
            leases_expired_before=now - _DEAD_LEASES_KEPT,
            providers=providers,
            limit=limit,
        )
