"""The lifecycle's part of the settings: keys, reset rules, providers, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from sessiongate.keys import KeyPolicy
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
