"""One conversation at a time across real replicas: conversation leases and fencing.

Two `sessiongate run` processes share one PostgreSQL database and one
OpenAI-compatible model server (the scripted `FakeChatModel`, slowed down so
turns overlap). Messages of one conversation sent to both replicas at once are
answered one at a time: the ledger never interleaves two turns. A replica
SIGKILLed in the middle of a turn does not hold its conversation up: the other
replica, on the same host, sees that the holder's process is gone and takes the
conversation over at once, long before the dead lease would have expired (a
holder on another host is waited out: `tests/gateway/test_leases.py`).
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from replicas.test_replicas import Replica, free_port
from sessiongate.keys import KeyPolicy, session_key
from sessiongate.models import ChatType, Role, Source
from sessiongate.store import open_store
from sessiongate.testing.chat_model import FakeChatModel

pytestmark = pytest.mark.postgres

# Long, so that taking over at once and waiting the lease out cannot be confused.
LEASE_SECONDS = 20


@pytest.fixture
def model() -> Iterator[tuple[FakeChatModel, int]]:
    """The scripted model, served over HTTP from a thread of the test process."""
    fake = FakeChatModel()
    server = uvicorn.Server(uvicorn.Config(fake.app(), port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the model server did not start"
        time.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield fake, port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def write_config(tmp_path: Path, dsn: str, name: str, port: int, model_port: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            store: {dsn}
            server: {{host: 127.0.0.1, port: {port}}}
            hooks_dir: {tmp_path / "no-hooks"}
            agent: {{kind: openai, base_url: "http://127.0.0.1:{model_port}/v1", model: m}}
            gateway: {{lease_seconds: {LEASE_SECONDS}, lease_wait_seconds: 60}}
            workers: {{lease_seconds: 2, poll_seconds: 0.2}}
            platforms: {{web: {{enabled: false}}}}
            """
        )
    )
    return path


@pytest.fixture
def replicas(
    tmp_path: Path, pg_dsn: str, model: tuple[FakeChatModel, int]
) -> Iterator[list[Replica]]:
    started = []
    for n in range(2):
        port = free_port()
        started.append(Replica(write_config(tmp_path, pg_dsn, f"r{n}", port, model[1]), port))
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


async def post(client: httpx.AsyncClient, replica: Replica, text: str) -> httpx.Response:
    body = {"chat_id": "shared", "user_id": "shared", "text": text}
    return await client.post(f"http://127.0.0.1:{replica.port}/api/v1/messages", json=body)


async def ledger(dsn: str) -> list[tuple[Role, str]]:
    store = await open_store(dsn)
    try:
        [session] = await store.list_sessions(limit=10)
        return [(e.role, e.text) for e in await store.entries(session.id)]
    finally:
        await store.close()


def test_turns_of_one_conversation_never_interleave_across_replicas(
    replicas: list[Replica], model: tuple[FakeChatModel, int], pg_dsn: str
) -> None:
    model[0].delay = 0.3
    texts = [f"message {n}" for n in range(8)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(post(client, replicas[n % 2], text) for n, text in enumerate(texts))
            )

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert [r.json()["reply"] for r in responses] == [f"echo: {t}" for t in texts]
    entries = asyncio.run(ledger(pg_dsn))
    assert len(entries) == 2 * len(texts)
    # Each user message is followed at once by its own answer: one turn at a time.
    for (role, text), (next_role, answer) in zip(entries[::2], entries[1::2], strict=True):
        assert (role, next_role) == (Role.USER, Role.ASSISTANT)
        assert answer == f"echo: {text}"
    assert sorted(text for _, text in entries[::2]) == sorted(texts)


def test_a_killed_replica_of_this_host_is_taken_over_at_once(
    replicas: list[Replica], model: tuple[FakeChatModel, int], pg_dsn: str
) -> None:
    fake = model[0]
    key = session_key(Source("api", "shared", ChatType.DM, user_id="shared"), KeyPolicy())

    async def scenario() -> tuple[float, httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            fake.delay = 60  # the first turn is stuck at the model
            stuck = asyncio.create_task(post(client, replicas[0], "first"))
            while not fake.requests:  # noqa: ASYNC110 - the model server runs in a thread
                await asyncio.sleep(0.05)
            store = await open_store(pg_dsn)
            try:
                held = await store.lease_of(key)
            finally:
                await store.close()
            assert held is not None
            replicas[0].kill()
            with pytest.raises(httpx.TransportError):
                await stuck
            fake.delay = 0
            answered = await post(client, replicas[1], "second")
            return held.expires_at.timestamp(), answered

    expires_at, answered = asyncio.run(scenario())
    assert answered.status_code == 200
    assert answered.json()["reply"] == "echo: second"

    async def check() -> None:
        store = await open_store(pg_dsn)
        try:
            [session] = await store.list_sessions(limit=10)
            entries = await store.entries(session.id)
            assert [(e.role, e.text) for e in entries] == [
                (Role.USER, "first"),  # written ahead by the killed replica, never answered
                (Role.USER, "second"),
                (Role.ASSISTANT, "echo: second"),
            ]
            # The survivor did not wait for the dead replica's lease to run out.
            assert entries[1].created_at.timestamp() < expires_at
            assert await store.lease_of(key) is None
        finally:
            await store.close()

    asyncio.run(check())
