"""Quiet-period commit checkpoints of live sessions.

A live session gets a `checkpoint` timer at its last activity plus the quiet
period. When it fires (through the sweeper, like reset timers) and the session
has been quiet that long with turns no provider has committed yet, a
checkpoint commit is enqueued. The timer then re-arms: at the new quiet
boundary if there was activity, else later and later (capped), so an idle
session costs little while a conversation that resumes is still checkpointed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sessiongate.lifecycle.consumers import checkpoint_jobs
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.models import Session, Timer
from sessiongate.store.base import Store

CHECKPOINT_TIMER = "checkpoint"
# The longest an idle session's timer sleeps between checks.
MAX_IDLE_RECHECK = timedelta(hours=1)


def checkpoint_timer(session: Session, settings: LifecycleSettings) -> Timer | None:
    """The quiet-period timer a live session starts with, if checkpoints are on."""
    quiet = settings.checkpoint_quiet
    if quiet is None or not settings.providers:
        return None
    return Timer(session.id, CHECKPOINT_TIMER, session.last_activity_at + quiet)


async def fire_checkpoint(
    store: Store, session: Session, settings: LifecycleSettings, now: datetime
) -> datetime | None:
    """Enqueue a checkpoint if the session is quiet with uncommitted turns.

    Returns when the timer should fire next (None: drop it).
    """
    quiet = settings.checkpoint_quiet
    if quiet is None or not settings.providers:
        return None
    idle = now - session.last_activity_at
    if idle < quiet:
        return session.last_activity_at + quiet
    cursors = {c.provider: c.committed_seq for c in await store.cursors(session.id)}
    committed = min(cursors.get(name, 0) for name in settings.providers)
    if session.turn_count > committed:
        jobs = checkpoint_jobs(session.id, session.turn_count, providers=settings.providers)
        await store.enqueue(jobs, at=now)
    return now + min(max(quiet, idle), MAX_IDLE_RECHECK)
