"""Two `sessiongate run` processes on one PostgreSQL database, as a deployment runs them.

Conversations alternate between the replicas, one replica is SIGKILLed halfway,
and idle timers end every live session. Checked from outside the processes: the
ledgers are complete and dense, every session ended exactly once, every end was
committed, and every `session:end` hook event fired for each session (deduplicated
by `event_id`, as at-least-once delivery allows).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from sessiongate.models import EndReason, Role, SessionState
from sessiongate.store import open_store

pytestmark = pytest.mark.postgres

HOOK = """
import json
from pathlib import Path

def handle(event_type, context):
    with Path({log!r}).open("a") as out:
        line = {{"type": event_type, "event_id": context["event_id"],
                 "session_id": context.get("session_id"), "pid": __import__("os").getpid()}}
        out.write(json.dumps(line) + "\\n")
"""
CONVERSATIONS = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, dsn: str, name: str, port: int) -> Path:
    hooks = tmp_path / "hooks" / "recorder"
    if not hooks.exists():
        hooks.mkdir(parents=True)
        (hooks / "HOOK.yaml").write_text("name: recorder\nevents: ['session:*']\n")
        (hooks / "handler.py").write_text(HOOK.format(log=str(tmp_path / "events.jsonl")))
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            store: {dsn}
            server: {{host: 127.0.0.1, port: {port}}}
            hooks_dir: {tmp_path / "hooks"}
            session_reset: {{mode: idle, idle_after: 3s}}
            workers: {{lease_seconds: 2, poll_seconds: 0.2}}
            platforms: {{web: {{enabled: false}}}}
            """
        )
    )
    return path


class Replica:
    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessiongate", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[0]
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the replica did not start")

    def say(self, chat: str, text: str) -> dict[str, object]:
        body = {"chat_id": chat, "user_id": chat, "text": text}
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/api/v1/messages", json=body, timeout=30
        )
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()
        return data

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.communicate(timeout=60)


def test_two_replicas_share_the_work_and_survive_a_kill(tmp_path: Path, pg_dsn: str) -> None:
    ports = free_port(), free_port()
    replicas = [Replica(write_config(tmp_path, pg_dsn, f"r{i}", p), p) for i, p in enumerate(ports)]
    try:
        for replica in replicas:
            replica.wait_ready()
        chats = [f"chat-{n}" for n in range(CONVERSATIONS)]
        for turn in range(3):
            for n, chat in enumerate(chats):
                replicas[(n + turn) % 2].say(chat, f"{chat} says {turn}")
        for n, chat in enumerate(chats[: CONVERSATIONS // 2]):
            replicas[n % 2].say(chat, "/new")
        # Half of the ends' consumers may still be queued on the replica that dies.
        replicas[0].kill()
        for chat in chats:
            replicas[1].say(chat, f"{chat} after the kill")
        asyncio.run(wait_all_finalized(pg_dsn, expected=CONVERSATIONS + CONVERSATIONS // 2))
    finally:
        for replica in replicas:
            if replica.proc.poll() is None:
                replica.stop()
    asyncio.run(check_store(pg_dsn))
    check_events(tmp_path / "events.jsonl")


async def wait_all_finalized(dsn: str, *, expected: int) -> None:
    store = await open_store(dsn)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sessions = await store.list_sessions(limit=1000)
            done = [s for s in sessions if s.state is SessionState.FINALIZED]
            if len(sessions) == expected and len(done) == expected:
                return
            await asyncio.sleep(0.5)
        states = Counter(str(s.state) for s in await store.list_sessions(limit=1000))
        raise AssertionError(f"not every session was finalized in time: {dict(states)}")
    finally:
        await store.close()


async def check_store(dsn: str) -> None:
    store = await open_store(dsn)
    try:
        sessions = await store.list_sessions(limit=1000)
        reasons = Counter(s.end_reason for s in sessions)
        assert reasons == {EndReason.NEW: CONVERSATIONS // 2, EndReason.IDLE: CONVERSATIONS}
        for session in sessions:
            entries = await store.entries(session.id)
            # Dense seqs, every user turn answered, nothing doubled.
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            roles = [e.role for e in entries]
            assert roles == [Role.USER, Role.ASSISTANT] * (len(entries) // 2)
            [cursor] = await store.cursors(session.id)
            assert cursor.committed_seq == session.turn_count == len(entries)
        assert await store.dead_letters() == []
    finally:
        await store.close()


def check_events(log: Path) -> None:
    events = [json.loads(line) for line in log.read_text().splitlines()]
    unique = {e["event_id"]: e for e in events}.values()
    starts = Counter(e["session_id"] for e in unique if e["type"] == "session:start")
    ends = Counter(e["session_id"] for e in unique if e["type"] == "session:end")
    assert set(starts) == set(ends)
    assert len(ends) == CONVERSATIONS + CONVERSATIONS // 2
    assert set(ends.values()) == {1}
    # Both replicas delivered events: the work was shared.
    assert len({e["pid"] for e in events}) == 2
