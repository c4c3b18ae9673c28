"""The gateway with the real OpenViking server: commits, recall, restarts, failed extraction.

Each test drives the real pieces (a SQLite store, the engine and worker of a
`Lifecycle`, the OpenViking provider) against the real server, whose models are
the fake of this package. Time in the gateway is a fake clock, moved forward
only to make retries due; everything on the wire is real.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from integration.openviking.fake_model import FakeModel
from integration.openviking.server import OpenVikingServer, ServerView
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.lifecycle.consumers import MEMORY_COMMIT
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.memory.openviking import OpenVikingProvider
from sessiongate.memory.provider import ProviderSession, RecallScope
from sessiongate.models import ChatType, JobState, Role, Session, SessionState, Source
from sessiongate.retry import RetryPolicies, RetryPolicy
from sessiongate.store import Store, open_store
from sessiongate.testing import FakeClock

pytestmark = pytest.mark.slow

PROVIDER = "openviking"
RETRY = RetryPolicies(
    default=RetryPolicy(base_delay=0.5, max_delay=1.0, max_attempts=20, max_age=3600.0)
)


def dm(user: str) -> Source:
    return Source("telegram", f"chat-{user}", ChatType.DM, user_id=user, user_name=user.title())


@dataclass
class Gateway:
    """One gateway process over a SQLite store, with OpenViking as its only provider."""

    store: Store
    clock: FakeClock
    life: Lifecycle
    provider: OpenVikingProvider

    @property
    def engine(self) -> Engine:
        return self.life.engine

    async def talk(self, source: Source, *exchanges: tuple[str, str]) -> Session:
        """Record user/assistant exchanges in the source's current session."""
        session = (await self.engine.route(source)).session
        for said, answered in exchanges:
            await self.engine.record(session.id, Role.USER, said)
            await self.engine.record(session.id, Role.ASSISTANT, answered)
        return await self.session(session.id)

    async def end(self, source: Source) -> Session:
        """/new: end the current session; return the ended one."""
        routed = await self.engine.new_session(source)
        assert routed.ended is not None
        return routed.ended

    async def session(self, session_id: str) -> Session:
        session = await self.store.get_session(session_id)
        assert session is not None
        return session

    async def settle(self, *, rounds: int = 40) -> None:
        """Run jobs until none is left, moving the clock past each retry's backoff."""
        for _ in range(rounds):
            await self.life.drain()
            stats = await self.store.outbox_stats()
            if stats.pending == 0 and stats.running == 0:
                return
            self.clock.advance(2.0)
        raise AssertionError(f"jobs still pending: {await self.store.outbox_stats()}")

    async def info(self, session: Session) -> dict[str, Any]:
        info = await self.provider.session_info(ProviderSession.of(session))
        assert info is not None, f"OpenViking has no session {session.id}"
        return info

    async def assert_committed_once(self, session: Session, view: ServerView) -> None:
        """Finalized; every turn in OpenViking exactly once; one completed commit."""
        session = await self.session(session.id)
        assert session.state is SessionState.FINALIZED
        cursor = await self.store.get_cursor(PROVIDER, session.id)
        assert (cursor.delivered_seq, cursor.committed_seq) == (session.turn_count,) * 2
        assert cursor.commit_epoch == 1
        info = await self.info(session)
        assert info["total_message_count"] == session.turn_count
        assert (info["message_count"], info["commit_count"]) == (0, 1)
        user = self.provider.identity(ProviderSession.of(session)).user
        tasks = await view.commit_tasks(user, session.id)
        assert [task["status"] for task in tasks] == ["completed"]


@pytest.fixture
async def gateway(store_path: Path, provider: OpenVikingProvider) -> AsyncIterator[Gateway]:
    store = await open_store(f"sqlite:///{store_path}")
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    life = Lifecycle(
        store,
        LifecycleSettings(providers=(PROVIDER,)),
        providers={PROVIDER: provider},
        hooks=HookDispatcher(),
        clock=clock,
        rand=random.Random(4),
        retry=RETRY,
    )
    try:
        yield Gateway(store, clock, life, provider)
    finally:
        await store.close()


def preference(provider: OpenVikingProvider, user_id: str, topic: str, text: str) -> Any:
    """The extraction reply that stores one preference memory for `user_id`."""
    user = provider.user_identity(user_id).user
    return {"preferences": [{"page_id": 100, "user": user, "topic": topic, "content": text}]}


async def recalled(provider: OpenVikingProvider, user_id: str, query: str) -> list[str]:
    return [hit.text for hit in await provider.recall(RecallScope(user_id), query, limit=10)]


async def test_memory_of_an_ended_session_is_recalled_for_its_user_only(
    gateway: Gateway, model: FakeModel, view: ServerView
) -> None:
    provider = gateway.provider
    alice, bob = dm("alice"), dm("bob")
    model.script("cardamom", preference(provider, "alice", "tea", "- Takes cardamom in her tea"))
    model.script("pistachio", preference(provider, "bob", "ice_cream", "- Loves pistachio gelato"))
    await gateway.talk(
        alice,
        ("I always put cardamom in my tea.", "Cardamom tea, noted."),
        ("Just a pinch.", "A pinch it is."),
    )
    await gateway.talk(bob, ("Pistachio gelato is the best.", "Pistachio it is."))
    ended_alice, ended_bob = await gateway.end(alice), await gateway.end(bob)

    await gateway.settle()

    await gateway.assert_committed_once(ended_alice, view)
    await gateway.assert_committed_once(ended_bob, view)
    assert (await gateway.info(ended_alice))["memories_extracted"]["total"] >= 1
    await view.wait_processed("alice")
    later = (await gateway.engine.route(alice)).session
    assert later.id != ended_alice.id
    scope = RecallScope("alice", platform="telegram", exclude_session_id=later.id)
    hits = [h.text for h in await provider.recall(scope, "cardamom tea", limit=10)]
    assert "- Takes cardamom in her tea" in hits
    assert not any("pistachio" in text.lower() for text in hits)
    # Bob's own memory is there for him; Alice's is not, whatever he asks.
    assert "- Loves pistachio gelato" in await recalled(provider, "bob", "pistachio gelato")
    assert not any(
        "cardamom" in text.lower() for text in await recalled(provider, "bob", "cardamom tea")
    )


async def wait_for_accepted_commit(gateway: Gateway, session: Session) -> None:
    """Until OpenViking has archived the session (its extraction then runs ≈10 s)."""
    for _ in range(200):
        info = await gateway.provider.session_info(ProviderSession.of(session))
        if info is not None and info["commit_count"] >= 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session.id} was never committed")


async def test_server_restart_mid_conversation_loses_and_duplicates_nothing(
    gateway: Gateway, openviking: OpenVikingServer, view: ServerView
) -> None:
    dora = dm("dora")
    first = await gateway.talk(dora, *[(f"question {i}", f"answer {i}") for i in range(1, 3)])
    await gateway.end(dora)
    # The first session's commit is accepted, then the server stops while the
    # commit's extraction task runs: the gateway never sees it finish.
    draining = asyncio.create_task(gateway.life.drain())
    await wait_for_accepted_commit(gateway, first)
    second = await gateway.talk(dora, ("before the outage", "still up"), ("one more", "sure"))
    # A batch that landed but whose acknowledgement was lost (the gateway died
    # between the answer and its cursor's advance): only OpenViking knows it.
    entries = await gateway.store.entries(second.id, after_seq=0, upto_seq=3, limit=3)
    await gateway.provider.deliver(ProviderSession.of(second), entries, idempotency_key="lost")
    openviking.stop()
    await draining

    second = await gateway.talk(dora, ("during the outage", "memory is down"), ("ok", "ok"))
    await gateway.end(dora)
    third = await gateway.talk(dora, ("still down?", "yes"))
    await gateway.end(dora)
    await gateway.life.drain()
    for session in (first, second, third):
        assert (await gateway.session(session.id)).state is SessionState.ENDING
    waiting = await gateway.store.list_jobs(kind=MEMORY_COMMIT, state=JobState.PENDING)
    assert {job.session_id for job in waiting} == {first.id, second.id, third.id}
    assert all(job.attempts == 1 for job in waiting)

    openviking.start()
    await gateway.settle()

    assert second.turn_count == 8
    for session in (first, second, third):
        await gateway.assert_committed_once(session, view)
    assert await gateway.store.dead_letters() == []


async def test_failed_extraction_is_repaired_by_replay(
    gateway: Gateway, model: FakeModel, view: ServerView
) -> None:
    provider = gateway.provider
    erin = dm("erin")
    model.script("saffron", preference(provider, "erin", "cooking", "- Cooks risotto with saffron"))
    model.failing = True
    session = await gateway.talk(
        erin, ("My risotto always gets saffron.", "Saffron risotto, lovely."), ("Yes!", "Noted.")
    )
    await gateway.end(erin)
    user = provider.identity(ProviderSession.of(session)).user

    await gateway.life.drain()

    # OpenViking took the epoch, archived it, and lost it in extraction.
    [task] = await view.commit_tasks(user, session.id)
    assert task["status"] == "failed"
    assert "500" in task["error"]
    assert model.failed_calls > 0
    info = await gateway.info(session)
    assert (info["message_count"], info["commit_count"]) == (0, 1)
    cursor = await gateway.store.get_cursor(PROVIDER, session.id)
    assert (cursor.delivered_seq, cursor.committed_seq, cursor.commit_epoch) == (0, 0, 0)
    assert (await gateway.session(session.id)).state is SessionState.ENDING

    model.failing = False
    await gateway.settle()

    assert (await gateway.session(session.id)).state is SessionState.FINALIZED
    cursor = await gateway.store.get_cursor(PROVIDER, session.id)
    assert (cursor.committed_seq, cursor.commit_epoch) == (session.turn_count, 1)
    tasks = await view.commit_tasks(user, session.id)
    assert [t["status"] for t in tasks] == ["failed", "completed"]
    info = await gateway.info(session)
    # The epoch went in twice: once lost to the failed extraction, once replayed.
    assert info["total_message_count"] == 2 * session.turn_count
    assert (info["message_count"], info["commit_count"]) == (0, 2)
    await view.wait_processed(user)
    assert "- Cooks risotto with saffron" in await recalled(provider, "erin", "saffron risotto")
