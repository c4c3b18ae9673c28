"""The web chat page: its WebSocket protocol, and a person using it in a real browser.

The protocol tests drive `/ws` with Starlette's TestClient over a real SQLite
gateway (opened inside the client's event loop by the app's lifespan). The
browser test runs the whole gateway process on a free port and uses the page
with Debian's Chromium through Playwright. Without a browser that test is
skipped on a developer machine and FAILS in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect
from starlette.applications import Starlette
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect

from platforms.browser import launch
from sessiongate.agent.base import Agent, AgentTurn
from sessiongate.clock import SystemClock, system_random
from sessiongate.config import Settings, WebSettings, parse_settings
from sessiongate.gateway.core import Gateway
from sessiongate.gateway.process import GatewayProcess
from sessiongate.ids import IdGenerator
from sessiongate.memory.recall import Recaller
from sessiongate.models import Entry, Session
from sessiongate.platforms import webchat
from sessiongate.platforms.access import TOKEN_COOKIE, Access
from sessiongate.platforms.webchat import WebChat, web_source

# Debian's Chromium; Playwright's own browser downloads need the internet.
CLIENT = "tab-1_abcDEF"
LOOPBACK = Access(token=None, loopback=True)
GUARDED = Access(token="s3cret", loopback=False)


def settings_for(tmp_path: Path, **extra: Any) -> Settings:
    values = {
        "store": f"sqlite:///{tmp_path}/sg.db",
        "server": {"port": 0},
        "hooks_dir": str(tmp_path / "nohooks"),
        **extra,
    }
    return parse_settings(values)


class GatedAgent:
    """Echoes; a message starting with "slow" waits until the test releases it."""

    name = "gated"

    def __init__(self) -> None:
        # Threading events: the test thread and the client's event loop both use them.
        self.started = threading.Event()
        self.release = threading.Event()

    async def reply(self, turn: AgentTurn) -> str:
        if turn.message.startswith("slow"):
            self.started.set()
            while not self.release.is_set():  # noqa: ASYNC110 (a threading.Event, see above)
                await asyncio.sleep(0.01)
        return f"echo: {turn.message}"

    async def summarize(self, session: Session, history: Sequence[Entry]) -> str:
        return "summary"

    async def close(self) -> None:
        return


@dataclass
class Chat:
    """A TestClient over a WebChat, and the gateway process behind it."""

    client: TestClient
    process: GatewayProcess

    def connect(self, client: str = CLIENT, **kwargs: Any) -> WebSocketTestSession:
        return self.client.websocket_connect(f"/ws?client={client}", **kwargs)

    def entries(self, client: str = CLIENT) -> list[Entry]:
        assert self.client.portal is not None
        _, entries = self.client.portal.call(self.process.gateway.conversation, web_source(client))
        return entries


def with_agent(process: GatewayProcess, agent: Agent) -> Gateway:
    """A gateway like `process`'s, answered by `agent`."""
    return Gateway(
        process.lifecycle.engine,
        agent,
        Recaller(process.lifecycle.providers),
        process.hooks,
        settings=process.settings.gateway,
        clock=SystemClock(),
        ids=IdGenerator(SystemClock(), system_random()),
    )


@contextlib.contextmanager
def chat_app(
    tmp_path: Path, *, access: Access = LOOPBACK, agent: Agent | None = None, **extra: Any
) -> Iterator[Chat]:
    """A WebChat on a real SQLite gateway (with its workers), served by a TestClient."""
    settings = settings_for(tmp_path, **extra)
    opened: list[GatewayProcess] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Opened here so the store lives in the TestClient's own event loop.
        process = await GatewayProcess.open(settings)
        gateway = process.gateway if agent is None else with_agent(process, agent)
        app.router.routes.extend(WebChat(gateway, access, WebSettings()).routes())
        opened.append(process)
        stop = asyncio.Event()
        workers = asyncio.create_task(process.lifecycle.run(stop))
        try:
            yield
        finally:
            stop.set()
            await workers
            await process.close()

    with TestClient(Starlette(lifespan=lifespan)) as client:
        yield Chat(client, opened[0])


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Chat]:
    with chat_app(tmp_path) as opened:
        yield opened


def say(ws: WebSocketTestSession, text: str, ref: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "message", "text": text}
    if ref is not None:
        frame["ref"] = ref
    ws.send_json(frame)
    answer: dict[str, Any] = ws.receive_json()
    return answer


def closed(ws: WebSocketTestSession) -> WebSocketDisconnect:
    with pytest.raises(WebSocketDisconnect) as caught:
        ws.receive_json()
    return caught.value


# -- the protocol -------------------------------------------------------------------------


def test_the_page_and_its_assets_are_served(chat: Chat) -> None:
    page = chat.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for testid in ("session-id", "session-state", "message", "send", "new-session"):
        assert f'data-testid="{testid}"' in page.text
    script = chat.client.get("/webchat/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "localStorage" in script.text
    assert chat.client.get("/webchat/style.css").headers["content-type"].startswith("text/css")
    assert chat.client.get("/webchat/secrets.txt").status_code == 404


def test_a_conversation_survives_a_reconnect(chat: Chat) -> None:
    with chat.connect() as ws:
        hello = ws.receive_json()
        assert hello == {"type": "conversation", "client": CLIENT, "session": None, "entries": []}
        reply = say(ws, "hello there", ref="m1")
    assert reply["type"] == "reply"
    assert reply["ref"] == "m1"
    assert reply["reply"].startswith("(offline agent) You said: hello there")
    assert reply["session"]["state"] == "active"
    assert reply["session"]["key"] == f"agent:main:web:dm:{CLIENT}"
    assert (reply["command"], reply["notice"], reply["recalled"]) == (None, False, [])
    with chat.connect() as ws:  # a page reload
        again = ws.receive_json()
    assert again["session"]["id"] == reply["session"]["id"]
    assert [(e["seq"], e["role"]) for e in again["entries"]] == [(1, "user"), (2, "assistant")]
    assert again["entries"][0]["text"] == "hello there"
    assert again["entries"][1]["text"] == reply["reply"]


def test_new_starts_a_session_and_memory_is_recalled_in_it(chat: Chat) -> None:
    with chat.connect() as ws:
        ws.receive_json()
        first = say(ws, "my cat is called Miso")
        new = say(ws, "/new")
        assert new["command"] == "new"
        assert new["session"]["id"] != first["session"]["id"]
        fresh = ws.receive_json()  # after a command, the conversation afresh
        assert fresh["type"] == "conversation"
        assert fresh["session"]["id"] == new["session"]["id"]
        assert fresh["entries"] == []
        # The workers commit the ended session to memory in the background.
        deadline = time.monotonic() + 20
        while True:
            asked = say(ws, "what is my cat called")
            if asked["recalled"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert asked["session"]["id"] == new["session"]["id"]
    assert any("Miso" in hit["text"] for hit in asked["recalled"])
    assert asked["recalled"][0]["session_id"] == first["session"]["id"]
    assert "Miso" in asked["reply"]


BAD_FRAMES = [
    ("binary", b"\x00\x01", "binary_frame"),
    ("not-json", "{nope", "invalid_json"),
    ("not-an-object", "[1, 2]", "invalid_frame"),
    ("unknown-type", '{"type": "shout", "text": "hi"}', "unknown_type"),
    ("no-type", '{"text": "hi"}', "unknown_type"),
    ("no-text", '{"type": "message"}', "invalid_text"),
    ("text-not-a-string", '{"type": "message", "text": 42}', "invalid_text"),
    ("empty", '{"type": "message", "text": "  \\n "}', "empty"),
    ("oversize", '{"type": "message", "text": "' + "x" * 3000 + '"}', "not_accepted"),
    ("nul", '{"type": "message", "text": "a\\u0000b"}', "not_accepted"),
    ("lone-surrogate", '{"type": "message", "text": "\\ud800"}', "not_accepted"),
    ("bad-ref", '{"type": "message", "text": "hi", "ref": 7}', "invalid_ref"),
]


@pytest.mark.parametrize(
    ("frame", "code"), [(f, c) for _, f, c in BAD_FRAMES], ids=[i for i, _, _ in BAD_FRAMES]
)
def test_bad_frames_get_an_error_and_nothing_is_stored(
    tmp_path: Path, frame: str | bytes, code: str
) -> None:
    with chat_app(tmp_path, gateway={"max_message_bytes": 2000}) as chat, chat.connect() as ws:
        ws.receive_json()
        assert say(ws, "before")["type"] == "reply"
        if isinstance(frame, bytes):
            ws.send_bytes(frame)
        else:
            ws.send_text(frame)
        error = ws.receive_json()
        assert error["type"] == "error"
        assert error["code"] == code
        assert len(error["message"]) > 10
        if code == "not_accepted" and "x" * 100 in frame:
            assert "bytes" in error["message"]
        # The socket and the gateway keep serving, and only good messages were stored.
        assert say(ws, "after")["type"] == "reply"
        assert [e.text for e in chat.entries() if e.role == "user"] == ["before", "after"]


def test_an_error_names_the_message_it_refuses(chat: Chat) -> None:
    with chat.connect() as ws:
        ws.receive_json()
        error = say(ws, "   ", ref="m9")
    assert (error["type"], error["code"], error["ref"]) == ("error", "empty", "m9")


@pytest.mark.parametrize(
    "client",
    ["", "a" * 129, "a%2Fb", "a%20b", "..", "caf%C3%A9", None],
    ids=["empty", "too-long", "slash", "space", "dots", "non-ascii", "missing"],
)
def test_bad_client_ids_are_refused_clearly(chat: Chat, client: str | None) -> None:
    path = "/ws" if client is None else f"/ws?client={client}"
    with chat.client.websocket_connect(path) as ws:
        error = ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "invalid_client")
        assert "128" in error["message"]
        assert closed(ws).code == webchat.CLOSE_BAD_CLIENT


def test_the_longest_client_id_is_fine(chat: Chat) -> None:
    with chat.connect("a-_" * 42 + "Zz") as ws:
        assert ws.receive_json()["type"] == "conversation"


def test_a_token_is_required_off_loopback(tmp_path: Path) -> None:
    with chat_app(tmp_path, access=GUARDED) as chat:
        with chat.connect() as ws:
            error = ws.receive_json()
            assert error["code"] == "unauthorized"
            refusal = closed(ws)
        assert refusal.code == 4401
        assert "token" in refusal.reason
        with chat.connect(f"{CLIENT}&token=wrong") as ws:
            assert ws.receive_json()["code"] == "unauthorized"
            assert closed(ws).code == 4401
        with chat.connect(f"{CLIENT}&token=s3cret") as ws:
            assert ws.receive_json()["type"] == "conversation"
        for headers in ({"authorization": "Bearer s3cret"}, {"cookie": f"{TOKEN_COOKIE}=s3cret"}):
            with chat.connect(headers=headers) as ws:
                assert ws.receive_json()["type"] == "conversation", headers
        assert chat.client.get("/").status_code == 401
        page = chat.client.get("/?token=s3cret")
        assert page.status_code == 200
        assert f"{TOKEN_COOKIE}=s3cret" in page.headers["set-cookie"]
        assert "HttpOnly" in page.headers["set-cookie"]


def test_other_sites_cannot_use_an_open_gateway(chat: Chat) -> None:
    with chat.connect(headers={"origin": "https://evil.example"}) as ws:
        assert ws.receive_json()["code"] == "forbidden_origin"
        assert closed(ws).code == webchat.CLOSE_FORBIDDEN
    with chat.connect(headers={"origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "conversation"


def test_a_slow_turn_does_not_stop_the_socket_reading(tmp_path: Path) -> None:
    agent = GatedAgent()
    with chat_app(tmp_path, agent=agent) as chat, chat.connect() as ws:
        ws.receive_json()
        ws.send_json({"type": "message", "text": "slow one", "ref": "a"})
        assert agent.started.wait(10)
        # Heard while the agent is still busy: a bad frame, then a message to queue.
        ws.send_bytes(b"\x00")
        assert ws.receive_json()["code"] == "binary_frame"
        ws.send_json({"type": "message", "text": "two", "ref": "b"})
        ws.send_json({"type": "message", "text": "three", "ref": "c"})
        agent.release.set()
        replies = [ws.receive_json() for _ in range(3)]
    assert [(r["ref"], r["reply"]) for r in replies] == [
        ("a", "echo: slow one"),
        ("b", "echo: two"),
        ("c", "echo: three"),
    ]


def test_stop_interrupts_the_turn_it_is_queued_behind(tmp_path: Path) -> None:
    agent = GatedAgent()
    with chat_app(tmp_path, agent=agent) as chat, chat.connect() as ws:
        ws.receive_json()
        ws.send_json({"type": "message", "text": "slow one", "ref": "a"})
        ws.send_json({"type": "message", "text": "two", "ref": "b"})
        assert agent.started.wait(10)
        stopped = say(ws, "/stop", ref="s")
        assert (stopped["ref"], stopped["command"]) == ("s", "stop")
        assert stopped["reply"] == "Stopped the answer."
        first, second = ws.receive_json(), ws.receive_json()
    assert (first["ref"], first["interrupted"]) == ("a", True)
    assert (second["ref"], second["reply"]) == ("b", "echo: two")


def test_too_many_waiting_messages_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webchat, "MAX_PENDING", 2)
    agent = GatedAgent()
    with chat_app(tmp_path, agent=agent) as chat, chat.connect() as ws:
        ws.receive_json()
        ws.send_json({"type": "message", "text": "slow", "ref": "a"})
        assert agent.started.wait(10)
        for ref in "bc":
            ws.send_json({"type": "message", "text": ref, "ref": ref})
        refused = say(ws, "d", ref="d")
        assert (refused["code"], refused["ref"]) == ("too_many_waiting", "d")
        agent.release.set()
        assert [ws.receive_json()["ref"] for _ in range(3)] == ["a", "b", "c"]
        assert "d" not in [e.text for e in chat.entries()]


# -- a person in a real browser -----------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(settings: Settings, agent: Agent | None = None) -> AsyncIterator[GatewayProcess]:
    """The whole gateway process on a free loopback port (its web page answered by `agent`)."""
    process = await GatewayProcess.open(settings)
    if agent is not None:
        process.platforms = [WebChat(with_agent(process, agent), process.access, WebSettings())]
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(process.serve(stop, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield process
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_message_sent_just_before_the_tab_closes_is_still_answered(
    tmp_path: Path,
) -> None:
    # On a real server: closing a tab does not cancel the turn (TestClient would).
    agent = GatedAgent()
    async with serving(settings_for(tmp_path), agent) as process:
        url = f"ws://127.0.0.1:{process.port}/ws?client={CLIENT}"
        async with connect(url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "message", "text": "slow goodbye"}))
            while not agent.started.is_set():  # noqa: ASYNC110 (a threading.Event)
                await asyncio.sleep(0.01)
        agent.release.set()
        source = web_source(CLIENT)
        for _ in range(200):
            _, entries = await process.gateway.conversation(source)
            if len(entries) == 2:
                break
            await asyncio.sleep(0.05)
        async with connect(url) as ws:
            shown = json.loads(await ws.recv())["entries"]
    assert [e["text"] for e in shown] == ["slow goodbye", "echo: slow goodbye"]


async def send(page: Page, text: str) -> str:
    """Type `text`, send it as a person would, and return the reply that appears."""
    replies = page.locator("#conversation .msg.assistant.current, #conversation .msg.notice")
    before = await replies.count()
    await page.get_by_test_id("message").fill(text)
    await page.get_by_test_id("send").click()
    await expect(replies).to_have_count(before + 1, timeout=10_000)
    return await replies.last.inner_text()


async def test_a_person_chats_reloads_and_memory_follows(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path)) as process, async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 760})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on(
                "console",
                lambda msg: problems.append(msg.text) if msg.type == "error" else None,
            )
            await page.goto(f"http://127.0.0.1:{process.port}/")
            await expect(page.get_by_test_id("status")).to_have_text("connected")
            session_id = page.get_by_test_id("session-id")
            await expect(session_id).to_have_text("none yet")

            reply = await send(page, "my cat is called Miso")
            assert "(offline agent) You said: my cat is called Miso" in reply
            first = (await session_id.inner_text()).strip()
            assert first not in ("", "none yet")
            await expect(page.get_by_test_id("session-state")).to_have_text("active")

            await page.get_by_test_id("new-session").click()
            await expect(session_id).not_to_have_text(first)
            second = (await session_id.inner_text()).strip()
            await expect(page.locator(".divider")).to_contain_text(second)

            # The ended session reaches memory through the background workers.
            for _ in range(20):
                answer = await send(page, "what is my cat called")
                if "Miso" in answer:
                    break
                await asyncio.sleep(0.5)
            assert "Memory recalled from your earlier conversations" in answer
            assert "Miso" in answer
            assert (await session_id.inner_text()).strip() == second
            await page.screenshot(path="/tmp/webchat.png", full_page=True)

            await page.reload()
            await expect(page.get_by_test_id("status")).to_have_text("connected")
            await expect(session_id).to_have_text(second)
            log = page.get_by_test_id("conversation")
            await expect(log.locator(".msg.user .text").last).to_have_text("what is my cat called")
            await expect(log.locator(".msg.assistant").last).to_contain_text("Miso")
            # A reload shows the session the conversation is in now.
            said = await log.locator(".msg.user .text").all_inner_texts()
            assert "my cat is called Miso" not in said
            await page.screenshot(path="/tmp/webchat-reloaded.png", full_page=True)

            # Typed commands work too; /undo takes the last exchange off the page.
            await page.get_by_test_id("message").fill("/undo")
            await page.get_by_test_id("message").press("Enter")
            await expect(log.locator(".msg.notice").last).to_contain_text("Took back 2 entries")
            await expect(log.locator(".msg.ledger")).to_have_count(0)
            assert problems == []
        finally:
            await browser.close()
