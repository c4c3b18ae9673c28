"""The HTTP APIs as their clients use them: a bridge posting JSON, an OpenAI client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.conftest import settings_for
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import Role
from sessiongate.testing.serving import serving


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway serving on a free loopback port."""
    async with serving(settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path)) as process:
        yield process


def base(process: GatewayProcess) -> str:
    return f"http://127.0.0.1:{process.port}"


async def test_a_bridge_posts_messages_and_gets_the_session(served: GatewayProcess) -> None:
    body = {
        "platform": "matrix",
        "chat_id": "room1",
        "chat_type": "group",
        "user_id": "u1",
        "user_name": "Una",
        "text": "hello from matrix",
    }
    async with httpx.AsyncClient(base_url=base(served)) as client:
        first = await client.post("/api/v1/messages", json=body)
        assert first.status_code == 200, first.text
        data = first.json()
        assert data["session_key"] == "agent:main:matrix:group:room1:u1"
        assert "offline agent" in data["reply"]
        new = await client.post("/api/v1/messages", json={**body, "text": "/new"})
        assert new.json()["command"] == "new"
        assert new.json()["session_id"] != data["session_id"]
    entries = await served.store.entries(data["session_id"])
    assert [e.role for e in entries] == [Role.USER, Role.ASSISTANT]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"chat_id": "c"}', "text"),
        (b'{"chat_id": "c", "text": "hi", "colour": "red"}', "colour"),
        (b'{"chat_id": "c", "text": "hi", "chat_type": "salon"}', "chat_type"),
        (b'{"chat_id": "c", "text": ""}', "empty"),
    ],
    ids=["malformed", "missing-text", "unknown-key", "bad-chat-type", "empty"],
)
async def test_bad_requests_are_refused_clearly(
    served: GatewayProcess, content: bytes, needle: str
) -> None:
    async with httpx.AsyncClient(base_url=base(served)) as client:
        response = await client.post(
            "/api/v1/messages", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code in (400, 422)
        assert (
            needle in response.json()["error" if response.status_code == 400 else "reply"].__str__()
        )
        # The gateway keeps serving.
        ok = await client.post("/api/v1/messages", json={"chat_id": "c", "text": "still there?"})
        assert ok.status_code == 200
    sessions = await served.store.list_sessions()
    assert len(sessions) == 1


async def test_unsafe_ids_are_stored_safely(served: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=base(served)) as client:
        response = await client.post(
            "/api/v1/messages", json={"chat_id": "../../etc/passwd", "text": "hi"}
        )
    assert response.status_code == 200
    key = response.json()["session_key"]
    assert "/" not in key
    assert ".." not in key
    assert "\\" not in key
    [session] = await served.store.list_sessions()
    assert session.chat_id == "../../etc/passwd"


async def test_an_openai_client_talks_to_the_gateway(served: GatewayProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base(served)}/v1", api_key="unused")
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["sessiongate"]
        reply = await client.chat.completions.create(
            model="sessiongate",
            messages=[{"role": "user", "content": "remember the blue door"}],
            extra_headers={"X-Session-Key": "door-chat"},
        )
        assert "remember the blue door" in (reply.choices[0].message.content or "")
        stream = await client.chat.completions.create(
            model="sessiongate",
            messages=[{"role": "user", "content": "and now streamed"}],
            user="door-chat",
            stream=True,
        )
        chunks = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "and now streamed" in "".join(chunks)
        with pytest.raises(openai.BadRequestError, match="X-Session-Key"):
            await client.chat.completions.create(
                model="sessiongate", messages=[{"role": "user", "content": "who am I?"}]
            )
    finally:
        await client.close()
    [session] = await served.store.list_sessions()
    assert session.platform == "openai"
    assert session.chat_id == "door-chat"
    assert session.turn_count == 4


async def test_a_token_is_required_off_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_TEST_TOKEN", "s3cret")
    settings = settings_for(
        f"sqlite:///{tmp_path}/sg.db",
        tmp_path,
        server={"host": "127.0.0.1", "port": 0, "token_env": "SG_TEST_TOKEN"},
    )
    process = await GatewayProcess.open(settings)
    transport = httpx.ASGITransport(app=process.app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = {"chat_id": "c", "text": "let me in"}
            refused = await client.post("/api/v1/messages", json=body)
            assert refused.status_code == 401
            assert await process.store.list_sessions() == []
            allowed = await client.post(
                "/api/v1/messages", json=body, headers={"Authorization": "Bearer s3cret"}
            )
            assert allowed.status_code == 200
    finally:
        await process.close()


async def test_a_public_bind_without_a_token_is_refused_at_start(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path, server={"host": "0.0.0.0"})
    with pytest.raises(Exception, match="token"):
        await GatewayProcess.open(settings)


async def test_a_ten_megabyte_message_is_refused_and_the_gateway_keeps_serving(
    served: GatewayProcess,
) -> None:
    async with httpx.AsyncClient(base_url=base(served), timeout=60) as client:
        huge = await client.post(
            "/api/v1/messages", json={"chat_id": "c", "text": "x" * (10 * 1024 * 1024)}
        )
        assert huge.status_code == 422
        assert "over the maximum" in huge.json()["reply"]
        ok = await client.post("/api/v1/messages", json={"chat_id": "c", "text": "small"})
        assert ok.status_code == 200
    [session] = await served.store.list_sessions()
    first, *_ = await served.store.entries(session.id)
    assert first.text == "small"


async def test_startup_announces_the_chat_platforms_only(tmp_path: Path) -> None:
    seen: list[object] = []

    class Recorder:
        def on_event(self, event_type: str, payload: dict[str, object]) -> None:
            if event_type == "gateway:startup":
                seen.append(payload["platforms"])

    settings = settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path, platforms={})
    process = await GatewayProcess.open(settings)
    process.hooks.register(Recorder(), name="recorder")
    stop, started = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(process.serve(stop, started=started))
    await asyncio.wait_for(started.wait(), 30)
    async with httpx.AsyncClient(base_url=base(process)) as client:
        assert (await client.get("/metrics")).status_code == 200
    stop.set()
    await asyncio.wait_for(serving, 60)
    assert seen == [["api", "web"]]
