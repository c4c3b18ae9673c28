"""The Telegram platform: python-telegram-bot against a fake Bot API server.

The gateway runs as in production (`GatewayProcess.serve` over a SQLite store);
only the Bot API is fake. Tests enqueue updates as Telegram sends them and check
what the bot sent back and what the store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from platforms.fake_bot_api import (
    BOT_USERNAME,
    STICKER,
    TOKEN,
    Failure,
    FakeBotApi,
    channel_post,
    group,
    private,
    serving,
    topic,
    user,
)
from sessiongate.agent.base import Agent, AgentTurn
from sessiongate.config import Settings, TelegramSettings, parse_settings
from sessiongate.errors import ConfigError
from sessiongate.gateway.core import INTERRUPTED
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import ChatType, Entry, Role, Session, Source
from sessiongate.platforms.splitting import MESSAGE_LIMIT, split_message
from sessiongate.platforms.telegram import ONLY_TEXT, SECRET_HEADER, TelegramPlatform

ALICE = user(1001, "alice", "Alice")
BOB = user(1002, None, "Bob")
MALLORY = user(666, "mallory")
GROUP = -100500
FORUM = -100600
CHANNEL = -100700
SECRET = "s3cret-for_the-webhook"
WEBHOOK_PATH = "/telegram/webhook"


class ScriptedAgent:
    """Echoes, answers some messages with set replies, holds others until released."""

    name = "scripted"

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}

    def started_on(self, message: str) -> asyncio.Event:
        """Set once the agent has begun answering `message`."""
        return self.started.setdefault(message, asyncio.Event())

    async def reply(self, turn: AgentTurn) -> str:
        self.started_on(turn.message).set()
        gate = self.gates.get(turn.message)
        if gate is not None:
            await gate.wait()
        return self.replies.get(turn.message, f"echo: {turn.message}")

    async def summarize(self, session: Session, history: Sequence[Entry]) -> str:
        return "summary"

    async def close(self) -> None:
        return None


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBotApi]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    # Restored after the test; the platform only sets it when it is unset.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    async with serving() as server:
        yield server


def settings(
    fake: FakeBotApi, tmp_path: Path, *, top: dict[str, Any] | None = None, **telegram: Any
) -> Settings:
    values: dict[str, Any] = {
        "base_url": f"{fake.url}/bot",
        "allowed_users": [str(ALICE["id"]), str(BOB["id"])],
        "poll_timeout": 1,
        **telegram,
    }
    return parse_settings(
        {
            "store": f"sqlite:///{tmp_path}/sg.db",
            "server": {"port": 0},
            "hooks_dir": str(tmp_path / "no-hooks"),
            "platforms": {"web": {"enabled": False}, "api": {"enabled": False}, "telegram": values},
            **(top or {}),
        }
    )


@contextlib.asynccontextmanager
async def running(settings: Settings, agent: Agent | None = None) -> AsyncIterator[GatewayProcess]:
    """A gateway process serving (HTTP server and Telegram bot) until the block ends."""
    process = await GatewayProcess.open(settings)
    if agent is not None:
        process.gateway.agent = agent
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(process.serve(stop, started=started))
    ready = asyncio.create_task(started.wait())
    await asyncio.wait([task, ready], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    assert started.is_set(), "the gateway did not start"
    try:
        yield process
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def session_of(process: GatewayProcess, key: str) -> Session:
    session = await process.store.routed_session(key)
    assert session is not None, f"no session routed for {key}"
    return session


async def ledger(process: GatewayProcess, key: str) -> list[tuple[Role, str]]:
    session = await session_of(process, key)
    return [(entry.role, entry.text) for entry in await process.store.entries(session.id)]


# Polling mode.


async def test_a_private_message_is_answered_and_stored(fake: FakeBotApi, tmp_path: Path) -> None:
    async with running(settings(fake, tmp_path)) as process:
        update = private(ALICE, "hello there")
        await fake.enqueue(update)
        [sent] = await fake.wait_sent(1)
        key = "agent:main:telegram:dm:1001"
        session = await session_of(process, key)
        entries = await process.store.entries(session.id)
    assert sent.chat_id == ALICE["id"]
    assert sent.reply_to == update["message"]["message_id"]
    assert sent.message_thread_id is None
    assert "You said: hello there" in sent.text
    assert (entries[0].role, entries[0].text) == (Role.USER, "hello there")
    assert entries[1].role is Role.ASSISTANT
    assert entries[1].text == sent.text
    assert entries[0].platform_message_id == str(update["message"]["message_id"])
    assert (session.chat_type, session.user_id, session.user_name) == (ChatType.DM, "1001", "alice")
    polls = [params for method, params in fake.calls if method == "getUpdates"]
    assert polls
    assert polls[0]["allowed_updates"] == ["message", "channel_post"]
    assert (ALICE["id"], "typing") in fake.actions


async def test_start_shows_the_commands_and_the_menu_lists_them(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    async with running(settings(fake, tmp_path)) as process:
        await fake.enqueue(private(ALICE, "/start"))
        [sent] = await fake.wait_sent(1)
        nothing = await process.store.routed_session("agent:main:telegram:dm:1001")
    assert sent.text.startswith("Commands:")
    assert "/new" in sent.text
    assert nothing is None
    menu = {entry["command"]: entry["description"] for entry in fake.commands}
    assert "new" in menu
    assert "stop" in menu
    assert menu["new"].startswith("end this session")


async def test_group_members_get_a_session_each_and_commands_work(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    async with running(settings(fake, tmp_path)) as process:
        await fake.enqueue(group(GROUP, ALICE, "alice speaking"))
        await fake.enqueue(group(GROUP, BOB, "bob speaking"))
        await fake.wait_sent(2)
        alice_key = f"agent:main:telegram:group:{GROUP}:1001"
        bob_key = f"agent:main:telegram:group:{GROUP}:1002"
        first = await session_of(process, alice_key)
        await fake.enqueue(group(GROUP, ALICE, "/new@otherbot"))  # not for this bot: ignored
        await fake.enqueue(group(GROUP, ALICE, f"/new@{BOT_USERNAME} fresh start"))
        sent = await fake.wait_sent(3)
        second = await session_of(process, alice_key)
        bob = await ledger(process, bob_key)
        bob_session = await session_of(process, bob_key)
        await fake.quiet(0.3)
    assert [s.chat_id for s in sent] == [GROUP] * 3
    assert "alice speaking" in sent[0].text
    assert "bob speaking" in sent[1].text
    assert len(fake.sent) == 3, "the command for another bot got an answer"
    assert second.id != first.id
    assert second.title == "fresh start"
    assert bob == [(Role.USER, "bob speaking"), (Role.ASSISTANT, sent[1].text)]
    assert bob_session.user_name == "Bob"  # no username: the full name


async def test_a_forum_topic_is_one_session_shared_by_its_members(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    async with running(settings(fake, tmp_path)) as process:
        await fake.enqueue(topic(FORUM, 7, ALICE, "topic question"))
        await fake.enqueue(topic(FORUM, 7, BOB, "topic follow-up"))
        await fake.enqueue(topic(FORUM, 8, BOB, "other topic"))
        sent = await fake.wait_sent(3)
        shared = await ledger(process, f"agent:main:telegram:thread:{FORUM}:7")
        other = await session_of(process, f"agent:main:telegram:thread:{FORUM}:8")
    assert [s.message_thread_id for s in sent] == [7, 7, 8]
    assert [text for role, text in shared if role is Role.USER] == [
        "topic question",
        "topic follow-up",
    ]
    assert other.chat_type is ChatType.THREAD
    assert other.thread_id == "8"


async def test_a_long_reply_is_split_at_the_limit(fake: FakeBotApi, tmp_path: Path) -> None:
    agent = ScriptedAgent()
    paragraphs = [f"Paragraph {n}. " + "word " * 190 for n in range(10)]
    long_reply = "\n\n".join(p.strip() for p in paragraphs)
    assert len(long_reply) >= 9_500
    agent.replies["tell me everything"] = long_reply
    async with running(settings(fake, tmp_path), agent) as process:
        update = private(ALICE, "tell me everything")
        await fake.enqueue(update)
        await fake.wait_sent(3)
        await fake.quiet(0.3)
        stored = await ledger(process, "agent:main:telegram:dm:1001")
    texts = fake.texts(ALICE["id"])
    assert len(texts) == 3
    assert all(len(text) <= MESSAGE_LIMIT for text in texts)
    assert "\n\n".join(texts) == long_reply  # cut at paragraph breaks, nothing lost
    assert [s.reply_to for s in fake.sent] == [update["message"]["message_id"], None, None]
    assert stored == [(Role.USER, "tell me everything"), (Role.ASSISTANT, long_reply)]


async def test_a_ten_thousand_character_reply_without_breaks(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    agent = ScriptedAgent()
    agent.replies["wall"] = "x" * 4000 + "😀" * 3000  # astral characters count twice
    async with running(settings(fake, tmp_path), agent):
        await fake.enqueue(private(ALICE, "wall"))
        await fake.wait_sent(3)
        await fake.quiet(0.3)
    texts = fake.texts(ALICE["id"])
    assert "".join(texts) == agent.replies["wall"]
    assert all(len(t.encode("utf-16-le")) // 2 <= MESSAGE_LIMIT for t in texts)


async def test_a_user_not_allowed_is_refused_and_nothing_is_stored(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    async with running(settings(fake, tmp_path)) as process:
        await fake.enqueue(private(MALLORY, "let me in"))
        await fake.enqueue(private(MALLORY, "please"))
        await fake.enqueue(group(GROUP, MALLORY, "/new"))
        await fake.enqueue(private(ALICE, "hi"))
        await fake.wait_sent(3)
        await fake.quiet(0.3)
        refused = await process.store.routed_session("agent:main:telegram:dm:666")
        in_group = await process.store.routed_session(f"agent:main:telegram:group:{GROUP}:666")
    to_mallory = fake.texts(MALLORY["id"])
    assert len(to_mallory) == 1, "a refused user is told once, not at every message"
    assert "not allowed" in to_mallory[0]
    assert "user id 666" in to_mallory[0]
    assert len(fake.texts(GROUP)) == 1
    assert "666" in fake.texts(GROUP)[0]
    assert refused is None
    assert in_group is None
    assert len(fake.texts(ALICE["id"])) == 1


async def test_non_text_gets_a_notice_and_service_messages_nothing(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    async with running(settings(fake, tmp_path)) as process:
        await fake.enqueue(private(ALICE, None, sticker=STICKER))
        await fake.enqueue(group(GROUP, ALICE, None, new_chat_members=[BOB]))
        [sent] = await fake.wait_sent(1)
        await fake.quiet(0.5)
        nothing = await process.store.routed_session("agent:main:telegram:dm:1001")
        await fake.enqueue(private(ALICE, None, photo=[], caption="a caption is text"))
        await fake.wait_sent(2)
        captioned = await ledger(process, "agent:main:telegram:dm:1001")
    assert sent.text == ONLY_TEXT
    assert sent.chat_id == ALICE["id"]
    assert len(fake.texts(GROUP)) == 0
    assert nothing is None
    assert captioned[0] == (Role.USER, "a caption is text")


async def test_a_channel_post_is_a_channel_conversation(fake: FakeBotApi, tmp_path: Path) -> None:
    allowed = [str(CHANNEL)]
    async with running(settings(fake, tmp_path, allowed_users=allowed)) as process:
        await fake.enqueue(channel_post(CHANNEL, "channel news"))
        [sent] = await fake.wait_sent(1)
        source = Source(platform="telegram", chat_id=str(CHANNEL), chat_type=ChatType.CHANNEL)
        session, entries = await process.gateway.conversation(source)
    assert sent.chat_id == CHANNEL
    assert session is not None
    assert session.chat_type is ChatType.CHANNEL
    assert session.key.startswith(f"agent:main:telegram:channel:{CHANNEL}")
    assert entries[0].text == "channel news"


async def test_one_chat_in_order_and_other_chats_meanwhile(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    agent = ScriptedAgent()
    gate = agent.gates["slow"] = asyncio.Event()
    async with running(settings(fake, tmp_path), agent) as process:
        await fake.enqueue(private(ALICE, "slow"))
        await fake.enqueue(private(ALICE, "second"))
        await fake.enqueue(group(GROUP, BOB, "/help"))  # a command reply: not stored
        await fake.enqueue(private(BOB, "fast"))
        await fake.wait_sent(2)
        # Bob's chats were answered while Alice's first message is still being answered.
        assert fake.texts(ALICE["id"]) == []
        gate.set()
        await fake.wait_sent(4)
        stored = await ledger(process, "agent:main:telegram:dm:1001")
    assert fake.texts(BOB["id"]) == ["echo: fast"]
    assert fake.texts(ALICE["id"]) == ["echo: slow", "echo: second"]
    assert [text for _, text in stored] == ["slow", "echo: slow", "second", "echo: second"]


async def test_stop_interrupts_the_answer_being_written(fake: FakeBotApi, tmp_path: Path) -> None:
    agent = ScriptedAgent()
    agent.gates["think hard"] = asyncio.Event()  # never set
    async with running(settings(fake, tmp_path), agent) as process:
        await fake.enqueue(private(ALICE, "think hard"))
        await asyncio.wait_for(agent.started_on("think hard").wait(), 10)
        await fake.enqueue(private(ALICE, "/stop"))
        await fake.wait_sent(2)
        stored = await ledger(process, "agent:main:telegram:dm:1001")
    assert fake.texts(ALICE["id"]) == [INTERRUPTED, "Stopped the answer."]
    assert stored == [(Role.USER, "think hard"), (Role.ASSISTANT, INTERRUPTED)]


async def test_a_stop_sends_the_answer_under_way_before_closing(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    agent = ScriptedAgent()
    agent.gates["endless"] = asyncio.Event()  # never set: the drain interrupts it
    configured = settings(fake, tmp_path, top={"gateway": {"drain_seconds": 0.5}})
    async with running(configured, agent) as process:
        await fake.enqueue(private(ALICE, "endless"))
        await asyncio.wait_for(agent.started_on("endless").wait(), 10)
        session = await session_of(process, "agent:main:telegram:dm:1001")
    # The gateway has stopped: the interrupted answer was still delivered and recorded.
    assert fake.texts(ALICE["id"]) == [INTERRUPTED]
    reopened = await GatewayProcess.open(configured)
    try:
        entries = await reopened.store.entries(session.id)
    finally:
        await reopened.close()
    assert [(e.role, e.text) for e in entries] == [
        (Role.USER, "endless"),
        (Role.ASSISTANT, INTERRUPTED),
    ]


async def test_a_failed_send_is_logged_and_the_bot_carries_on(
    fake: FakeBotApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_sends(Failure(ALICE["id"], 400, "Bad Request: chat not found"))
    fake.fail_sends(Failure(BOB["id"], 429, "Too Many Requests: retry after 1", retry_after=1))
    async with running(settings(fake, tmp_path)) as process:
        await fake.enqueue(private(ALICE, "lost reply"))
        await fake.enqueue(private(BOB, "flood"))
        await fake.wait_sent(1, within=15)  # Bob's, after waiting out the flood limit
        await fake.enqueue(private(ALICE, "second try"))
        await fake.wait_sent(2)
        alice = await session_of(process, "agent:main:telegram:dm:1001")
        stored = await ledger(process, "agent:main:telegram:dm:1001")
    [to_bob] = fake.texts(BOB["id"])
    assert "You said: flood" in to_bob
    assert len(fake.texts(ALICE["id"])) == 1
    assert "second try" in fake.texts(ALICE["id"])[0]
    # The reply that could not be sent is still in the ledger, and the log says where.
    assert [role for role, _ in stored] == [Role.USER, Role.ASSISTANT] * 2
    failures = [r for r in caplog.records if "could not send" in r.getMessage()]
    assert len(failures) == 1
    assert alice.id in failures[0].getMessage()
    assert str(ALICE["id"]) in failures[0].getMessage()
    assert getattr(failures[0], "session_id", alice.id) == alice.id


async def test_the_token_never_reaches_the_logs(
    fake: FakeBotApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(settings(fake, tmp_path)):
        await fake.enqueue(private(ALICE, "hello"))
        await fake.wait_sent(1)
    assert "getUpdates" in caplog.text  # the library did log its calls
    assert "Set Bot API URL: http://127.0.0.1" in caplog.text  # with the token, redacted
    assert "<redacted>" in caplog.text
    assert TOKEN not in caplog.text
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_a_refused_token_is_a_config_error(
    fake: FakeBotApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "999:not-the-token"
    monkeypatch.setenv("WRONG_TOKEN", wrong)
    process = await GatewayProcess.open(settings(fake, tmp_path, enabled=False))
    try:
        telegram = TelegramSettings(token_env="WRONG_TOKEN", base_url=f"{fake.url}/bot")
        platform = TelegramPlatform(process.gateway, telegram)
        with pytest.raises(ConfigError, match="WRONG_TOKEN"):
            await asyncio.wait_for(platform.run(asyncio.Event()), 10)
    finally:
        await process.close()
    assert wrong not in caplog.text


async def test_configuration_mistakes_are_config_errors(
    fake: FakeBotApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SG_TEST_MISSING", raising=False)
    monkeypatch.setenv("SG_TEST_BAD_SECRET", "has spaces")
    process = await GatewayProcess.open(settings(fake, tmp_path, enabled=False))
    try:
        cases = [
            ({"token_env": "SG_TEST_MISSING"}, "SG_TEST_MISSING"),
            ({"mode": "webhook"}, "webhook_url is required"),
            (
                {
                    "mode": "webhook",
                    "webhook_url": "https://x.example",
                    "webhook_secret_env": "SG_TEST_MISSING",
                },
                "SG_TEST_MISSING",
            ),
            (
                {
                    "mode": "webhook",
                    "webhook_url": "https://x.example",
                    "webhook_secret_env": "SG_TEST_BAD_SECRET",
                },
                "1 to 256 characters",
            ),
        ]
        for values, message in cases:
            with pytest.raises(ConfigError, match=message):
                TelegramPlatform(process.gateway, TelegramSettings.model_validate(values))
    finally:
        await process.close()
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        await GatewayProcess.open(settings(fake, tmp_path))
    numbers = parse_settings({"platforms": {"telegram": {"allowed_users": [1001, "1002"]}}})
    assert numbers.platforms.telegram is not None
    assert numbers.platforms.telegram.allowed_users == ("1001", "1002")
    with pytest.raises(ConfigError, match="webhook_path"):
        parse_settings({"platforms": {"telegram": {"webhook_path": "telegram"}}})


# Webhook mode.


def webhook_settings(fake: FakeBotApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SG_TEST_TG_SECRET", SECRET)
    return settings(
        fake,
        tmp_path,
        mode="webhook",
        webhook_url=f"https://bot.example.com{WEBHOOK_PATH}",
        webhook_path=WEBHOOK_PATH,
        webhook_secret_env="SG_TEST_TG_SECRET",
    )


async def test_webhook_mode_registers_and_answers_posted_updates(
    fake: FakeBotApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(webhook_settings(fake, tmp_path, monkeypatch)) as process:
        registered = await fake.wait_call("setWebhook")
        update = {"update_id": fake.new_update_id(), **private(ALICE, "via webhook")}
        url = f"http://127.0.0.1:{process.port}{WEBHOOK_PATH}"
        async with httpx.AsyncClient() as client:
            posted = await client.post(url, json=update, headers={SECRET_HEADER: SECRET})
            assert posted.status_code == 200, posted.text
            [sent] = await fake.wait_sent(1)
            stored = await ledger(process, "agent:main:telegram:dm:1001")
    assert registered["url"] == f"https://bot.example.com{WEBHOOK_PATH}"
    assert registered["secret_token"] == SECRET
    assert registered["allowed_updates"] == ["message", "channel_post"]
    assert sent.reply_to == update["message"]["message_id"]
    assert stored[0] == (Role.USER, "via webhook")
    assert not [method for method, _ in fake.calls if method == "getUpdates"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "needle"),
    [
        ({}, b'{"update_id": 1}', 403, SECRET_HEADER),
        ({SECRET_HEADER: "wrong"}, b'{"update_id": 1}', 403, SECRET_HEADER),
        ({SECRET_HEADER: SECRET}, b"{not json", 400, "not JSON"),
        ({SECRET_HEADER: SECRET}, b"[1, 2]", 400, "update_id"),
        ({SECRET_HEADER: SECRET}, b'{"update_id": "one"}', 400, "update_id"),
        ({SECRET_HEADER: SECRET}, b"[" * 100_000, 400, "not JSON"),
        (
            {SECRET_HEADER: SECRET},
            b'{"update_id": 5, "message": {"message_id": 1}}',
            400,
            "not a Telegram update",
        ),
        ({SECRET_HEADER: SECRET}, b"x" * (1024 * 1024 + 1), 413, "bytes"),
    ],
)
async def test_webhook_refuses_bad_posts(
    fake: FakeBotApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    headers: dict[str, str],
    body: bytes,
    status: int,
    needle: str,
) -> None:
    async with running(webhook_settings(fake, tmp_path, monkeypatch)) as process:
        await fake.wait_call("setWebhook")
        url = f"http://127.0.0.1:{process.port}{WEBHOOK_PATH}"
        async with httpx.AsyncClient() as client:
            answer = await client.post(url, content=body, headers=headers)
            # The bot still works after a bad post.
            update = {"update_id": fake.new_update_id(), **private(ALICE, "still here")}
            good = await client.post(url, json=update, headers={SECRET_HEADER: SECRET})
            await fake.wait_sent(1)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["error"]
    assert good.status_code == 200
    assert len(fake.sent) == 1


async def test_a_secret_mismatch_stores_nothing(
    fake: FakeBotApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(webhook_settings(fake, tmp_path, monkeypatch)) as process:
        await fake.wait_call("setWebhook")
        update = {"update_id": fake.new_update_id(), **private(ALICE, "forged")}
        url = f"http://127.0.0.1:{process.port}{WEBHOOK_PATH}"
        async with httpx.AsyncClient() as client:
            answer = await client.post(url, json=update, headers={SECRET_HEADER: "forged"})
        await fake.quiet(0.3)
        stored = await process.store.routed_session("agent:main:telegram:dm:1001")
    assert answer.status_code == 403
    assert stored is None
    assert fake.sent == []


# Splitting replies.


def test_split_keeps_short_text_and_drops_blank_text() -> None:
    assert split_message("  hello  ") == ["hello"]
    assert split_message(" \n\n ") == []


def test_split_prefers_paragraphs_then_lines_then_spaces() -> None:
    paragraphs = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    assert split_message(paragraphs, limit=100) == ["a" * 60, "b" * 30 + "\n" + "c" * 30]
    lines = "a" * 70 + "\n" + "b" * 70
    assert split_message(lines, limit=100) == ["a" * 70, "b" * 70]
    words = "word " * 50
    pieces = split_message(words, limit=100)
    assert all(len(p) <= 100 and not p.startswith(" ") for p in pieces)
    assert " ".join(pieces).split() == words.split()


def test_split_never_tears_a_character() -> None:
    emoji = "😀" * 100  # 200 UTF-16 units
    pieces = split_message(emoji, limit=51)
    assert "".join(pieces) == emoji
    assert all(len(p.encode("utf-16-le")) // 2 <= 51 for p in pieces)
    accented = "e\u0301" * 60  # e + combining acute accent
    pieces = split_message(accented, limit=51)
    assert "".join(pieces) == accented
    assert all(not p.startswith("\u0301") for p in pieces)
    family = ("👩\u200d👩\u200d👧" + "x") * 20
    pieces = split_message(family, limit=25)
    assert "".join(pieces) == family
    assert all(not p.startswith("\u200d") and not p.endswith("\u200d") for p in pieces)
