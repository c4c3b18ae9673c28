"""The OpenAI-compatible agent through the gateway, against a scripted model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
import uvicorn
from openai import AsyncOpenAI

from gateway.conftest import GatewayFactory, say, settings_for
from sessiongate.agent.openai_agent import OpenAIAgent
from sessiongate.config import OpenAIAgentSettings
from sessiongate.gateway.process import GatewayProcess
from sessiongate.testing.chat_model import FakeChatModel


@pytest.fixture
def model() -> FakeChatModel:
    return FakeChatModel()


@pytest.fixture
async def agent(model: FakeChatModel) -> AsyncIterator[OpenAIAgent]:
    settings = OpenAIAgentSettings(kind="openai", base_url="http://model/v1", model="m-1")
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=model.app()))
    client = AsyncOpenAI(base_url="http://model/v1", api_key="k", http_client=http)
    built = OpenAIAgent(settings, client=client)
    yield built
    await built.close()


async def test_the_model_gets_history_and_recalled_memory(
    process: GatewayProcess, gateway_with: GatewayFactory, agent: OpenAIAgent, model: FakeChatModel
) -> None:
    gateway = gateway_with(agent)
    first = await say(gateway, "my favourite tea is sencha")
    assert first.text == "echo: my favourite tea is sencha"
    await say(gateway, "/new")
    await process.lifecycle.drain()
    answer = await say(gateway, "which tea do I like?")
    assert answer.text == "echo: which tea do I like?"
    sent = model.requests[-1]["messages"]
    assert sent[0]["role"] == "system"
    block = [m["content"] for m in sent if "<memory-context" in str(m.get("content"))]
    assert block
    assert "sencha" in block[0]
    # The memory block is model input only: the stored message is what the user typed.
    assert sent[-1] == {"role": "user", "content": "which tea do I like?"}
    await say(gateway, "and milk?")
    history = [m["content"] for m in model.requests[-1]["messages"] if m["role"] != "system"]
    assert history == ["which tea do I like?", "echo: which tea do I like?", "and milk?"]


async def test_the_model_can_search_memory(
    process: GatewayProcess, gateway_with: GatewayFactory, agent: OpenAIAgent, model: FakeChatModel
) -> None:
    gateway = gateway_with(agent)
    await say(gateway, "the spare key is under the blue pot")
    await say(gateway, "/new")
    await process.lifecycle.drain()
    answer = await say(gateway, "search: spare key")
    assert answer.text.startswith("from memory:")
    assert "blue pot" in answer.text
    assert any(m["role"] == "tool" for m in model.requests[-1]["messages"])


async def test_a_model_outage_keeps_the_message(
    process: GatewayProcess, gateway_with: GatewayFactory, agent: OpenAIAgent, model: FakeChatModel
) -> None:
    model.failing = True
    gateway = gateway_with(agent)
    out = await say(gateway, "hello?")
    assert "could not answer" in out.text
    assert out.session is not None
    [user, reply] = await process.store.entries(out.session.id)
    assert user.text == "hello?"
    assert reply.meta.get("interrupted") is True


async def test_the_configured_openai_agent_talks_to_a_model_server(
    tmp_path: Path, model: FakeChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODEL_KEY", "sk-test")
    server = uvicorn.Server(uvicorn.Config(model.app(), port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has a flag, not an event
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    agent = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "model": "m-2",
        "api_key_env": "FAKE_MODEL_KEY",
    }
    process = await GatewayProcess.open(
        settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path, agent=agent)
    )
    try:
        out = await say(process.gateway, "ping over http")
        assert out.text == "echo: ping over http"
        assert model.requests[-1]["model"] == "m-2"
        status = await say(process.gateway, "/status")
        assert "agent: openai" in status.text
    finally:
        await process.close()
        server.should_exit = True
        await serving
