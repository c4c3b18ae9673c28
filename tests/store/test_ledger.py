"""Store contract: the append-only ledger, and text stored verbatim or refused whole."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from sessiongate.errors import InvalidInput, NotFound, SessionClosed
from sessiongate.models import EndReason, EndRequest, Entry, NewEntry, Role, estimate_tokens
from sessiongate.store import Store
from sessiongate.testing import FakeClock, new_entry, new_session


@pytest.fixture
async def active(store: Store, clock: FakeClock) -> str:
    """An active session's id."""
    await store.start_session(new_session("s-1", at=clock.now()))
    return "s-1"


async def test_append_numbers_entries_densely_and_updates_counters(
    store: Store, clock: FakeClock, active: str
) -> None:
    first_at = clock.advance(1)
    first = await store.append_entries(
        active,
        [new_entry("hello there"), new_entry("hi!", role=Role.ASSISTANT, token_estimate=40)],
        at=first_at,
    )
    second_at = clock.advance(2)
    [third] = await store.append_entries(
        active,
        [new_entry("tool out", role=Role.TOOL, platform_message_id="m-3", meta={"k": "v"})],
        at=second_at,
    )
    assert first == [
        Entry(active, 1, Role.USER, "hello there", first_at, estimate_tokens("hello there")),
        Entry(active, 2, Role.ASSISTANT, "hi!", first_at, 40),
    ]
    assert third == Entry(
        active,
        3,
        Role.TOOL,
        "tool out",
        second_at,
        estimate_tokens("tool out"),
        platform_message_id="m-3",
        meta={"k": "v"},
    )
    session = await store.get_session(active)
    assert session is not None
    assert session.turn_count == 3
    assert session.token_estimate == estimate_tokens("hello there") + 40 + estimate_tokens(
        "tool out"
    )
    assert session.last_activity_at == second_at
    assert await store.entries(active) == [*first, third]


async def test_entries_selects_a_seq_range(store: Store, clock: FakeClock, active: str) -> None:
    stored = await store.append_entries(
        active, [new_entry(f"m{n}") for n in range(1, 8)], at=clock.now()
    )
    assert await store.entries(active) == stored
    assert await store.entries(active, after_seq=3) == stored[3:]
    assert await store.entries(active, upto_seq=2) == stored[:2]
    assert await store.entries(active, after_seq=2, upto_seq=5) == stored[2:5]
    assert await store.entries(active, after_seq=2, upto_seq=5, limit=2) == stored[2:4]
    assert await store.entries(active, limit=1) == stored[:1]
    assert await store.entries(active, limit=0) == []
    assert await store.entries(active, after_seq=7) == []
    assert await store.entries(active, after_seq=5, upto_seq=5) == []
    assert await store.entries(active, upto_seq=100) == stored
    assert await store.entries("ghost") == []


async def test_entries_are_kept_per_session(store: Store, clock: FakeClock, active: str) -> None:
    await store.start_session(new_session("s-2", at=clock.now()))
    await store.append_entries(active, [new_entry("mine")], at=clock.now())
    [theirs] = await store.append_entries("s-2", [new_entry("theirs")], at=clock.now())
    assert theirs.seq == 1
    assert [e.text for e in await store.entries(active)] == ["mine"]


async def test_append_after_end_is_refused(store: Store, clock: FakeClock, active: str) -> None:
    await store.append_entries(active, [new_entry("before")], at=clock.now())
    assert await store.end_session(EndRequest(active, EndReason.NEW, at=clock.now()))
    ended = await store.get_session(active)
    with pytest.raises(SessionClosed):
        await store.append_entries(active, [new_entry("after")], at=clock.now())
    with pytest.raises(SessionClosed):
        await store.append_entries(active, [], at=clock.now())
    assert [e.text for e in await store.entries(active)] == ["before"]
    assert await store.get_session(active) == ended


async def test_append_to_unknown_session_is_not_found(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        await store.append_entries("ghost", [new_entry("x")], at=clock.now())
    with pytest.raises(NotFound):
        await store.append_entries("ghost", [], at=clock.now())
    assert await store.entries("ghost") == []


async def test_append_nothing_writes_nothing(store: Store, clock: FakeClock, active: str) -> None:
    before = await store.get_session(active)
    assert await store.append_entries(active, [], at=clock.now() + timedelta(hours=1)) == []
    assert await store.get_session(active) == before


_BAD_ENTRIES: list[NewEntry] = [
    new_entry("nul \x00 byte"),
    new_entry("lone \ud800 surrogate"),
    new_entry("low \udc00 surrogate"),
    new_entry("ok", parts=[{"type": "tool", "out": "nul\x00"}]),
    new_entry("ok", parts=[{"type": "tool", "args": ["\udfff"]}]),
    new_entry("ok", parts=[{"key\x00": "v"}]),
    new_entry("ok", meta={"note": "a\x00b"}),
    new_entry("ok", meta={"nested": {"deep": ["\ud83d"]}}),
    new_entry("ok", platform_message_id="pm\x00"),
    new_entry("ok", token_estimate=-1),
    new_entry("ok", meta={"ratio": float("nan")}),
    new_entry("ok", meta={"not json": {1, 2}}),
]


@pytest.mark.parametrize("bad", _BAD_ENTRIES)
async def test_unstorable_entries_are_refused_and_nothing_is_written(
    store: Store, clock: FakeClock, active: str, bad: NewEntry
) -> None:
    await store.append_entries(active, [new_entry("kept")], at=clock.now())
    before = await store.get_session(active)
    with pytest.raises(InvalidInput):
        await store.append_entries(
            active, [new_entry("fine first"), bad, new_entry("fine last")], at=clock.now()
        )
    assert [e.text for e in await store.entries(active)] == ["kept"]
    assert await store.get_session(active) == before
    [next_entry] = await store.append_entries(active, [new_entry("next")], at=clock.now())
    assert next_entry.seq == 2


_VERBATIM = [
    "'; DROP TABLE ledger; --",
    'Robert"); DELETE FROM sessions WHERE ("1"="1',
    "100% of _all_ \\ backslashes \\\\ and $1 ? :name %s {0}",
    "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈 and flags 🇵🇹",
    "RTL עברית العربية and combining é (e\u0301) and ZWJ a\u200db",
    "line\r\nbreaks\tand\x0bcontrols\x1b[31m",
    "supplementary \U0001d518\U0001d52b and CJK 漢字 and \ufeff BOM",
    "",
    " leading and trailing spaces ",
    "x" * 200_000,
]


@pytest.mark.parametrize("text", _VERBATIM, ids=range(len(_VERBATIM)))
async def test_text_is_stored_verbatim(
    store: Store, clock: FakeClock, active: str, text: str
) -> None:
    parts = [{"type": "tool_call", "name": text[:50], "args": {text[:50]: [text[:50], 1, None]}}]
    [stored] = await store.append_entries(
        active,
        [new_entry(text, parts=parts, platform_message_id=text[:50], meta={"q": text[:50]})],
        at=clock.now(),
    )
    [read] = await store.entries(active)
    for entry in (stored, read):
        assert entry.text == text
        assert list(entry.parts) == parts
        assert entry.platform_message_id == text[:50]
        assert entry.meta == {"q": text[:50]}


async def test_json_parts_and_meta_round_trip_as_json(
    store: Store, clock: FakeClock, active: str
) -> None:
    parts: list[dict[str, Any]] = [
        {"type": "tool_call", "id": "call_1", "args": {"n": 3, "x": 1.5, "ok": True, "z": None}},
        {"type": "tool_result", "id": "call_1", "content": [{"type": "text", "text": "done"}]},
    ]
    entry = NewEntry(
        role=Role.ASSISTANT,
        text="",
        parts=tuple(parts),
        meta={"tuple": (1, 2), "big": 2**53, "neg": -7, "unicode": "ß✓"},
    )
    [stored] = await store.append_entries(active, [entry], at=clock.now())
    [read] = await store.entries(active)
    for got in (stored, read):
        assert got.parts == tuple(parts)
        assert dict(got.meta) == {"tuple": [1, 2], "big": 2**53, "neg": -7, "unicode": "ß✓"}


async def test_returned_entries_do_not_share_state_with_the_store(
    store: Store, clock: FakeClock, active: str
) -> None:
    [stored] = await store.append_entries(
        active, [new_entry("x", parts=[{"a": [1]}], meta={"m": {"n": 1}})], at=clock.now()
    )
    stored.parts[0]["a"].append(2)
    stored.meta["m"]["n"] = 99
    [read] = await store.entries(active)
    read.parts[0]["a"].append(3)
    [again] = await store.entries(active)
    assert again.parts == ({"a": [1]},)
    assert again.meta == {"m": {"n": 1}}


async def test_concurrent_appends_get_dense_unique_seqs(
    store: Store, clock: FakeClock, active: str
) -> None:
    batches = await asyncio.gather(
        *(
            store.append_entries(
                active, [new_entry(f"w{n}-a"), new_entry(f"w{n}-b")], at=clock.now()
            )
            for n in range(10)
        )
    )
    for batch in batches:
        assert batch[1].seq == batch[0].seq + 1
    stored = await store.entries(active)
    assert [e.seq for e in stored] == list(range(1, 21))
    assert sorted(e.text for e in stored) == sorted(e.text for b in batches for e in b)
    session = await store.get_session(active)
    assert session is not None
    assert session.turn_count == 20
