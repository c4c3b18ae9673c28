"""The gateway SIGKILLed at random moments under load, and restarted, on SQLite.

A scripted load (conversations over the HTTP API with `/new`, `/branch` and
`/compress`, idle expiry in seconds) runs against one `sessiongate run` process
that is killed with SIGKILL several times and started again. Afterwards, checked
from outside the process: every accepted message is in the ledger, ledgers are
dense, every session ended exactly once and was committed up to its last turn,
every `session:start` has exactly one `session:end` (by `event_id`), and there are
no dead letters.

Reduced size in the suite; `SESSIONGATE_KILL_CONVERSATIONS=200
SESSIONGATE_KILL_ROUNDS=20 pytest tests/kill` runs the full size.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import httpx

from sessiongate.store import open_store

CONVERSATIONS = int(os.environ.get("SESSIONGATE_KILL_CONVERSATIONS", "24"))
ROUNDS = int(os.environ.get("SESSIONGATE_KILL_ROUNDS", "5"))
HOOK = """
import json
from pathlib import Path

def handle(event_type, context):
    with Path({log!r}).open("a") as out:
        line = {{"type": event_type, "event_id": context["event_id"],
                 "session_id": context.get("session_id")}}
        out.write(json.dumps(line) + "\\n")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure(tmp_path: Path, port: int) -> Path:
    hook = tmp_path / "hooks" / "recorder"
    hook.mkdir(parents=True)
    (hook / "HOOK.yaml").write_text("name: recorder\nevents: ['session:start', 'session:end']\n")
    (hook / "handler.py").write_text(HOOK.format(log=str(tmp_path / "events.jsonl")))
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            store: sqlite:///{tmp_path}/sg.db
            server: {{host: 127.0.0.1, port: {port}}}
            hooks_dir: {tmp_path / "hooks"}
            session_reset: {{mode: idle, idle_after: 4s}}
            workers: {{lease_seconds: 2, poll_seconds: 0.2}}
            platforms: {{web: {{enabled: false}}}}
            """
        )
    )
    return config


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sessiongate", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            assert proc.poll() is None, "the gateway exited at start"
            try:
                await client.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not start")


class Load:
    """Conversations that talk until told to stop; remembers what was accepted."""

    def __init__(self, port: int, rand: random.Random) -> None:
        self.url = f"http://127.0.0.1:{port}/api/v1/messages"
        self.rand = rand
        self.accepted: list[str] = []
        self.counter = 0

    def text(self, chat: str) -> str:
        roll = self.rand.random()
        if roll < 0.06:
            return "/new"
        if roll < 0.09:
            return "/branch"
        if roll < 0.11:
            return "/compress"
        self.counter += 1
        return f"{chat} message {self.counter}"

    async def talk(self, chat: str, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set():
                text = self.text(chat)
                body = {"chat_id": chat, "user_id": chat, "text": text}
                try:
                    response = await client.post(self.url, json=body)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # the gateway is down: try again later
                    continue
                if response.status_code == 200 and not text.startswith("/"):
                    self.accepted.append(text)
                await asyncio.sleep(self.rand.random() * 0.05)


async def run_load(config: Path, port: int, seed: int) -> list[str]:
    rand = random.Random(seed)
    load = Load(port, rand)
    proc = start(config)
    await wait_ready(port, proc)
    stop = asyncio.Event()
    talkers = [asyncio.create_task(load.talk(f"chat-{n}", stop)) for n in range(CONVERSATIONS)]
    try:
        for _ in range(ROUNDS):
            await asyncio.sleep(0.5 + rand.random() * 1.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc = start(config)
            await wait_ready(port, proc)
        await asyncio.sleep(1)
    finally:
        stop.set()
        await asyncio.gather(*talkers)
    # Let idle expiry end every live session, and the workers finish their work.
    await wait_settled(config.parent / "sg.db")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    return load.accepted


async def wait_settled(db: Path) -> None:
    """Wait until every session is finalized, reading the file while the gateway writes.

    A plain read-only connection: in WAL mode reads never wait for the writer.
    """
    deadline = time.monotonic() + 240
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall()
        conn.close()
        states = {str(state): int(n) for state, n in rows}
        if states and set(states) == {"finalized"}:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"sessions did not all end well in time: {states}")


async def check_store(db: Path, accepted: list[str]) -> None:
    store = await open_store(f"sqlite:///{db}")
    try:
        sessions = await store.list_sessions(limit=100_000)
        stored: Counter[str] = Counter()
        for session in sessions:
            entries = await store.entries(session.id)
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            stored.update(e.text for e in entries if e.role == "user")
            if session.turn_count:
                [cursor] = await store.cursors(session.id)
                assert cursor.committed_seq == session.turn_count, session.id
        missing = [text for text in accepted if stored[text] == 0]
        assert missing == []
        assert await store.dead_letters() == []
    finally:
        await store.close()


def check_events(log: Path) -> None:
    events = {e["event_id"]: e for e in map(json.loads, log.read_text().splitlines())}
    starts = Counter(e["session_id"] for e in events.values() if e["type"] == "session:start")
    ends = Counter(e["session_id"] for e in events.values() if e["type"] == "session:end")
    assert set(starts) == set(ends)
    assert set(ends.values()) == {1}


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = configure(tmp_path, port)
    accepted = asyncio.run(run_load(config, port, seed=20261201))
    assert len(accepted) > CONVERSATIONS  # the load really ran
    asyncio.run(check_store(tmp_path / "sg.db", accepted))
    check_events(tmp_path / "events.jsonl")
