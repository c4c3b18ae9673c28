"""The engine: routing with the lazy reset, write-ahead records, resume, branch, compress."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from lifecycle.world import IDLE_POLICY, OTHER, SOURCE, World
from sessiongate.errors import Conflict, InvalidInput, NotFound, SessionClosed
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.consumers import HOOK_EVENT
from sessiongate.lifecycle.engine import RESET_TIMER, Engine
from sessiongate.models import (
    EndReason,
    EndRequest,
    Lineage,
    Role,
    Session,
    SessionState,
    Source,
)
from sessiongate.store import Store, open_store
from sessiongate.testing import new_entry
from sessiongate.testing.provider import CommitRecord


async def _session(store: Store, session_id: str) -> Session:
    session = await store.get_session(session_id)
    assert session is not None
    return session


async def _events(store: Store, session_id: str) -> list[dict[str, Any]]:
    """The hook events enqueued for a session, in enqueue order."""
    jobs = await store.list_jobs(session_id=session_id, kind=HOOK_EVENT)
    return [{"type": j.payload["event_type"], **j.payload["payload"]} for j in jobs]


class CallLog:
    """Forwards to a store and records the name of every operation called."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self._inner, name)


# -- route ------------------------------------------------------------------------------


async def test_route_creates_a_session_then_reuses_it(world: World) -> None:
    engine = world.engine()
    first = await engine.route(SOURCE)
    assert first.started
    assert first.ended is None
    assert first.session.key == engine.key_of(SOURCE) == "agent:main:telegram:dm:chat-42"
    assert (first.session.user_id, first.session.state) == ("u-42", SessionState.ACTIVE)
    again = await engine.route(SOURCE)
    assert not again.started
    assert again.session.id == first.session.id
    assert (await engine.route(OTHER)).session.id != first.session.id
    [start] = await _events(world.store, first.session.id)
    assert (start["type"], start["session_id"], start["reason"]) == (
        "session:start",
        first.session.id,
        "new",
    )


async def test_route_lazily_ends_an_expired_session_and_opens_the_next_at_once(
    world: World,
) -> None:
    world.use(IDLE_POLICY)
    engine = world.engine()
    old = (await engine.route(SOURCE)).session
    await engine.record(old.id, Role.USER, "hello")
    world.clock.advance(minutes=30, seconds=-1)
    assert (await engine.route(SOURCE)).session.id == old.id

    world.clock.advance(1)
    log = CallLog(world.store)
    ids = IdGenerator(world.clock, world.rand)
    lazy = Engine(cast(Store, log), world.settings, clock=world.clock, ids=ids)
    routed = await lazy.route(SOURCE)
    # One read, then one transaction that ends the old session and starts the new one.
    assert log.calls == ["routed_session", "start_session"]
    assert routed.started
    assert routed.ended is not None
    assert routed.ended.id == old.id
    new = routed.session
    assert new.id != old.id
    ended = await _session(world.store, old.id)
    assert ended.end_reason is EndReason.AUTO_RESET
    assert ended.end_detail is not None
    assert ended.end_detail.startswith("idle: session_reset (mode idle, idle after 30m)")
    assert routed.reason_detail == ended.end_detail
    assert ended.ended_at == new.created_at
    assert (await _session(world.store, new.id)).state is SessionState.ACTIVE
    routed_now = await world.store.routed_session(new.key)
    assert routed_now is not None
    assert routed_now.id == new.id
    assert await world.store.timers(old.id) == []
    [timer] = [t for t in await world.store.timers(new.id) if t.kind == RESET_TIMER]
    assert timer.due_at == new.created_at + timedelta(minutes=30)
    end = next(e for e in await _events(world.store, old.id) if e["type"] == "session:end")
    assert (end["reason"], end["new_session_id"]) == ("auto_reset", new.id)


@pytest.mark.parametrize("replicas", [1, 8], ids=["one-engine", "eight-engines"])
async def test_concurrent_routes_of_a_fresh_source_open_one_session(
    world: World, replicas: int
) -> None:
    engines = [world.engine() for _ in range(replicas)]
    routed = await asyncio.gather(*(engines[n % replicas].route(SOURCE) for n in range(8)))
    assert len({r.session.id for r in routed}) == 1
    assert sum(r.started for r in routed) == 1
    [session] = await world.store.list_sessions(key=engines[0].key_of(SOURCE))
    assert len(await _events(world.store, session.id)) == 1


async def test_concurrent_routes_of_an_expired_session_reset_it_once(world: World) -> None:
    world.use(IDLE_POLICY)
    old = await world.chat(SOURCE, 2)
    world.clock.advance(hours=1)
    engines = [world.engine() for _ in range(8)]
    routed = await asyncio.gather(*(engine.route(SOURCE) for engine in engines))
    [new_id] = {r.session.id for r in routed}
    assert new_id != old.id
    assert [r.ended.id for r in routed if r.ended is not None] == [old.id]
    sessions = await world.store.list_sessions(key=old.key)
    assert {s.id for s in sessions} == {old.id, new_id}


# -- record ------------------------------------------------------------------------------


async def _second_connection(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """Another store on the same database (the memory store has no other)."""
    if kind == "sqlite":
        return await open_store(f"sqlite:///{tmp_path / 'sessiongate.db'}")
    dsn: str = request.getfixturevalue("pg_dsn")
    return await open_store(dsn)


async def test_record_is_durable_when_it_returns(
    world: World, store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = world.engine()
    session = (await engine.route(SOURCE)).session
    entry = await engine.record(
        session.id, Role.USER, "hello", platform_message_id="m-1", meta={"lang": "en"}
    )
    assert entry.seq == 1
    reader = world.store
    if store_kind != "memory":
        reader = await _second_connection(store_kind, tmp_path, request)
    try:
        [stored] = await reader.entries(session.id)
        assert (stored.seq, stored.role, stored.text) == (1, Role.USER, "hello")
        assert (stored.platform_message_id, dict(stored.meta)) == ("m-1", {"lang": "en"})
        assert (await _session(reader, session.id)).turn_count == 1
    finally:
        if reader is not world.store:
            await reader.close()


@pytest.mark.parametrize(
    "text",
    ["é" * 33, "nul \x00 inside", "lone \ud800 surrogate"],
    ids=["oversized", "nul", "surrogate"],
)
async def test_record_refuses_text_it_cannot_store_and_stores_nothing(
    world: World, text: str
) -> None:
    settings = replace(world.settings, max_message_bytes=64)
    engine = Engine(
        world.store, settings, clock=world.clock, ids=IdGenerator(world.clock, world.rand)
    )
    session = (await engine.route(SOURCE)).session
    at_limit = await engine.record(session.id, Role.USER, "a" * 64)
    with pytest.raises(InvalidInput):
        await engine.record(session.id, Role.ASSISTANT, text)
    assert [e.seq for e in await world.store.entries(session.id)] == [at_limit.seq]
    assert (await _session(world.store, session.id)).turn_count == 1


async def test_record_after_the_end_raises_session_closed(world: World) -> None:
    engine = world.engine()
    session = (await engine.route(SOURCE)).session
    assert await engine.end_session(session.id, EndReason.ADMIN)
    with pytest.raises(SessionClosed):
        await engine.record(session.id, Role.USER, "too late")
    assert await world.store.entries(session.id) == []
    # The funnel is a compare-and-set: a second end changes nothing.
    assert not await engine.end_session(session.id, EndReason.RESET)
    assert (await _session(world.store, session.id)).end_reason is EndReason.ADMIN
    with pytest.raises(NotFound):
        await engine.end_session("7zzzzzzzzzzzzzzzzzzzzzzzzz", EndReason.ADMIN)


async def test_new_session_takes_only_its_own_reasons(world: World) -> None:
    with pytest.raises(InvalidInput):
        await world.engine().new_session(SOURCE, reason=EndReason.IDLE)
    assert await world.store.list_sessions() == []


# -- resume, branch, compress ---------------------------------------------------------------


@pytest.mark.parametrize(
    "intruder",
    [OTHER, replace(SOURCE, user_id="u-99"), replace(SOURCE, platform="discord")],
    ids=["other-chat", "other-user", "other-platform"],
)
async def test_resume_refuses_a_session_of_another_user_or_chat(
    world: World, intruder: Source
) -> None:
    mine = await world.chat(SOURCE, 2)
    await world.engine().new_session(SOURCE)
    theirs = await world.chat(intruder, 1)
    with pytest.raises(InvalidInput):
        await world.engine().resume(intruder, mine.id)
    assert (await _session(world.store, mine.id)).state is not SessionState.ACTIVE
    assert (await _session(world.store, theirs.id)).state is SessionState.ACTIVE


async def test_resume_reopens_in_a_new_epoch_that_commits_only_later_turns(world: World) -> None:
    world.use(IDLE_POLICY)
    earlier = await world.chat(SOURCE, 2)
    current = (await world.engine().new_session(SOURCE)).session
    await world.drain()
    world.clock.advance(minutes=10)

    engine = world.engine()
    await engine.record(current.id, Role.USER, "in the second conversation")
    routed = await engine.resume(SOURCE, earlier.id)
    reopened = routed.session
    assert (reopened.id, reopened.epoch, reopened.state) == (earlier.id, 1, SessionState.ACTIVE)
    assert routed.ended is not None
    assert routed.ended.id == current.id
    assert (await _session(world.store, current.id)).end_reason is EndReason.SWITCH
    routed_now = await world.store.routed_session(earlier.key)
    assert routed_now is not None
    assert routed_now.id == earlier.id
    # The reopened session's idle timer counts from the resume, not from its old activity.
    [timer] = [t for t in await world.store.timers(earlier.id) if t.kind == RESET_TIMER]
    assert timer.due_at == world.clock.now() + timedelta(minutes=30)

    await engine.record(earlier.id, Role.USER, "back again")
    await engine.record(earlier.id, Role.ASSISTANT, "welcome back")
    assert await engine.end_session(earlier.id, EndReason.ADMIN)
    await world.drain()
    user = earlier.user_id
    for provider in world.providers.values():
        assert provider.seqs(earlier.id) == [1, 2, 3, 4]
        assert [c for c in provider.commits if c.session_id == earlier.id] == [
            CommitRecord(earlier.id, 1, 1, 2, user),
            CommitRecord(earlier.id, 2, 3, 4, user),
        ]
    starts = world.events_of(earlier.id, "session:start")
    assert [s["reason"] for s in starts] == ["new", "resume"]
    assert len({s["event_id"] for s in starts}) == 2
    assert len(world.events_of(earlier.id, "session:end")) == 2


async def test_branch_copies_the_ledger_into_a_child(world: World) -> None:
    parent = await world.chat(SOURCE, 3)
    engine = world.engine()
    routed = await engine.branch(SOURCE, title="what if")
    child = routed.session
    assert (child.parent_id, child.lineage, child.title) == (parent.id, Lineage.BRANCH, "what if")
    assert child.turn_count == 3
    copied = [(e.seq, e.role, e.text) for e in await world.store.entries(child.id)]
    assert copied == [(e.seq, e.role, e.text) for e in await world.store.entries(parent.id)]
    assert (await _session(world.store, parent.id)).end_reason is EndReason.BRANCH
    routed_now = await world.store.routed_session(parent.key)
    assert routed_now is not None
    assert routed_now.id == child.id
    assert (await engine.record(child.id, Role.USER, "diverging")).seq == 4
    assert len(await world.store.entries(parent.id)) == 3


async def test_compress_starts_the_child_with_the_summary(world: World) -> None:
    parent = await world.chat(SOURCE, 4)
    engine = world.engine()
    with pytest.raises(InvalidInput):
        await engine.compress(SOURCE, "a summary with a \x00")
    assert (await _session(world.store, parent.id)).state is SessionState.ACTIVE

    routed = await engine.compress(SOURCE, "the story so far")
    child = routed.session
    assert (child.parent_id, child.lineage) == (parent.id, Lineage.COMPRESSION)
    [summary] = await world.store.entries(child.id)
    assert (summary.seq, summary.role, summary.text) == (1, Role.SYSTEM, "the story so far")
    assert summary.meta == {"summary": True}
    ended = await _session(world.store, parent.id)
    assert (ended.end_reason, ended.turn_count) == (EndReason.COMPRESSION, 4)
    [compress] = [
        e for e in await _events(world.store, parent.id) if e["type"] == "session:compress"
    ]
    assert (compress["old_session_id"], compress["session_id"]) == (parent.id, child.id)


class TurnRace:
    """Forwards to a store; a turn lands in the session being left just before the switch."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def reopen_session(
        self, session_id: str, *, at: datetime, end: EndRequest | None = None, **rest: Any
    ) -> Session:
        if end is not None and not self.raced:
            self.raced = True
            await self._inner.append_entries(end.session_id, [new_entry("raced in")], at=at)
        return await self._inner.reopen_session(session_id, at=at, end=end, **rest)


async def test_resume_retries_when_a_turn_lands_in_the_session_it_leaves(world: World) -> None:
    earlier = await world.chat(SOURCE, 2)
    current = (await world.engine().new_session(SOURCE)).session
    race = TurnRace(world.store)
    engine = Engine(
        cast(Store, race),
        world.settings,
        clock=world.clock,
        ids=IdGenerator(world.clock, world.rand),
    )
    routed = await engine.resume(SOURCE, earlier.id)
    assert race.raced
    assert routed.session.id == earlier.id
    left = await _session(world.store, current.id)
    assert (left.end_reason, left.turn_count) == (EndReason.SWITCH, 1)
    await world.drain()
    # The switch's end covers the turn that raced it.
    for provider in world.providers.values():
        assert provider.seqs(current.id) == [1]
        assert provider.committed_upto(current.id) == 1


async def test_a_forgotten_session_cannot_be_resumed(world: World) -> None:
    forgotten = await world.chat(SOURCE, 2)
    current = (await world.engine().new_session(SOURCE)).session
    assert await world.engine().forget(forgotten.id)
    with pytest.raises(Conflict, match="forgotten"):
        await world.engine().resume(SOURCE, forgotten.id)
    routed_now = await world.store.routed_session(current.key)
    assert routed_now is not None
    assert routed_now.id == current.id
