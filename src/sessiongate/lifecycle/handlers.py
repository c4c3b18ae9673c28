"""The job handlers of the lifecycle's consumers, keyed by job kind."""

from __future__ import annotations

from collections.abc import Mapping

from sessiongate.errors import SessionGateError
from sessiongate.hooks.dispatcher import HandlerOutcome, HookDispatcher
from sessiongate.hooks.events import Event
from sessiongate.lifecycle.consumers import (
    HOOK_EVENT,
    HOOK_FINALIZE,
    LEDGER_ERASE,
    MEMORY_COMMIT,
    MEMORY_FORGET,
)
from sessiongate.lifecycle.worker import JobHandler
from sessiongate.memory.sync import MemorySync
from sessiongate.models import Job
from sessiongate.retry import RetryPolicies, RetryPolicy


class HookFailed(SessionGateError):
    """One or more hook handlers failed; the event is delivered again (at least once)."""


def _raise_failures(what: str, outcomes: list[HandlerOutcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if failed:
        names = ", ".join(f"{o.hook} ({o.error or o.status})" for o in failed)
        raise HookFailed(f"{what}: {names}")


class HookJobs:
    """Delivers outbox events to the hooks and plugins."""

    def __init__(self, dispatcher: HookDispatcher) -> None:
        self._dispatcher = dispatcher

    async def event(self, job: Job) -> None:
        event = Event.from_job_payload(job.payload)
        _raise_failures(f"{event.type} handlers failed", await self._dispatcher.notify(event))

    async def finalize(self, job: Job) -> None:
        outcomes = await self._dispatcher.finalize(job.payload)
        _raise_failures("on_session_finalize failed", outcomes)


# Memory work waits out provider outages (the failure it expects) for up to a week
# instead of dead-lettering within hours: at most ten minutes apart, the attempts (fast
# failures while a circuit is open count too) never run out before the week does.
# Hook events keep the default policy.
_MEMORY_RETRY = RetryPolicy(base_delay=2.0, max_delay=600.0, max_attempts=5000, max_age=7 * 86400.0)


def default_retry_policies() -> RetryPolicies:
    """The retry policy of each consumer kind."""
    return RetryPolicies(by_kind={MEMORY_COMMIT: _MEMORY_RETRY, MEMORY_FORGET: _MEMORY_RETRY})


def job_handlers(*, memory: MemorySync, hooks: HookDispatcher) -> Mapping[str, JobHandler]:
    """Every consumer kind the engine enqueues, mapped to what runs it."""
    hook_jobs = HookJobs(hooks)

    async def erase(job: Job) -> None:
        await memory.store.erase_session(str(job.payload["session_id"]))

    return {
        MEMORY_COMMIT: memory.commit_job,
        MEMORY_FORGET: memory.forget_job,
        LEDGER_ERASE: erase,
        HOOK_EVENT: hook_jobs.event,
        HOOK_FINALIZE: hook_jobs.finalize,
    }
