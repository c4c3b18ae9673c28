"""The built-in local memory provider on every store: delivery, commits, recall, forgetting."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessiongate.errors import InvalidInput, ProviderFailure, ProviderUnavailable
from sessiongate.memory.extractor import (
    EXTRACTION_PROMPT,
    ExtractorSettings,
    OpenAIFactExtractor,
    parse_facts,
)
from sessiongate.memory.local import MAX_TURN_CHARS, LocalProvider
from sessiongate.memory.provider import ProviderSession, RecallScope
from sessiongate.memory.sync import MemorySync
from sessiongate.models import Role, Session
from sessiongate.store.archive import (
    SNIPPET_CHARS,
    ArchiveStore,
    EpochArchive,
    MemoryKind,
    archive_of,
)
from sessiongate.store.base import Store
from sessiongate.store.migrations import latest_version
from sessiongate.store.sqlite.archive import owner_token
from sessiongate.testing import FakeClock, new_entry, new_session

ADA, BOB = "u-42", "u-43"

FILLER = (
    "the weather in Lisbon was sunny all week",
    "my cat knocked a glass off the table",
    "we talked about the quarterly budget report",
    "the train to Porto leaves at nine",
    "I repaired the bicycle chain yesterday",
    "our neighbours are renovating their kitchen",
)


class CountingExtractor:
    """An in-process `FactExtractor` that answers fixed facts and counts its calls."""

    def __init__(self, facts: Sequence[str]) -> None:
        self.facts = list(facts)
        self.transcripts: list[str] = []

    async def extract(self, transcript: str) -> list[str]:
        self.transcripts.append(transcript)
        return list(self.facts)


class Memory:
    """A store, its local provider and the gateway's memory sync, driven like the worker."""

    def __init__(self, store: Store, clock: FakeClock, provider: LocalProvider) -> None:
        self.store = store
        self.clock = clock
        self.provider = provider
        self.sync = MemorySync(store, {provider.name: provider}, clock=clock)
        self._sessions = 0

    @property
    def archive(self) -> ArchiveStore:
        return archive_of(self.store)

    async def conversation(
        self, user_id: str | None, *turns: str, platform: str = "telegram"
    ) -> Session:
        """A session of `user_id` whose ledger holds `turns` (user, assistant, user, ...)."""
        self._sessions += 1
        session = await self.store.start_session(
            new_session(
                f"s-{self._sessions}",
                at=self.clock.now(),
                user_id=user_id,
                platform=platform,
                chat_id=f"chat-{user_id}",
            )
        )
        roles = (Role.USER, Role.ASSISTANT)
        for index, text in enumerate(turns):
            self.clock.advance(1)
            await self.store.append_entries(
                session.id, [new_entry(text, role=roles[index % 2])], at=self.clock.now()
            )
        found = await self.store.get_session(session.id)
        assert found is not None
        return found

    async def commit(self, session: Session) -> bool:
        """What a `memory.commit` job does: deliver up to the last seq, then commit."""
        reached = await self.sync.deliver(self.provider, session, upto_seq=session.turn_count)
        assert reached == session.turn_count
        return await self.sync.commit(self.provider, session, upto_seq=session.turn_count)

    async def remember(self, user_id: str | None, *turns: str, **kwargs: Any) -> Session:
        session = await self.conversation(user_id, *turns, **kwargs)
        assert await self.commit(session)
        return session

    async def recall(self, user_id: str, query: str, **scope: Any) -> list[Any]:
        return list(await self.provider.recall(RecallScope(user_id, **scope), query, limit=10))


@pytest.fixture
def memory(store: Store, clock: FakeClock) -> Memory:
    return Memory(store, clock, LocalProvider(archive_of(store), max_batch=2))


# -- delivery, commits and recall --------------------------------------------------------


async def test_a_committed_conversation_is_recalled_with_its_session_and_date(
    memory: Memory,
) -> None:
    session = await memory.conversation(
        ADA, "I am planning a trip to Kyoto in April", "Lovely, cherry blossoms!", "Book a ryokan"
    )
    assert await memory.commit(session)

    cursor = await memory.store.get_cursor("local", session.id)
    assert (cursor.delivered_seq, cursor.committed_seq, cursor.commit_epoch) == (3, 3, 1)
    assert await memory.provider.uncommitted_count(ProviderSession.of(session)) == 0
    [hit] = await memory.recall(ADA, "Where is my trip going?")
    assert hit.provider == "local"
    assert hit.session_id == session.id
    assert "user: I am planning a trip to Kyoto in April" in hit.text
    assert "assistant: Lovely, cherry blossoms!" in hit.text
    last = await memory.store.entries(session.id, after_seq=2)
    assert hit.created_at == last[0].created_at
    assert hit.score > 0


async def test_checkpoints_archive_each_epoch_once(memory: Memory) -> None:
    session = await memory.conversation(ADA, "my sister Maria lives in Madrid", "Nice")
    assert await memory.commit(session)
    await memory.store.append_entries(
        session.id, [new_entry("my brother Paolo lives in Rome")], at=memory.clock.now()
    )
    later = await memory.store.get_session(session.id)
    assert later is not None
    assert await memory.commit(later)
    assert not await memory.commit(later)  # nothing new

    cursor = await memory.store.get_cursor("local", session.id)
    assert (cursor.committed_seq, cursor.commit_epoch) == (3, 2)
    [madrid] = await memory.recall(ADA, "Madrid")
    [rome] = await memory.recall(ADA, "Rome")
    assert "Madrid" in madrid.text
    assert "Rome" not in madrid.text
    assert "Rome" in rome.text
    assert "Madrid" not in rome.text
    assert await memory.archive.has_epoch(session.id, epoch=2, first_seq=3, last_seq=3)


async def test_a_batch_whose_acknowledgement_was_lost_is_held_once(memory: Memory) -> None:
    session = await memory.conversation(ADA, "alpha bravo", "charlie", "delta echo")
    entries = await memory.store.entries(session.id)
    ref = ProviderSession.of(session)
    # The batch landed but the cursor never moved (the answer was lost), twice over.
    await memory.provider.deliver(ref, entries[:2], idempotency_key="lost")
    await memory.provider.deliver(ref, entries[:2], idempotency_key="lost")
    assert await memory.provider.uncommitted_count(ref) == 2

    assert await memory.sync.deliver(memory.provider, session, upto_seq=3) == 3
    assert await memory.provider.uncommitted_count(ref) == 3
    assert await memory.sync.commit(memory.provider, session, upto_seq=3)
    [hit] = await memory.recall(ADA, "alpha")
    assert hit.text.count("alpha bravo") == 1
    assert hit.text.count("delta echo") == 1


async def test_a_commit_whose_acknowledgement_was_lost_is_not_archived_twice(
    store: Store, clock: FakeClock
) -> None:
    extractor = CountingExtractor(["The user keeps bees"])
    memory = Memory(store, clock, LocalProvider(archive_of(store), extractor=extractor))
    session = await memory.conversation(ADA, "I keep bees on my roof", "How many hives?")
    await memory.sync.deliver(memory.provider, session, upto_seq=2)
    ref = ProviderSession.of(session)
    # The provider archived epoch 1, then the process died before the cursor recorded it.
    outcome = await memory.provider.commit(
        ref, epoch=1, first_seq=1, last_seq=2, idempotency_key="k"
    )
    assert outcome.accepted
    assert not outcome.failed_after_accept
    assert (await store.get_cursor("local", session.id)).commit_epoch == 0

    # The retry reconciles (nothing is staged any more), delivers again and commits.
    assert await memory.commit(session)
    again = await memory.provider.commit(ref, epoch=1, first_seq=1, last_seq=2, idempotency_key="k")
    assert again.accepted
    assert "already archived" in (again.detail or "")

    assert len(extractor.transcripts) == 1
    hits = await memory.recall(ADA, "bees")
    assert sorted(hit.text for hit in hits) == [
        "The user keeps bees",
        "user: I keep bees on my roof assistant: How many hives?",
    ]
    assert (await store.get_cursor("local", session.id)).commit_epoch == 1
    assert await memory.provider.uncommitted_count(ref) == 0


async def test_a_longer_attempt_at_an_unrecorded_epoch_replaces_the_shorter_one(
    store: Store, clock: FakeClock
) -> None:
    archive = archive_of(store)
    at = clock.now()

    def attempt(last_seq: int, text: str) -> EpochArchive:
        return EpochArchive(ADA, "telegram", "s-1", 1, 1, last_seq, text, at)

    assert await archive.archive_epoch(attempt(2, "user: I play the oboe"), facts=["oboe"])
    assert not await archive.archive_epoch(attempt(2, "user: I play the oboe"), facts=["oboe"])
    assert await archive.archive_epoch(attempt(4, "user: I play the oboe and the cello"))

    hits = await archive.search(ADA, "oboe cello", limit=10)
    assert [(h.kind, h.text) for h in hits] == [
        (MemoryKind.ARCHIVE, "user: I play the oboe and the cello")
    ]
    assert await archive.has_epoch("s-1", epoch=1, first_seq=1, last_seq=4)
    assert not await archive.has_epoch("s-1", epoch=1, first_seq=1, last_seq=2)


async def test_a_missing_staged_entry_makes_the_gateway_replay_the_epoch(
    memory: Memory,
) -> None:
    session = await memory.conversation(ADA, "first words", "second words", "third words")
    await memory.sync.deliver(memory.provider, session, upto_seq=3)
    # The staged turns vanished (restored from an older backup, say).
    await memory.archive.release_staged(session.id, upto_seq=3)

    with pytest.raises(ProviderFailure, match="only 0 of the 3 entries"):
        await memory.sync.commit(memory.provider, session, upto_seq=3)
    assert (await memory.store.get_cursor("local", session.id)).delivered_seq == 0
    assert await memory.commit(session)  # the retry replays them from the ledger
    [hit] = await memory.recall(ADA, "third")
    assert "user: first words" in hit.text
    assert "user: third words" in hit.text


async def test_deliver_refuses_what_the_gateway_never_sends(memory: Memory) -> None:
    session = await memory.conversation(ADA, "one", "two", "three")
    entries = await memory.store.entries(session.id)
    ref = ProviderSession.of(session)
    with pytest.raises(InvalidInput, match="batch limit of 2"):
        await memory.provider.deliver(ref, entries, idempotency_key="k")
    with pytest.raises(InvalidInput, match="not consecutive"):
        await memory.provider.deliver(ref, [entries[0], entries[2]], idempotency_key="k")
    assert await memory.provider.uncommitted_count(ref) == 0


async def test_an_archive_holds_what_was_said_and_is_recalled_as_a_snippet(
    memory: Memory,
) -> None:
    before = " ".join(f"alpha{i}" for i in range(200))
    after = " ".join(f"omega{i}" for i in range(200))
    session = await memory.conversation(ADA, f"{before} I play the saxophone on Sundays {after}")
    await memory.store.append_entries(
        session.id,
        [
            new_entry("tool output mentions a zeppelin", role=Role.TOOL),
            new_entry("x" * MAX_TURN_CHARS + " walrus"),
        ],
        at=memory.clock.now(),
    )
    ended = await memory.store.get_session(session.id)
    assert ended is not None
    assert await memory.commit(ended)

    [hit] = await memory.recall(ADA, "saxophone")
    assert "I play the saxophone on Sundays" in hit.text
    assert hit.text.startswith("…")
    assert hit.text.endswith("…")
    assert len(hit.text) <= SNIPPET_CHARS + 2
    assert await memory.recall(ADA, "zeppelin") == []  # tool output is not archived
    assert await memory.recall(ADA, "walrus") == []  # past the share of one turn


# -- recall: ranking and isolation ---------------------------------------------------------


async def test_bm25_puts_the_better_match_first(memory: Memory) -> None:
    for text in FILLER:
        await memory.remember(ADA, text)
    one_word = await memory.remember(ADA, "the green door of the old house needs paint")
    all_words = await memory.remember(ADA, "I drink green tea before hiking in the hills")

    hits = await memory.recall(ADA, "green tea hiking")
    assert [hit.session_id for hit in hits] == [all_words.id, one_word.id]
    assert hits[0].score > hits[1].score


async def test_recall_never_returns_another_users_memory(memory: Memory) -> None:
    for text in FILLER:
        await memory.remember("u-filler", text)
    ada = await memory.remember(ADA, "my favourite dish is mushroom risotto")
    bob = await memory.remember(BOB, "my favourite dish is mushroom risotto")
    channel = await memory.remember(None, "my favourite dish is mushroom risotto")
    prefix = await memory.remember("u-4", "my favourite dish is mushroom risotto")

    for user, session in ((ADA, ada), (BOB, bob), ("u-4", prefix)):
        hits = await memory.recall(user, "favourite dish mushroom risotto")
        assert [hit.session_id for hit in hits] == [session.id]
    assert channel.id not in {h.session_id for h in await memory.recall("", "risotto")}
    assert await memory.recall("u-44", "mushroom risotto") == []
    # Naming another user's index token in the query reaches nothing of theirs.
    assert await memory.recall(ADA, f'{owner_token(BOB)} owner: "{owner_token(BOB)}"') == []


async def test_recall_scopes_by_platform_and_skips_the_current_session(memory: Memory) -> None:
    here = await memory.remember(ADA, "I collect vinyl records")
    there = await memory.remember(ADA, "I collect vinyl records", platform="discord")

    everywhere = {hit.session_id for hit in await memory.recall(ADA, "vinyl")}
    assert everywhere == {here.id, there.id}
    on_discord = await memory.recall(ADA, "vinyl", platform="discord")
    assert [hit.session_id for hit in on_discord] == [there.id]
    others = await memory.recall(ADA, "vinyl", exclude_session_id=here.id)
    assert [hit.session_id for hit in others] == [there.id]


QUERIES = (
    '"',
    'tea"',
    '"green tea',
    "*",
    "tea*",
    "NEAR(green tea, 2)",
    "NEAR",
    "green -tea",
    "-",
    "(",
    ")(",
    "(tea",
    "tea OR",
    "OR",
    "AND NOT",
    "NOT tea",
    "^tea",
    "tea + green",
    "{text owner}: tea",
    "text: tea",
    "owner : x OR tea",
    "'; DROP TABLE memory_items; --",
    "tea'); DELETE FROM memory_items; --",
    "%' OR '1'='1",
    "\\",
    "_%",
    "tea & !green | (hiking <-> hills)",
    "teá",
    "\u202etea",
    "",
    "   ",
)


async def test_query_syntax_in_user_text_neither_fails_nor_injects(memory: Memory) -> None:
    for text in FILLER:
        await memory.remember(BOB, text)
    ada = await memory.remember(ADA, "I drink green tea")
    await memory.remember(BOB, "I drink green tea")

    for query in QUERIES:
        found = [hit.session_id for hit in await memory.recall(ADA, query)]
        if "tea" in query:
            assert found == [ada.id], query
        else:
            assert set(found) <= {ada.id}, query
    # Nothing was dropped or deleted: both users still find their own memory.
    assert [h.session_id for h in await memory.recall(ADA, "green tea")] == [ada.id]
    assert len(await memory.recall(BOB, "green tea")) == 1


# -- forgetting ----------------------------------------------------------------------------


async def test_forgetting_a_user_erases_their_memory_and_nobody_elses(memory: Memory) -> None:
    await memory.remember(ADA, "I am allergic to peanuts")
    bob = await memory.remember(BOB, "I am allergic to peanuts")
    pending = await memory.conversation(ADA, "peanuts again", "noted")
    await memory.sync.deliver(memory.provider, pending, upto_seq=2)
    assert await memory.provider.uncommitted_count(ProviderSession.of(pending)) == 2

    await memory.provider.forget(user_id=ADA, session=None)

    assert await memory.recall(ADA, "peanuts allergic") == []
    assert await memory.provider.uncommitted_count(ProviderSession.of(pending)) == 0
    assert [h.session_id for h in await memory.recall(BOB, "peanuts")] == [bob.id]


async def test_forgetting_a_session_erases_only_that_session(memory: Memory) -> None:
    kept = await memory.remember(ADA, "I run marathons")
    gone = await memory.remember(ADA, "I run a bakery")
    await memory.provider.forget(user_id=None, session=ProviderSession.of(gone))

    assert [h.session_id for h in await memory.recall(ADA, "run")] == [kept.id]
    assert await memory.archive.forget(session_id=gone.id) == 0
    with pytest.raises(InvalidInput):
        await memory.archive.forget()


# -- the schema ----------------------------------------------------------------------------


async def test_the_archive_schema_is_the_latest_migration(store: Store, store_kind: str) -> None:
    if store_kind == "memory":
        assert await store.migrate() == await store.schema_version()
        return
    latest = latest_version(store_kind)
    assert latest >= 2
    assert await store.schema_version() == latest
    assert await store.migrate() == latest  # idempotent
    assert await store.schema_version() == latest


# -- fact extraction through an OpenAI-compatible endpoint -----------------------------------


class FakeChatModel:
    """An OpenAI-compatible chat endpoint answering scripted facts; can be made to fail."""

    def __init__(self) -> None:
        self.facts: list[str] = []
        self.failing = False
        self.requests: list[dict[str, Any]] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        if self.failing:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        # Fenced, as models often answer: the extractor must cope.
        content = "```json\n" + json.dumps(self.facts) + "\n```"
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake chat model did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def chat_model() -> Iterator[FakeChatModel]:
    model = FakeChatModel()
    model.start()
    try:
        yield model
    finally:
        model.stop()


async def test_facts_extracted_by_an_openai_compatible_model_are_recalled(
    store: Store, clock: FakeClock, chat_model: FakeChatModel
) -> None:
    settings = ExtractorSettings(base_url=chat_model.base_url, model="tiny", timeout=10)
    async with OpenAIFactExtractor(settings, environ={}) as extractor:
        memory = Memory(store, clock, LocalProvider(archive_of(store), extractor=extractor))
        chat_model.facts = ["The user is vegetarian", "The user's daughter is called Inês"]
        ada = await memory.conversation(ADA, "I stopped eating meat years ago", "Good to know")
        chat_model.failing = True
        with pytest.raises(ProviderUnavailable, match="HTTP 503"):
            await memory.commit(ada)
        assert await memory.recall(ADA, "vegetarian meat") == []  # nothing half-archived

        chat_model.failing = False
        assert await memory.commit(ada)
        clock.advance(days=1)
        later = await memory.recall(ADA, "is the user vegetarian?")

    [request, *_] = chat_model.requests
    assert request["model"] == "tiny"
    assert request["messages"][0] == {"role": "system", "content": EXTRACTION_PROMPT}
    assert "user: I stopped eating meat years ago" in request["messages"][1]["content"]
    assert len(chat_model.requests) == 2
    assert later[0].text == "The user is vegetarian"
    assert later[0].session_id == ada.id
    assert [h.text for h in await memory.recall(ADA, "daughter")] == [
        "The user's daughter is called Inês"
    ]
    assert await memory.recall(BOB, "vegetarian daughter") == []


def test_facts_are_read_from_lenient_json_answers() -> None:
    answer = 'Here you go:\n```json\n["Likes  jazz", "", 3, "Likes jazz", "x"]\n```'
    assert parse_facts(answer, max_facts=5, max_chars=100) == ["Likes jazz", "x"]
    assert parse_facts('{"facts": ["a", "b", "c"]}', max_facts=2, max_chars=100) == ["a", "b"]
    assert parse_facts("[]", max_facts=5, max_chars=100) == []
    assert parse_facts('["' + "y" * 50 + '"]', max_facts=5, max_chars=10) == ["y" * 9 + "…"]
    with pytest.raises(ProviderUnavailable, match="no JSON list"):
        parse_facts("The user likes jazz.", max_facts=5, max_chars=100)
