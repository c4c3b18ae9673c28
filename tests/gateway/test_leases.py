"""Two gateways sharing one store, as two replicas would: one handles a conversation at a time."""

from __future__ import annotations

import asyncio
import socket
import sys
from datetime import UTC, datetime, timedelta

from gateway.conftest import ALICE, BOB, GatewayFactory, say
from gateway.test_busy import GatedAgent, roles
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import Role


async def test_a_conversation_waits_for_the_replica_handling_it(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    replica = gateway_with
    slow, fast = GatedAgent(), GatedAgent()
    fast.gate.set()
    a = replica(slow, owner="replica-a")
    b = replica(fast, owner="replica-b")
    first = asyncio.create_task(say(a, "one"))
    await slow.started.wait()
    second = asyncio.create_task(say(b, "two"))
    elsewhere = await say(b, "hello", BOB)  # another conversation is not held up
    assert elsewhere.text == "answer to hello"
    await asyncio.sleep(0.2)
    assert fast.seen == ["hello"]  # "two" waits for replica A to finish "one"
    slow.gate.set()
    assert (await first).text == "answer to one"
    assert (await second).text == "answer to two"
    assert [(r, t) for r, t, _ in await roles(process)] == [
        (Role.USER, "one"),
        (Role.ASSISTANT, "answer to one"),
        (Role.USER, "two"),
        (Role.ASSISTANT, "answer to two"),
    ]
    key = process.lifecycle.engine.key_of(ALICE)
    assert await process.store.lease_of(key) is None  # given back after each message


async def test_under_reject_another_replica_refuses_at_once(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    replica = gateway_with
    slow = GatedAgent()
    a = replica(slow, owner="replica-a")
    b = replica(GatedAgent(), owner="replica-b", busy="reject")
    first = asyncio.create_task(say(a, "one"))
    await slow.started.wait()
    refused = await say(b, "two")
    assert refused.notice
    assert "another gateway replica" in refused.text
    slow.gate.set()
    await first
    assert [t for _, t, _ in await roles(process)] == ["one", "answer to one"]


async def test_a_replica_that_lost_the_lease_writes_nothing_more(
    process: GatewayProcess, gateway_with: GatewayFactory
) -> None:
    replica = gateway_with
    slow = GatedAgent()
    a = replica(slow, owner="replica-a", lease_seconds=30)
    first = asyncio.create_task(say(a, "one"))
    await slow.started.wait()
    key = process.lifecycle.engine.key_of(ALICE)
    held = await process.store.lease_of(key)
    assert held is not None
    # Replica B sees A's lease as expired (A stalled past it) and takes the conversation.
    later = held.expires_at + timedelta(seconds=1)
    taken = await process.store.acquire_lease(key, "replica-b", at=later, lease_seconds=30)
    assert taken is not None
    slow.gate.set()
    lost = await first
    assert lost.notice
    assert "taken over by another gateway replica" in lost.text
    # A's message was written while it held the lease; its reply never was.
    assert [t for _, t, _ in await roles(process)] == ["one"]
    assert await process.store.lease_of(key) == taken  # A did not release B's lease


async def test_a_conversation_held_by_a_gone_process_of_this_host_is_taken_at_once(
    process: GatewayProcess,
) -> None:
    ended = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await ended.wait()
    gone = f"{socket.gethostname()}:{ended.pid}:deadbeef"
    key = process.lifecycle.engine.key_of(ALICE)
    now = datetime.now(UTC)
    stale = await process.store.acquire_lease(key, gone, at=now, lease_seconds=600)
    assert stale is not None
    answered = await say(process.gateway, "after the crash")
    assert not answered.notice
    assert (await roles(process))[0][1] == "after the crash"
    assert await process.store.lease_of(key) is None


async def test_a_conversation_held_on_another_host_waits_for_its_lease(
    process: GatewayProcess,
) -> None:
    key = process.lifecycle.engine.key_of(ALICE)
    held = await process.store.acquire_lease(
        key, "another-host:4242:cafe0000", at=datetime.now(UTC), lease_seconds=1.0
    )
    assert held is not None
    answered = await say(process.gateway, "while it is held")
    assert not answered.notice
    entries = await process.store.entries(answered.session.id if answered.session else "")
    # Nothing was written for the conversation before the other host's lease ran out.
    assert entries[0].created_at >= held.expires_at
