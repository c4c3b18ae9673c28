"""Commit checkpoints of live sessions: every N turns, and after a quiet period."""

from __future__ import annotations

import random
from datetime import timedelta

from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.models import ChatType, Role, SessionState, Source
from sessiongate.store import Store
from sessiongate.testing import FakeClock, FakeProvider

SOURCE = Source(platform="web", chat_id="c1", chat_type=ChatType.DM, user_id="u1")


def _lifecycle(
    store: Store, clock: FakeClock, provider: FakeProvider, **settings: object
) -> Lifecycle:
    config = LifecycleSettings(providers=(provider.name,), **settings)  # type: ignore[arg-type]
    return Lifecycle(
        store,
        config,
        providers={provider.name: provider},
        hooks=HookDispatcher(),
        clock=clock,
        rand=random.Random(1),
    )


async def _talk(lifecycle: Lifecycle, turns: int) -> str:
    session = (await lifecycle.engine.route(SOURCE)).session
    for n in range(turns):
        await lifecycle.engine.record(session.id, Role.USER, f"turn {n}")
    return session.id


async def test_a_quiet_session_is_committed_while_it_stays_live(
    store: Store, clock: FakeClock
) -> None:
    provider = FakeProvider(name="mem")
    lifecycle = _lifecycle(store, clock, provider, checkpoint_quiet=timedelta(minutes=10))
    session_id = await _talk(lifecycle, 3)
    clock.advance(minutes=9)
    await lifecycle.sweeper.sweep_once()
    await lifecycle.drain()
    assert provider.commits == []
    clock.advance(minutes=1)
    await lifecycle.sweeper.sweep_once()
    await lifecycle.drain()
    assert [(c.epoch, c.first_seq, c.last_seq) for c in provider.commits] == [(1, 1, 3)]
    session = await store.get_session(session_id)
    assert session is not None
    assert session.state is SessionState.ACTIVE
    # The conversation resumes, goes quiet again: the next epoch follows on.
    await _talk(lifecycle, 2)
    for _ in range(8):  # the timer re-arms with backoff; let it catch the new quiet period
        clock.advance(minutes=10)
        await lifecycle.sweeper.sweep_once()
        await lifecycle.drain()
    assert [(c.epoch, c.first_seq, c.last_seq) for c in provider.commits] == [(1, 1, 3), (2, 4, 5)]


async def test_an_idle_session_without_new_turns_is_not_committed_again(
    store: Store, clock: FakeClock
) -> None:
    provider = FakeProvider(name="mem")
    lifecycle = _lifecycle(store, clock, provider, checkpoint_quiet=timedelta(minutes=10))
    session_id = await _talk(lifecycle, 2)
    for _ in range(6):
        clock.advance(hours=1)
        await lifecycle.sweeper.sweep_once()
        await lifecycle.drain()
    assert len(provider.commits) == 1
    [timer] = [t for t in await store.timers(session_id) if t.kind == "checkpoint"]
    # Rechecks of an idle session back off, but never beyond an hour.
    assert clock.now() < timer.due_at <= clock.now() + timedelta(hours=1)


async def test_every_n_turns_a_checkpoint_commits_the_live_session(
    store: Store, clock: FakeClock
) -> None:
    provider = FakeProvider(name="mem")
    lifecycle = _lifecycle(store, clock, provider, checkpoint_every_turns=4, checkpoint_quiet=None)
    await _talk(lifecycle, 9)
    await lifecycle.drain()
    assert [(c.first_seq, c.last_seq) for c in provider.commits] == [(1, 4), (5, 8)]
    assert provider.seqs(provider.commits[0].session_id) == list(range(1, 9))
