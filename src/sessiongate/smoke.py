"""The smoke conversation: the lifecycle end to end on a real store, in a few seconds.

It routes a terminal conversation to a session, writes a user turn and a reply
ahead, ends the session with `/new` through the funnel, and runs the outbox
workers until the ended session is `finalized` (its `session:end` event and
finalize hook delivered, and its commit to the built-in local memory provider).
Then it recalls the conversation from memory, as the agent's next turn would.
It is the check that a fresh installation works, until the chat gateway runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.hooks.problem import HookProblem
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.memory.provider import RecallHit, RecallScope
from sessiongate.memory.registry import build_providers
from sessiongate.models import ChatType, EndReason, Job, JobState, Role, Session, Source
from sessiongate.store.base import Store


@dataclass(frozen=True, slots=True)
class SmokeReport:
    """What the smoke conversation did."""

    ended: Session
    current: Session
    consumers: list[Job]
    hook_problems: list[HookProblem]
    recalled: list[RecallHit]

    @property
    def ok(self) -> bool:
        done = all(job.state is JobState.DONE for job in self.consumers)
        remembered = any(hit.session_id == self.ended.id for hit in self.recalled)
        return self.ended.state == "finalized" and done and remembered


async def run_smoke(store: Store, *, hooks_dir: Path | None, user: str) -> SmokeReport:
    """Talk, `/new`, and drain the outbox; returns what happened."""
    hooks, problems = HookDispatcher.load(hooks_dir)
    providers = build_providers({"local": {}}, store=store)
    settings = LifecycleSettings(providers=tuple(providers))
    lifecycle = Lifecycle(store, settings, providers=providers, hooks=hooks)
    engine = lifecycle.engine
    source = Source(platform="terminal", chat_id=user, chat_type=ChatType.DM, user_id=user)
    first = (await engine.route(source)).session
    await engine.record(first.id, Role.USER, "Hello! Please remember that I take my coffee black.")
    await engine.record(first.id, Role.ASSISTANT, "Noted: black coffee. (smoke conversation)")
    routed = await engine.new_session(source, reason=EndReason.NEW)
    await lifecycle.drain()
    ended = await store.get_session(first.id)
    assert ended is not None
    consumers = await store.list_jobs(session_id=first.id)
    scope = RecallScope(user_id=user, exclude_session_id=routed.session.id)
    recalled = list(await providers["local"].recall(scope, "how do I take my coffee", limit=3))
    return SmokeReport(ended, routed.session, consumers, problems, recalled)
