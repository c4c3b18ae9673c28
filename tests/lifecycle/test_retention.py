"""Retention through the lifecycle: idle conversations end through the funnel, then go."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from lifecycle.world import OTHER, SOURCE, World
from sessiongate.lifecycle.retention import Retention
from sessiongate.lifecycle.settings import RetentionPolicy
from sessiongate.models import EndReason, SessionState

DAY = 86_400
POLICY = RetentionPolicy(
    idle=timedelta(days=90),
    ended_sessions=timedelta(days=30),
    done_jobs=timedelta(days=7),
    dead_letters=timedelta(days=30),
    batch=2,
    every=timedelta(hours=1),
)


async def test_an_idle_conversation_ends_committed_hooked_and_later_goes(world: World) -> None:
    quiet = await world.chat(SOURCE, 4)
    world.clock.advance(91 * DAY)
    busy = await world.chat(OTHER, 2)
    retention = Retention(world.engine(), POLICY, clock=world.clock)
    dry = await retention.run_once(dry_run=True)
    assert [s.id for s in dry.ended] == [quiet.id]
    first = await retention.run_once()
    assert [s.id for s in first.ended] == [quiet.id]
    ended = await world.store.get_session(quiet.id)
    assert ended is not None
    assert ended.end_reason is EndReason.PRUNE
    await world.drain()
    # Committed to every provider and announced like any end.
    for provider in world.providers:
        cursor = await world.store.get_cursor(provider, quiet.id)
        assert cursor.committed_seq == 4
    assert len(world.events_of(quiet.id, "session:end")) == 1
    assert await world.store.routed_session(world.engine().key_of(SOURCE)) is None
    world.clock.advance(31 * DAY)
    later = await retention.run_once()
    assert quiet.id in later.removed.sessions
    assert busy.id not in later.removed.sessions  # it is still active
    assert await world.store.get_session(quiet.id) is None
    fresh = await world.engine().route(SOURCE)
    assert fresh.started
    assert fresh.session.turn_count == 0


async def test_a_conversation_being_handled_is_left_alone(world: World) -> None:
    session = await world.chat(SOURCE, 2)
    world.clock.advance(91 * DAY)
    lease = await world.store.acquire_lease(
        session.key, "replica", at=world.clock.now(), lease_seconds=60
    )
    assert lease is not None
    retention = Retention(world.engine(), POLICY, clock=world.clock)
    assert (await retention.run_once()).ended == ()
    still = await world.store.get_session(session.id)
    assert still is not None
    assert still.state is SessionState.ACTIVE
    world.clock.advance(61)
    assert [s.id for s in (await retention.run_once()).ended] == [session.id]


async def test_the_gateway_prunes_on_its_own_every_interval(world: World) -> None:
    sessions = [await world.chat(source, 2) for source in (SOURCE, OTHER)]
    retention = Retention(world.engine(), POLICY, clock=world.clock)
    stop = asyncio.Event()
    runner = asyncio.create_task(retention.run(stop))
    await asyncio.sleep(0.05)
    # The first pass ran at start and found nothing idle yet.
    for x in sessions:
        now = await world.store.get_session(x.id)
        assert now is not None
        assert now.state is SessionState.ACTIVE
    world.clock.advance(91 * DAY)  # wakes the hourly pass, which finds them idle
    for _ in range(100):
        states = [(await world.store.get_session(x.id)) for x in sessions]
        if all(s is not None and s.end_reason is EndReason.PRUNE for s in states):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"retention did not run: {states}")
    stop.set()
    await runner


async def test_no_policy_keeps_everything(world: World) -> None:
    session = await world.chat(SOURCE, 2)
    world.clock.advance(1000 * DAY)
    keep = RetentionPolicy(idle=None, ended_sessions=None, done_jobs=None, dead_letters=None)
    report = await Retention(world.engine(), keep, clock=world.clock).run_once()
    assert report.empty_run
    assert await world.store.get_session(session.id) is not None
