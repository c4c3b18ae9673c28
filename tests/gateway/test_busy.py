"""Messages of one conversation in order; the busy policies; /stop; a failing agent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx

from gateway.conftest import ALICE, BOB, GatewayFactory, say, settings_for
from sessiongate.agent.base import AgentTurn
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import Entry, Role, Session, SessionState


class GatedAgent:
    """Answers each turn only when the test opens its gate; records what it saw."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.seen: list[str] = []

    async def reply(self, turn: AgentTurn) -> str:
        self.seen.append(turn.message)
        self.started.set()
        await self.gate.wait()
        return f"answer to {turn.message}"

    async def summarize(self, session: Session, history: Sequence[Entry]) -> str:
        return "summary"

    async def close(self) -> None:
        return None


class BrokenAgent(GatedAgent):
    async def reply(self, turn: AgentTurn) -> str:
        raise RuntimeError("model exploded")


async def roles(process: GatewayProcess) -> list[tuple[Role, str, bool]]:
    session, _ = await process.gateway.conversation(ALICE)
    assert session is not None
    return [
        (e.role, e.text, bool(e.meta.get("interrupted")))
        for e in await process.store.entries(session.id)
    ]


async def test_queue_answers_in_arrival_order(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    agent = GatedAgent()
    gateway = gateway_with(agent, busy="queue")
    first = asyncio.create_task(say(gateway, "one"))
    await agent.started.wait()
    second = asyncio.create_task(say(gateway, "two"))
    other = asyncio.create_task(say(gateway, "elsewhere", BOB))
    await asyncio.sleep(0.05)
    # Another conversation is not held up by this one; this one waits its turn.
    assert agent.seen == ["one", "elsewhere"]
    agent.gate.set()
    replies = await asyncio.gather(first, second, other)
    assert [r.text for r in replies] == ["answer to one", "answer to two", "answer to elsewhere"]
    assert [(r, t) for r, t, _ in await roles(process)] == [
        (Role.USER, "one"),
        (Role.ASSISTANT, "answer to one"),
        (Role.USER, "two"),
        (Role.ASSISTANT, "answer to two"),
    ]


async def test_reject_refuses_a_message_while_busy(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    agent = GatedAgent()
    gateway = gateway_with(agent, busy="reject")
    first = asyncio.create_task(say(gateway, "one"))
    await agent.started.wait()
    refused = await say(gateway, "two")
    assert refused.notice
    assert refused.text.startswith("Busy:")
    agent.gate.set()
    assert (await first).text == "answer to one"
    assert [t for _, t, _ in await roles(process)] == ["one", "answer to one"]


async def test_interrupt_records_the_cut_turn_as_interrupted(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    agent = GatedAgent()
    gateway = gateway_with(agent, busy="interrupt")
    first = asyncio.create_task(say(gateway, "one"))
    await agent.started.wait()
    second = asyncio.create_task(say(gateway, "two"))
    cut = await first
    assert cut.interrupted
    agent.gate.set()
    assert (await second).text == "answer to two"
    entries = await roles(process)
    assert entries[1][0] is Role.ASSISTANT
    assert entries[1][2] is True
    assert [t for _, t, _ in entries][2:] == ["two", "answer to two"]
    # The interrupted answer is not shown as part of the conversation.
    _, shown = await gateway.conversation(ALICE)
    assert [e.text for e in shown] == ["one", "two", "answer to two"]


async def test_stop_interrupts_the_running_answer(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    agent = GatedAgent()
    gateway = gateway_with(agent)
    first = asyncio.create_task(say(gateway, "a long question"))
    await agent.started.wait()
    stopped = await say(gateway, "/stop")
    assert stopped.command == "stop"
    assert stopped.text == "Stopped the answer."
    assert (await first).interrupted
    idle = await say(gateway, "/stop")
    assert idle.text == "Nothing is being answered right now."


async def test_a_failing_agent_keeps_the_message(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    gateway = gateway_with(BrokenAgent())
    out = await say(gateway, "are you there?")
    assert "could not answer" in out.text
    assert "model exploded" in out.text
    entries = await roles(process)
    assert entries[0] == (Role.USER, "are you there?", False)
    assert entries[1][2] is True


async def test_drain_interrupts_turns_left_running(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    agent = GatedAgent()
    gateway = gateway_with(agent)
    first = asyncio.create_task(say(gateway, "slow"))
    await agent.started.wait()
    await gateway.drain(0.05)
    assert (await first).interrupted
    entries = await roles(process)
    assert entries[-1][2] is True


class NulAgent(GatedAgent):
    async def reply(self, turn: AgentTurn) -> str:
        return "half\x00a reply"


async def test_a_reply_that_cannot_be_stored_is_not_sent(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    out = await say(gateway_with(NulAgent()), "hi")
    assert "could not be stored" in out.text
    assert "\x00" not in out.text
    entries = await roles(process)
    assert entries[1][0] is Role.ASSISTANT
    assert entries[1][2] is True


async def test_a_stop_drains_running_turns_within_the_bound(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path, gateway={"drain_seconds": 0.2})
    process = await GatewayProcess.open(settings)
    agent = GatedAgent()
    process.gateway.agent = agent
    stop, started = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(process.serve(stop, started=started))
    await started.wait()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.port}") as client:
        request = asyncio.create_task(
            client.post("/api/v1/messages", json={"chat_id": "c", "text": "slow one"})
        )
        await agent.started.wait()
        stop.set()
        response = await asyncio.wait_for(request, 20)
    await asyncio.wait_for(serving, 20)
    assert response.json()["interrupted"] is True
    reopened = await GatewayProcess.open(settings)
    try:
        [session] = await reopened.store.list_sessions()
        # A stop is not an end: the session is still live, the cut turn recorded as such.
        assert session.state is SessionState.ACTIVE
        entries = await reopened.store.entries(session.id)
        assert [e.meta.get("interrupted", False) for e in entries] == [False, True]
    finally:
        await reopened.close()
