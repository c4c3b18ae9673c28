"""The sweeper: durable reset timers fired through the one funnel, paced, by several replicas."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, cast
from zoneinfo import ZoneInfo

from lifecycle.world import DAILY_POLICY, IDLE_POLICY, SOURCE, World, eventually
from sessiongate.clock import SystemClock
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.consumers import HOOK_EVENT, HOOK_FINALIZE, MEMORY_COMMIT
from sessiongate.lifecycle.engine import RESET_TIMER, Engine
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.lifecycle.sweeper import Sweeper, SweeperSettings
from sessiongate.models import ChatType, EndReason, Role, Session, SessionState, Source, Timer
from sessiongate.policy import ResetMode, ResetPolicy, ResetRules
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock


class SteppingClock(FakeClock):
    """A fake clock on which sleeping moves time on by exactly the sleep, and is recorded."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


def _source(n: int) -> Source:
    return Source("telegram", f"chat-{n}", ChatType.DM, user_id=f"u-{n}")


async def _session(store: Store, session_id: str) -> Session:
    session = await store.get_session(session_id)
    assert session is not None
    return session


async def test_an_idle_timer_fires_through_the_funnel(world: World) -> None:
    world.use(IDLE_POLICY)
    session = await world.chat(SOURCE, 2)
    [timer] = [t for t in await world.store.timers(session.id) if t.kind == RESET_TIMER]
    assert (timer.kind, timer.due_at) == (
        RESET_TIMER,
        session.last_activity_at + timedelta(minutes=30),
    )
    world.clock.advance(minutes=30, seconds=-1)
    assert await world.sweeper().sweep_once() == 0
    assert (await _session(world.store, session.id)).state is SessionState.ACTIVE

    world.clock.advance(1)
    assert await world.sweeper().sweep_once() == 1
    ended = await _session(world.store, session.id)
    assert (ended.state, ended.end_reason) == (SessionState.ENDING, EndReason.IDLE)
    assert ended.end_detail is not None
    assert "session_reset (mode idle, idle after 30m)" in ended.end_detail
    assert await world.store.timers(session.id) == []
    assert await world.store.routed_session(session.key) is None
    # The same consumers as every other end: a commit per provider, the event, the hook.
    kinds = Counter(j.kind for j in await world.store.list_jobs(session_id=session.id))
    assert kinds == {MEMORY_COMMIT: 2, HOOK_EVENT: 2, HOOK_FINALIZE: 1}  # start + end events

    await world.drain()
    assert (await _session(world.store, session.id)).state is SessionState.FINALIZED
    [end] = world.events_of(session.id, "session:end")
    assert end["reason"] == "idle"


async def test_activity_before_the_due_time_moves_the_timer(world: World) -> None:
    world.use(IDLE_POLICY)
    session = await world.chat(SOURCE, 1)
    [first] = [t for t in await world.store.timers(session.id) if t.kind == RESET_TIMER]
    world.clock.advance(minutes=20)
    await world.engine().record(session.id, Role.USER, "still here")
    world.clock.advance(minutes=10)  # the timer's original due time

    assert await world.sweeper().sweep_once() == 0
    assert (await _session(world.store, session.id)).state is SessionState.ACTIVE
    [moved] = [t for t in await world.store.timers(session.id) if t.kind == RESET_TIMER]
    assert moved.due_at == first.due_at + timedelta(minutes=20)
    assert moved.lease_owner is None

    world.clock.advance(minutes=20, seconds=-1)
    assert await world.sweeper().sweep_once() == 0
    world.clock.advance(1)
    assert await world.sweeper().sweep_once() == 1
    assert (await _session(world.store, session.id)).end_reason is EndReason.IDLE


async def test_a_daily_boundary_fires_at_its_local_hour(world: World) -> None:
    world.tz = ZoneInfo("Europe/Berlin")
    world.use(DAILY_POLICY)
    session = await world.chat(SOURCE, 1)  # 2026-03-01 13:00 in Berlin
    boundary = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 04:00 in Berlin
    [timer] = [t for t in await world.store.timers(session.id) if t.kind == RESET_TIMER]
    assert timer.due_at == boundary

    world.clock.advance((boundary - world.clock.now()).total_seconds() - 1)
    assert await world.sweeper().sweep_once() == 0
    world.clock.advance(1)
    assert await world.sweeper().sweep_once() == 1
    ended = await _session(world.store, session.id)
    assert ended.end_reason is EndReason.DAILY
    assert ended.end_detail is not None
    assert "daily at 04:00 Europe/Berlin" in ended.end_detail


async def test_the_catch_up_after_downtime_is_paced_by_max_rate(world: World) -> None:
    world.clock = SteppingClock(world.clock.now())
    world.use(IDLE_POLICY)
    sessions = [await world.chat(_source(n), 1) for n in range(20)]
    world.clock.advance(hours=5)  # the gateway was down: every boundary is overdue
    settings = SweeperSettings(batch=100, max_rate=10.0)
    sweeper = world.sweeper(settings=settings)
    started = world.clock.now()

    assert await sweeper.sweep_once() == 20
    assert world.clock.slept == [0.1] * 20
    assert world.clock.now() - started == timedelta(seconds=2)
    ends = sorted([(await _session(world.store, s.id)).ended_at or started for s in sessions])
    gaps = {later - earlier for earlier, later in pairwise(ends)}
    assert gaps == {timedelta(seconds=0.1)}  # never more than max_rate ends a second


async def _sweep_until_idle(sweeper: Sweeper) -> int:
    total = 0
    while ended := await sweeper.sweep_once():
        total += ended
    return total


async def test_two_replicas_sweeping_at_once_end_each_session_once(world: World) -> None:
    world.use(IDLE_POLICY)
    sessions = [await world.chat(_source(n), 1) for n in range(12)]
    world.clock.advance(hours=1)
    settings = SweeperSettings(batch=3, max_rate=None)
    a = world.sweeper(owner="replica-a", settings=settings)
    b = world.sweeper(owner="replica-b", settings=settings)
    ended = await asyncio.gather(_sweep_until_idle(a), _sweep_until_idle(b))
    assert sum(ended) == 12
    await _assert_ended_once(world, sessions)


async def test_replicas_with_skewed_clocks_still_end_each_session_once(world: World) -> None:
    world.use(IDLE_POLICY)
    sessions = [await world.chat(_source(n), 1) for n in range(8)]
    world.clock.advance(hours=2)
    # A replica whose clock is 100 s behind sees the other's leases as long expired, so
    # both claim every timer: only the end's compare-and-set keeps the end single.
    late = FakeClock(world.clock.now() - timedelta(seconds=100))
    a = world.sweeper(owner="replica-a", clock=late)
    b = world.sweeper(owner="replica-b")
    ended = await asyncio.gather(a.sweep_once(), b.sweep_once())
    assert sum(ended) == 8
    assert await world.store.next_timer_due() is None
    await _assert_ended_once(world, sessions)


async def _assert_ended_once(world: World, sessions: list[Session]) -> None:
    await world.drain()
    for session in sessions:
        done = await _session(world.store, session.id)
        assert (done.state, done.end_reason) == (SessionState.FINALIZED, EndReason.IDLE)
        assert len(world.events_of(session.id, "session:end")) == 1
        assert len([c for c in world.finalized if c["session_id"] == session.id]) == 1


async def test_a_timer_left_on_an_ended_session_ends_nothing(world: World) -> None:
    session = await world.chat(SOURCE, 1)
    assert await world.engine().end_session(session.id, EndReason.ADMIN)
    await world.store.set_timer(Timer(session.id, RESET_TIMER, world.clock.now()))
    assert await world.sweeper().sweep_once() == 0
    assert await world.store.timers(session.id) == []
    assert (await _session(world.store, session.id)).end_reason is EndReason.ADMIN


async def test_the_running_sweeper_fires_a_boundary_within_seconds_of_its_due_time(
    store: Store,
) -> None:
    clock = SystemClock()
    one_second = ResetPolicy(mode=ResetMode.IDLE, idle=timedelta(seconds=1))
    settings = LifecycleSettings(reset=ResetRules(default=one_second))
    sweepers: list[Sweeper] = []

    def changed() -> None:
        for sweeper in sweepers:
            sweeper.wake()

    engine = Engine(
        store, settings, clock=clock, ids=IdGenerator(clock, random.Random()), on_change=changed
    )
    # A long poll: only sleeping until the next due time can make the deadline.
    sweepers.append(
        Sweeper(engine, owner="s", clock=clock, settings=SweeperSettings(poll_seconds=60.0))
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sweepers[0].run(stop))
    try:
        await asyncio.sleep(0.05)  # asleep, with no timer at all
        routed = await engine.route(SOURCE)
        [timer] = [t for t in await store.timers(routed.session.id) if t.kind == RESET_TIMER]

        async def ended() -> bool:
            return (await _session(store, routed.session.id)).state is not SessionState.ACTIVE

        await eventually(ended, within=10.0, what="the idle end")
        done = await _session(store, routed.session.id)
        assert done.end_reason is EndReason.IDLE
        assert done.ended_at is not None
        assert timedelta(0) <= done.ended_at - timer.due_at < timedelta(seconds=2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


class TimerDuringRead:
    """Forwards to a store; while the sweeper reads its next due time, a due timer is set."""

    def __init__(self, inner: Store, timer: Timer) -> None:
        self._inner = inner
        self._timer = timer
        self.sweeper: Sweeper | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def next_timer_due(self) -> datetime | None:
        due = await self._inner.next_timer_due()
        if self.sweeper is not None:
            sweeper, self.sweeper = self.sweeper, None
            await self._inner.set_timer(self._timer)
            sweeper.wake()
        return due  # read before the timer was set


async def test_a_timer_set_during_the_idle_read_is_not_lost(world: World) -> None:
    session = await world.chat(SOURCE, 1)  # no reset policy yet: no timer
    assert await world.store.timers(session.id) == []
    world.use(IDLE_POLICY)
    world.clock.advance(hours=1)
    racy = TimerDuringRead(world.store, Timer(session.id, RESET_TIMER, world.clock.now()))
    engine = Engine(
        cast(Store, racy),
        world.settings,
        clock=world.clock,
        ids=IdGenerator(world.clock, world.rand),
    )
    sweeper = Sweeper(engine, owner="s", clock=world.clock, settings=SweeperSettings(max_rate=None))
    racy.sweeper = sweeper
    stop = asyncio.Event()
    # The fake clock never moves: only the wake-up can end the idle sleep.
    task = asyncio.create_task(sweeper.run(stop))
    try:

        async def ended() -> bool:
            return (await _session(world.store, session.id)).state is not SessionState.ACTIVE

        await eventually(ended, within=3.0, what="the end by the timer set during the read")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert (await _session(world.store, session.id)).end_reason is EndReason.IDLE
