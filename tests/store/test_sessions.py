"""Store contract: starting sessions, routing, reading sessions (every store kind)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sessiongate.errors import Conflict, InvalidInput, NotFound
from sessiongate.models import (
    ChatType,
    EndReason,
    EndRequest,
    JobState,
    Lineage,
    Session,
    SessionState,
    Timer,
)
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_entry, new_job, new_session


async def _start(store: Store, clock: FakeClock, session_id: str, **fields: object) -> Session:
    return await store.start_session(new_session(session_id, at=clock.now(), **fields))  # type: ignore[arg-type]


async def _nothing_for(store: Store, session_id: str) -> None:
    """Nothing at all was written about `session_id`."""
    assert await store.get_session(session_id) is None
    assert await store.list_jobs(session_id=session_id) == []
    assert await store.timers(session_id) == []
    assert await store.entries(session_id) == []


# -- start_session -----------------------------------------------------------------


async def test_start_session_stores_every_field_and_routes_the_key(
    store: Store, clock: FakeClock
) -> None:
    session = replace(
        new_session(
            "s-1",
            at=clock.now(),
            key="agent:main:telegram:group:g1:u1",
            chat_type=ChatType.GROUP,
            chat_id="g1",
            thread_id="t-9",
            title="Plans",
            parent_id="s-0",
            lineage=Lineage.BRANCH,
        ),
        last_activity_at=clock.now() + timedelta(seconds=3),
        epoch=2,
    )
    stored = await store.start_session(session)
    assert stored == session
    assert await store.get_session("s-1") == session
    assert await store.routed_session("agent:main:telegram:group:g1:u1") == session


async def test_start_session_forces_active_and_zero_counters(
    store: Store, clock: FakeClock
) -> None:
    given = replace(
        new_session("s-1", at=clock.now()),
        state=SessionState.FINALIZED,
        end_reason=EndReason.IDLE,
        end_detail="x",
        ended_at=clock.now(),
        turn_count=7,
        token_estimate=99,
    )
    stored = await store.start_session(given)
    assert stored.state is SessionState.ACTIVE
    assert (stored.end_reason, stored.end_detail, stored.ended_at) == (None, None, None)
    assert (stored.turn_count, stored.token_estimate) == (0, 0)
    assert await store.get_session("s-1") == stored


async def test_start_session_sets_timers_and_enqueues_jobs_at_creation(
    store: Store, clock: FakeClock
) -> None:
    created = clock.now()
    due = created + timedelta(hours=1)
    await store.start_session(
        new_session("s-1", at=created),
        timers=[Timer("s-1", "reset", due)],
        jobs=[new_job("start:s-1", session_id="s-1")],
    )
    assert await store.timers("s-1") == [Timer("s-1", "reset", due)]
    [job] = await store.list_jobs(session_id="s-1")
    assert (job.idempotency_key, job.state) == ("start:s-1", JobState.PENDING)
    assert job.created_at == job.run_after == created


async def test_start_session_skips_jobs_whose_idempotency_key_exists(
    store: Store, clock: FakeClock
) -> None:
    [first] = await store.enqueue([new_job("shared", payload={"v": 1})], at=clock.now())
    await store.start_session(
        new_session("s-1", at=clock.now()),
        jobs=[new_job("shared", payload={"v": 2}), new_job("own")],
    )
    jobs = await store.list_jobs()
    assert (jobs[0].id, jobs[0].idempotency_key) == (first, "shared")
    assert [j.idempotency_key for j in jobs] == ["shared", "own"]
    assert jobs[0].payload == {"v": 1}


async def test_start_session_upserts_timers(store: Store, clock: FakeClock) -> None:
    await store.set_timer(Timer("s-1", "reset", clock.now()))
    later = clock.now() + timedelta(minutes=5)
    await store.start_session(
        new_session("s-1", at=clock.now()), timers=[Timer("s-1", "reset", later)]
    )
    assert await store.timers("s-1") == [Timer("s-1", "reset", later)]


async def test_duplicate_session_id_is_a_conflict_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    first = await _start(store, clock, "s-1", key="k-1")
    again = new_session("s-1", at=clock.now(), key="k-2")
    with pytest.raises(Conflict):
        await store.start_session(
            again,
            timers=[Timer("s-1", "other", clock.now())],
            jobs=[new_job("dup-job", session_id="s-1")],
        )
    assert await store.get_session("s-1") == first
    assert await store.routed_session("k-2") is None
    assert await store.timers("s-1") == []
    assert await store.list_jobs() == []


async def test_start_session_on_a_routed_key_without_end_conflicts(
    store: Store, clock: FakeClock
) -> None:
    first = await _start(store, clock, "s-1", key="k")
    with pytest.raises(Conflict):
        await store.start_session(
            new_session("s-2", at=clock.now(), key="k"),
            timers=[Timer("s-2", "reset", clock.now())],
            jobs=[new_job("j-2", session_id="s-2")],
        )
    await _nothing_for(store, "s-2")
    assert await store.routed_session("k") == first


async def test_start_session_with_end_rotates_the_key_in_one_step(
    store: Store, clock: FakeClock
) -> None:
    await store.start_session(
        new_session("s-1", at=clock.now(), key="k"),
        timers=[Timer("s-1", "reset", clock.now() + timedelta(hours=1))],
    )
    clock.advance(60)
    end = EndRequest(
        "s-1",
        EndReason.NEW,
        at=clock.now(),
        detail="by /new",
        jobs=[new_job("end:s-1", session_id="s-1", gates_finalize=True)],
    )
    clock.advance(1)
    fresh = await store.start_session(
        new_session("s-2", at=clock.now(), key="k"),
        end=end,
        jobs=[new_job("start:s-2", session_id="s-2")],
    )
    old = await store.get_session("s-1")
    assert old is not None
    assert old.state is SessionState.ENDING
    assert (old.end_reason, old.end_detail, old.ended_at) == (EndReason.NEW, "by /new", end.at)
    assert await store.timers("s-1") == []
    assert await store.routed_session("k") == fresh
    [end_job] = await store.list_jobs(session_id="s-1")
    assert end_job.created_at == end_job.run_after == end.at
    [start_job] = await store.list_jobs(session_id="s-2")
    assert start_job.created_at == fresh.created_at
    assert end_job.id < start_job.id


async def test_start_session_with_failed_end_cas_conflicts_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1", key="k")
    assert await store.end_session(EndRequest("s-1", EndReason.IDLE, at=clock.now()))
    ended = await store.get_session("s-1")
    late_end = EndRequest(
        "s-1", EndReason.NEW, at=clock.now(), jobs=[new_job("late-end", session_id="s-1")]
    )
    with pytest.raises(Conflict):
        await store.start_session(
            new_session("s-2", at=clock.now(), key="k"),
            end=late_end,
            timers=[Timer("s-2", "reset", clock.now())],
            jobs=[new_job("start:s-2", session_id="s-2")],
        )
    await _nothing_for(store, "s-2")
    assert await store.get_session("s-1") == ended
    assert await store.list_jobs() == []
    assert await store.routed_session("k") is None


async def test_start_session_conflicts_when_key_still_routes_elsewhere_after_end(
    store: Store, clock: FakeClock
) -> None:
    other = await _start(store, clock, "s-1", key="k-1")
    holder = await _start(store, clock, "s-2", key="k-2")
    end = EndRequest("s-1", EndReason.NEW, at=clock.now(), jobs=[new_job("e1")])
    with pytest.raises(Conflict):
        await store.start_session(new_session("s-3", at=clock.now(), key="k-2"), end=end)
    await _nothing_for(store, "s-3")
    assert await store.get_session("s-1") == other
    assert await store.routed_session("k-1") == other
    assert await store.routed_session("k-2") == holder
    assert await store.list_jobs() == []


async def test_start_session_with_end_of_unknown_session_is_not_found(
    store: Store, clock: FakeClock
) -> None:
    with pytest.raises(NotFound):
        await store.start_session(
            new_session("s-2", at=clock.now()),
            end=EndRequest("nobody", EndReason.NEW, at=clock.now()),
        )
    await _nothing_for(store, "s-2")


async def test_branch_copies_the_ledger_with_seqs_and_counters(
    store: Store, clock: FakeClock
) -> None:
    await _start(store, clock, "s-1", key="k")
    parent_entries = await store.append_entries(
        "s-1",
        [
            new_entry("one", parts=[{"type": "text", "n": 1}], meta={"m": 1}),
            new_entry("two two", platform_message_id="pm-2", token_estimate=11),
            new_entry("three"),
        ],
        at=clock.now(),
    )
    clock.advance(5)
    child = await store.start_session(
        new_session("s-2", at=clock.now(), key="k", parent_id="s-1", lineage=Lineage.BRANCH),
        end=EndRequest("s-1", EndReason.BRANCH, at=clock.now()),
        copy_entries_from="s-1",
    )
    assert child.turn_count == 3
    assert child.token_estimate == sum(e.token_estimate for e in parent_entries)
    assert await store.get_session("s-2") == child
    copied = await store.entries("s-2")
    assert copied == [replace(e, session_id="s-2") for e in parent_entries]
    assert await store.entries("s-1") == parent_entries
    [fourth] = await store.append_entries("s-2", [new_entry("four")], at=clock.now())
    assert fourth.seq == 4


@pytest.mark.parametrize(("upto", "expected"), [(2, 2), (0, 0), (9, 3)])
async def test_branch_copies_up_to_a_seq(
    store: Store, clock: FakeClock, upto: int, expected: int
) -> None:
    await _start(store, clock, "s-1")
    source = await store.append_entries(
        "s-1", [new_entry("a"), new_entry("bb"), new_entry("ccc")], at=clock.now()
    )
    child = await store.start_session(
        new_session("s-2", at=clock.now()), copy_entries_from="s-1", copy_upto_seq=upto
    )
    assert child.turn_count == expected
    assert child.token_estimate == sum(e.token_estimate for e in source[:expected])
    assert [e.seq for e in await store.entries("s-2")] == list(range(1, expected + 1))


async def test_copy_from_unknown_session_is_not_found_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    with pytest.raises(NotFound):
        await store.start_session(new_session("s-2", at=clock.now()), copy_entries_from="ghost")
    await _nothing_for(store, "s-2")


@pytest.mark.parametrize(
    "bad",
    [
        {"session_id": "a/b"},
        {"session_id": "a\\b"},
        {"session_id": ".."},
        {"session_id": ""},
        {"session_id": "a\nb"},
        {"key": "agent:main:x/y"},
        {"key": "agent:..:x"},
        {"title": "nul\x00title"},
        {"title": "lone \ud800 surrogate"},
        {"user_name": "nul\x00"},
    ],
)
async def test_start_session_refuses_bad_ids_keys_and_text(
    store: Store, clock: FakeClock, bad: dict[str, str]
) -> None:
    fields = dict(bad)  # the parameter is shared by every store kind: never mutate it
    session_id = fields.pop("session_id", "s-1")
    session = new_session(session_id, at=clock.now(), **fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.start_session(session, jobs=[new_job("j")])
    assert await store.list_sessions() == []
    assert await store.list_jobs() == []


# -- reading sessions --------------------------------------------------------------


async def test_unknown_session_and_key_read_as_none(store: Store) -> None:
    assert await store.get_session("ghost") is None
    assert await store.routed_session("agent:main:nowhere") is None


async def test_list_sessions_filters_and_orders_newest_first(
    store: Store, clock: FakeClock
) -> None:
    a = await _start(store, clock, "a", key="k-a", user_id="u1", chat_id="c1")
    clock.advance(1)
    b = await _start(store, clock, "b", key="k-b", user_id="u1", chat_id="c2", platform="web")
    clock.advance(1)
    c = await _start(store, clock, "c", key="k-c", user_id="u2", chat_id="c1")
    # Same creation time as c: the id breaks the tie, descending.
    d = await _start(store, clock, "d", key="k-d", user_id="u2", chat_id="c1")
    assert await store.end_session(EndRequest("c", EndReason.IDLE, at=clock.now()))
    c = await store.get_session("c") or c

    assert await store.list_sessions() == [d, c, b, a]
    assert await store.list_sessions(limit=2) == [d, c]
    assert await store.list_sessions(user_id="u1") == [b, a]
    assert await store.list_sessions(chat_id="c1") == [d, c, a]
    assert await store.list_sessions(platform="web") == [b]
    assert await store.list_sessions(key="k-c") == [c]
    assert await store.list_sessions(state=SessionState.FINALIZED) == [c]
    assert await store.list_sessions(state=SessionState.ACTIVE, chat_id="c1") == [d, a]
    assert await store.list_sessions(user_id="u1", platform="telegram") == [a]
    assert await store.list_sessions(user_id="nobody") == []


async def test_list_sessions_of_a_key_shows_its_history(store: Store, clock: FakeClock) -> None:
    await _start(store, clock, "s-1", key="k")
    clock.advance(1)
    await store.start_session(
        new_session("s-2", at=clock.now(), key="k"),
        end=EndRequest("s-1", EndReason.NEW, at=clock.now()),
    )
    assert [s.id for s in await store.list_sessions(key="k")] == ["s-2", "s-1"]


async def test_set_title(store: Store, clock: FakeClock) -> None:
    started = await _start(store, clock, "s-1")
    titled = await store.set_title("s-1", "Trip to Lisbon ✈️")
    assert titled == replace(started, title="Trip to Lisbon ✈️")
    assert await store.get_session("s-1") == titled
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=clock.now()))
    assert (await store.set_title("s-1", None)).title is None
    assert (await store.get_session("s-1") or started).title is None


async def test_set_title_refuses_bad_text_and_unknown_ids(store: Store, clock: FakeClock) -> None:
    started = await _start(store, clock, "s-1", title="kept")
    with pytest.raises(InvalidInput):
        await store.set_title("s-1", "bad\x00title")
    with pytest.raises(InvalidInput):
        await store.set_title("s-1", "bad \udfff title")
    assert await store.get_session("s-1") == started
    with pytest.raises(NotFound):
        await store.set_title("ghost", "x")


async def test_sql_metacharacters_and_unicode_in_session_fields_are_kept_verbatim(
    store: Store, clock: FakeClock
) -> None:
    key = "agent:main:tg:dm:'; DROP TABLE routing; --:%_*"
    session = new_session(
        "id-'\"%_;--",
        at=clock.now(),
        key=key,
        chat_id="chat \"quoted\" 'single' ;",
        user_id="u%",
        user_name="Zoë 😀 O'Brien \\ %s",
        title="'); DELETE FROM sessions; --",
    )
    await _start(store, clock, "plain", user_id="u1", key="k-plain")
    stored = await store.start_session(session)
    assert stored == session
    assert await store.routed_session(key) == session
    assert await store.get_session("id-'\"%_;--") == session
    # Filters match exactly: `%` and `_` are not wildcards.
    assert await store.list_sessions(user_id="u%") == [session]
    assert await store.list_sessions(user_id="u_") == []
    assert await store.list_sessions(key="agent:main:tg:dm:%") == []
    assert await store.list_sessions(chat_id="chat \"quoted\" 'single' ;") == [session]
