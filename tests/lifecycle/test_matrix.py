"""The boundary x consumer matrix: every end reason, every consumer, exactly once in effect.

For each reason the engine can produce: record turns, drop every in-process
object (only the store, the fake clock and the 'remote' providers, hook log and
plugin log survive), trigger the boundary with freshly built objects, then let a
fresh worker drain the outbox. Every consumer must have run exactly once: each
provider holds seqs 1..n once and one commit covering them (for `forget`: the
session is erased here and at every provider instead), `session:end` fired once
with the complete payload, the rotation's own event where there is one,
`on_session_finalize` once, and the session is `finalized`. This is the Hermes
failure table (reference/HERMES.md), row by row, with every cell a tick.
`prune` and `admin` have no operation of their own and go through `end_session`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from lifecycle.world import DAILY_POLICY, IDLE_POLICY, NO_RESET, SOURCE, World
from sessiongate.models import EndReason, Session, SessionState
from sessiongate.policy import ResetPolicy
from sessiongate.testing.provider import CommitRecord

TURNS = 5

# Prepares the conversation (returns the id of an earlier session it needs, if any).
Prepare = Callable[[World], Awaitable[str | None]]
# Ends the session under test; returns the session that continues the conversation, if any.
Trigger = Callable[[World, Session, str | None], Awaitable[str | None]]


async def _nothing(world: World) -> None:
    return None


async def _earlier_session(world: World) -> str:
    """A first conversation, ended by /new: the session /resume will switch back to."""
    earlier = await world.chat(SOURCE, 2)
    await world.engine().new_session(SOURCE, reason=EndReason.NEW)
    return earlier.id


async def _new(world: World, session: Session, _: str | None) -> str:
    routed = await world.engine().new_session(SOURCE, reason=EndReason.NEW)
    return routed.session.id


async def _reset(world: World, session: Session, _: str | None) -> str:
    routed = await world.engine().new_session(SOURCE, reason=EndReason.RESET)
    return routed.session.id


async def _sweep(world: World, session: Session, _: str | None) -> None:
    assert await world.sweeper().sweep_once() == 1


async def _idle(world: World, session: Session, earlier: str | None) -> None:
    world.clock.advance(minutes=31)
    await _sweep(world, session, earlier)


def _next_4am(now: datetime) -> datetime:
    boundary = now.replace(hour=4, minute=0, second=0, microsecond=0)
    return boundary if boundary > now else boundary + timedelta(days=1)


async def _daily(world: World, session: Session, earlier: str | None) -> None:
    boundary = _next_4am(world.clock.now())
    world.clock.advance((boundary - world.clock.now()).total_seconds() - 1)
    assert await world.sweeper().sweep_once() == 0, "the daily boundary fired early"
    world.clock.advance(1)
    await _sweep(world, session, earlier)


async def _auto_reset(world: World, session: Session, _: str | None) -> str:
    world.clock.advance(minutes=31)
    routed = await world.engine().route(SOURCE)
    assert routed.started
    assert routed.ended is not None
    assert routed.ended.id == session.id
    return routed.session.id


async def _switch(world: World, session: Session, earlier: str | None) -> str:
    assert earlier is not None
    routed = await world.engine().resume(SOURCE, earlier)
    assert routed.session.id == earlier
    return earlier


async def _branch(world: World, session: Session, _: str | None) -> str:
    return (await world.engine().branch(SOURCE)).session.id


async def _compression(world: World, session: Session, _: str | None) -> str:
    return (await world.engine().compress(SOURCE, "the story so far")).session.id


async def _suspended(world: World, session: Session, _: str | None) -> None:
    assert await world.engine().suspend(session.id)


async def _prune(world: World, session: Session, _: str | None) -> None:
    await world.engine().prune(session.id)


async def _forget(world: World, session: Session, _: str | None) -> None:
    assert await world.engine().forget(session.id)


def _funnel(reason: EndReason) -> Trigger:
    """Reasons without an operation of their own go through `end_session` directly."""

    async def trigger(world: World, session: Session, _: str | None) -> None:
        assert await world.engine().end_session(session.id, reason)

    return trigger


@dataclass(frozen=True)
class Boundary:
    reason: EndReason
    trigger: Trigger
    policy: ResetPolicy = NO_RESET
    prepare: Prepare = _nothing
    # The rotation's own event, if the boundary has one.
    announced: str | None = None
    # The end erases the session here and at every provider instead of committing it.
    erases: bool = False


BOUNDARIES = [
    Boundary(EndReason.NEW, _new, announced="session:reset"),
    Boundary(EndReason.RESET, _reset, announced="session:reset"),
    Boundary(EndReason.IDLE, _idle, policy=IDLE_POLICY),
    Boundary(EndReason.DAILY, _daily, policy=DAILY_POLICY),
    Boundary(EndReason.AUTO_RESET, _auto_reset, policy=IDLE_POLICY, announced="session:reset"),
    Boundary(EndReason.SWITCH, _switch, prepare=_earlier_session, announced="session:switch"),
    Boundary(EndReason.BRANCH, _branch),
    Boundary(EndReason.COMPRESSION, _compression, announced="session:compress"),
    Boundary(EndReason.SUSPENDED, _suspended),
    Boundary(EndReason.ADMIN, _funnel(EndReason.ADMIN)),
    Boundary(EndReason.PRUNE, _prune),
    Boundary(EndReason.FORGET, _forget, erases=True),
]
ROTATION_EVENTS = ("session:reset", "session:switch", "session:compress")


def test_the_matrix_covers_the_whole_catalogue() -> None:
    assert {b.reason for b in BOUNDARIES} == set(EndReason)


@pytest.mark.parametrize("boundary", BOUNDARIES, ids=[str(b.reason) for b in BOUNDARIES])
async def test_every_consumer_runs_exactly_once(world: World, boundary: Boundary) -> None:
    world.use(boundary.policy)
    earlier = await boundary.prepare(world)
    session = await world.chat(SOURCE, TURNS)
    assert session.turn_count == TURNS
    # No agent, engine, worker or provider object lives between the turn and the end.
    world.assert_nothing_alive()

    successor = await boundary.trigger(world, session, earlier)
    world.assert_nothing_alive()
    # Ended, but not finalized before every consumer has run.
    assert (await _state(world, session.id)) is SessionState.ENDING
    await world.drain()
    world.assert_nothing_alive()

    ended = await world.store.get_session(session.id)
    assert ended is not None
    assert ended.state is SessionState.FINALIZED
    assert ended.end_reason is boundary.reason
    assert await world.store.dead_letters() == []
    if boundary.erases:
        await _assert_erased(world, ended)
    else:
        _assert_memory(world, ended)
    _assert_end_event(world, ended, successor)
    _assert_rotation_event(world, ended, successor, boundary.announced)
    _assert_finalize_hook(world, ended, successor)

    # Close every conversation still open, then check the pairing across all of them.
    engine = world.engine()
    for active in await world.store.list_sessions(state=SessionState.ACTIVE):
        assert await engine.end_session(active.id, EndReason.ADMIN)
    del engine
    await world.drain()
    await _assert_every_session_complete(world, earlier)


async def _state(world: World, session_id: str) -> SessionState:
    session = await world.store.get_session(session_id)
    assert session is not None
    return session.state


def _assert_memory(world: World, session: Session) -> None:
    n = session.turn_count
    for provider in world.providers.values():
        assert provider.seqs(session.id) == list(range(1, n + 1)), provider.name
        commits = [c for c in provider.commits if c.session_id == session.id]
        assert commits == [CommitRecord(session.id, 1, 1, n, session.user_id)], provider.name


async def _assert_erased(world: World, session: Session) -> None:
    assert await world.store.entries(session.id) == []
    for provider in world.providers.values():
        assert session.id in provider.forgotten, provider.name
        assert provider.seqs(session.id) == [], provider.name
        assert [c for c in provider.commits if c.session_id == session.id] == [], provider.name


def _assert_end_event(world: World, session: Session, successor: str | None) -> None:
    [end] = world.events_of(session.id, "session:end")
    assert isinstance(end["event_id"], str)
    assert end["event_id"]
    assert end["session_key"] == session.key
    assert end["reason"] == str(session.end_reason)
    assert end["platform"] == session.platform
    assert end["user_id"] == session.user_id
    if successor is None:
        assert end.get("old_session_id") is None
        assert end.get("new_session_id") is None
    else:
        assert end["old_session_id"] == session.id
        assert end["new_session_id"] == successor
    if session.end_reason in (EndReason.IDLE, EndReason.DAILY, EndReason.AUTO_RESET):
        # The detail names the policy that fired.
        assert "session_reset" in end["reason_detail"]
        assert session.end_detail == end["reason_detail"]


def _assert_rotation_event(
    world: World, session: Session, successor: str | None, announced: str | None
) -> None:
    rotations = [
        e
        for e in world.events()
        if e["type"] in ROTATION_EVENTS and e.get("old_session_id") == session.id
    ]
    if announced is None:
        assert rotations == []
        return
    [event] = rotations
    assert event["type"] == announced
    assert event["new_session_id"] == successor
    assert event["session_key"] == session.key
    assert event["event_id"]
    assert event["reason"] == str(session.end_reason)
    # session:compress names the continuing session, as Hermes does; the others the ended one.
    expected_id = successor if announced == "session:compress" else session.id
    assert event["session_id"] == expected_id


def _assert_finalize_hook(world: World, session: Session, successor: str | None) -> None:
    [call] = [c for c in world.finalized if c["session_id"] == session.id]
    assert call["reason"] == str(session.end_reason)
    assert call["platform"] == session.platform
    assert call["event_id"]
    assert call["new_session_id"] == successor
    assert call["old_session_id"] == (None if successor is None else session.id)


async def _assert_every_session_complete(world: World, earlier: str | None) -> None:
    sessions = await world.store.list_sessions()
    if earlier is not None:
        assert earlier in {s.id for s in sessions}
    assert await world.store.dead_letters() == []
    events = world.events()
    # At-least-once on the wire, but without faults every event arrives exactly once.
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    lifecycle: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event["type"] in ("session:start", "session:end"):
            lifecycle[event["session_id"]].append(event["type"])
    assert set(lifecycle) == {s.id for s in sessions}
    for session in sessions:
        assert session.state is SessionState.FINALIZED, session.id
        # Paired one to one, in order: start, end (again after a resume).
        pairs = session.epoch + 1
        assert lifecycle[session.id] == ["session:start", "session:end"] * pairs, session.id
        finals = [c for c in world.finalized if c["session_id"] == session.id]
        assert len(finals) == pairs, session.id
        if session.end_reason is EndReason.FORGET:
            continue
        for provider in world.providers.values():
            _assert_contiguous_commits(provider.name, provider.commits, session)
            assert provider.seqs(session.id) == list(range(1, session.turn_count + 1))


def _assert_contiguous_commits(name: str, commits: list[CommitRecord], session: Session) -> None:
    mine = [c for c in commits if c.session_id == session.id]
    expected_first = 1
    for epoch, commit in enumerate(mine, start=1):
        assert (commit.epoch, commit.first_seq) == (epoch, expected_first), (name, commit)
        expected_first = commit.last_seq + 1
    assert expected_first - 1 == session.turn_count, (name, session.id, mine)
